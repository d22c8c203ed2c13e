"""resource_exhaustion: repeated resource-exhausted, rate-limit or memory failures."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from milvus_audit.detect.rules.base import SIGMA_PRINCIPAL, Alert, Observation, Param, Rule
from milvus_audit.detect.rules.sigmaform import AUDIT, correlation, event_rule
from milvus_audit.model.catalog import Operation
from milvus_audit.semconv import FAILURE_REASON, FailureReason

RESOURCE_EXHAUSTED = "milvus_resource_exhausted"


class ResourceExhaustion(Rule):
    id = "resource_exhaustion"
    severity = "medium"
    attack = ("T1499", "T1496")
    description = "Repeated resource-exhausted, rate-limit or memory failures."
    params = {"threshold": Param(3, positive=True), "window_s": Param(60, positive=True)}
    failures = frozenset({FailureReason.RESOURCE_EXHAUSTED})

    __slots__ = ("_exhausted",)

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._exhausted = self.counted()

    def observe(self, observation: Observation, principal: str, operation: Operation,
                alerts: list[Alert]) -> None:
        self.windowed(self._exhausted, principal, observation, alerts,
                      "{count} resource-exhausted failures for {principal} within {window} s")

    @classmethod
    def sigma(cls, params: Mapping[str, float]) -> list[dict[str, Any]]:
        return [
            event_rule(cls.info, RESOURCE_EXHAUSTED, "Milvus resource exhausted",
                       "The server refused a call for rate limits, quotas or memory.",
                       {"selection": {**AUDIT, FAILURE_REASON: FailureReason.RESOURCE_EXHAUSTED},
                        "condition": "selection"},
                       ["Load tests", "Undersized clusters during traffic peaks"], level="low"),
            correlation(cls.info, "milvus_resource_exhaustion", "Milvus repeated resource exhaustion", "event_count",
                        RESOURCE_EXHAUSTED, [SIGMA_PRINCIPAL], params["window_s"], params["threshold"]),
        ]
