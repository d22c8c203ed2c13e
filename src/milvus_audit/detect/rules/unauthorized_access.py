"""unauthorized_access: repeated permission denials; any denied RBAC call."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from milvus_audit.detect.rules.base import SIGMA_PRINCIPAL, Alert, Observation, Param, Rule
from milvus_audit.detect.rules.sigmaform import AUDIT, SERVER, correlation, event_rule
from milvus_audit.model.catalog import Category, Operation
from milvus_audit.semconv import CATEGORY, DB_OPERATION_NAME, FAILURE_REASON, FailureReason


class UnauthorizedAccess(Rule):
    id = "unauthorized_access"
    severity = "medium"
    attack = ("T1078", "T1069")
    description = "Repeated permission denials for one principal; any denial on an RBAC call is high."
    params = {"threshold": Param(3, positive=True), "window_s": Param(60, positive=True)}
    failures = frozenset({FailureReason.PERMISSION_DENIED})

    __slots__ = ("_denied",)

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._denied = self.counted()

    def observe(self, observation: Observation, principal: str, operation: Operation,
                alerts: list[Alert]) -> None:
        if operation.category is Category.RBAC:  # alone, and not counted in the window
            settings = self.settings_for(principal)
            if settings is not None:
                name = observation.attributes.get(DB_OPERATION_NAME)
                self.fire(alerts, settings, observation, principal,
                          f"{principal} was refused the RBAC call {name}", 1, 1,
                          settings.params["window_s"], [observation.event_id], severity="high",
                          cooldown_key=f"{principal}\x00rbac")
            return
        self.windowed(self._denied, principal, observation, alerts,
                      "{count} permission denials for {principal} within {window} s")

    @classmethod
    def sigma(cls, params: Mapping[str, float]) -> list[dict[str, Any]]:
        rbac = {CATEGORY: Category.RBAC.value}
        rules: list[dict[str, Any]] = []
        # The audited clients' records, then the server's access log (any client, keyed by user).
        for stream, prefix, seen in ((AUDIT, "milvus_", ""), (SERVER, "milvus_server_", ", seen by the server")):
            denied = {**stream, FAILURE_REASON: FailureReason.PERMISSION_DENIED}
            base = f"{prefix}permission_denied"
            rules += [
                event_rule(cls.info, base, f"Milvus permission denied{seen}",
                           "The server refused a call for a missing privilege (RBAC calls have a rule of their own).",
                           {"selection": denied, "rbac": rbac, "condition": "selection and not rbac"},
                           ["An application probing its own privileges at start-up"], level="low"),
                correlation(cls.info, f"{prefix}unauthorized_access", f"Milvus repeated permission denials{seen}",
                            "event_count", base, [SIGMA_PRINCIPAL], params["window_s"], params["threshold"]),
                event_rule(cls.info, f"{prefix}rbac_permission_denied", f"Milvus RBAC call refused{seen}",
                           "A principal tried to change users, roles or privileges without the right to.",
                           {"selection": {**denied, **rbac}, "condition": "selection"},
                           ["An administrator working under the wrong account"], level="high"),
            ]
        return rules
