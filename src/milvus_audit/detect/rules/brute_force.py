"""brute_force: repeated authentication failures for one account."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from milvus_audit.detect.rules.base import SIGMA_PRINCIPAL, Alert, Observation, Param, Rule, account_of
from milvus_audit.detect.rules.sigmaform import AUDIT, SERVER, correlation, event_rule
from milvus_audit.model.catalog import Operation
from milvus_audit.semconv import FAILURE_REASON, USER_NAME, FailureReason

AUTHENTICATION_FAILURE = "milvus_authentication_failure"  # the Sigma base rules (password_spray uses them too)
SERVER_AUTHENTICATION_FAILURE = "milvus_server_authentication_failure"


class BruteForce(Rule):
    id = "brute_force"
    severity = "high"
    attack = ("T1110", "T1110.001")
    description = "Repeated authentication failures for one principal."
    params = {"threshold": Param(5, positive=True), "window_s": Param(60, positive=True)}
    failures = frozenset({FailureReason.AUTHENTICATION})

    __slots__ = ("_failures",)

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._failures = self.counted()

    def observe(self, observation: Observation, principal: str, operation: Operation,
                alerts: list[Alert]) -> None:
        # The account the login was for: `enduser.id` says whom the application served, not who logged in.
        self.windowed(self._failures, account_of(observation.attributes), observation, alerts,
                      "{count} authentication failures for {principal} within {window} s")

    @classmethod
    def sigma(cls, params: Mapping[str, float]) -> list[dict[str, Any]]:
        return [
            event_rule(cls.info, AUTHENTICATION_FAILURE, "Milvus authentication failure",
                       "A connection or call to Milvus was rejected for bad or missing credentials.",
                       {"selection": {**AUDIT, FAILURE_REASON: FailureReason.AUTHENTICATION},
                        "condition": "selection"},
                       ["A service deployed with a stale password", "Password rotation in progress"], level="low"),
            correlation(cls.info, "milvus_brute_force", "Milvus brute force against one account", "event_count",
                        AUTHENTICATION_FAILURE, [SIGMA_PRINCIPAL], params["window_s"], params["threshold"]),
            # The server's view: every wrong password the server refused, from any client (a bare
            # SDK, curl, Attu), keyed by the user name the client claimed.
            event_rule(cls.info, SERVER_AUTHENTICATION_FAILURE, "Milvus server refused a login",
                       "The Milvus access log shows a connection or call rejected for bad or missing credentials.",
                       {"selection": {**SERVER, FAILURE_REASON: FailureReason.AUTHENTICATION},
                        "condition": "selection"},
                       ["A service deployed with a stale password", "Password rotation in progress"], level="low"),
            correlation(cls.info, "milvus_server_brute_force", "Milvus brute force against one account, "
                        "seen by the server", "event_count", SERVER_AUTHENTICATION_FAILURE, [USER_NAME],
                        params["window_s"], params["threshold"]),
        ]
