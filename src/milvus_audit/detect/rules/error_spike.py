"""error_spike: the failure rate in a window far above its learned (EWMA) baseline."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from milvus_audit.detect.rules.base import Alert, Observation, Param, Rule
from milvus_audit.detect.rules.sigmaform import AUDIT, correlation, event_rule
from milvus_audit.detect.windows import MAX_CONTRIBUTING
from milvus_audit.model.catalog import Operation
from milvus_audit.semconv import FAILURE, FAILURE_REASON, OUTCOME

FAILED_CALL = "milvus_failed_call"
SERVICE_NAME = "service.name"  # a resource attribute: one engine per process, one series per service in a SIEM


class ErrorSpike(Rule):
    id = "error_spike"
    severity = "medium"
    attack = ("T1499",)
    description = "Failure rate in a window far above its learned (EWMA) baseline."
    params = {"factor": Param(3, positive=True), "min_failures": Param(10, positive=True),
              "window_s": Param(60, positive=True), "alpha": Param(0.3, at_most=1)}
    every_event = True

    __slots__ = ("_baseline", "_bucket", "_count", "_events")

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._bucket = -1
        self._count = 0.0
        self._baseline: float | None = None
        self._events: list[str] = []

    def observe(self, observation: Observation, principal: str, operation: Operation,
                alerts: list[Alert]) -> None:
        settings = self.settings_for("*")
        if settings is None:
            return
        window = settings.params["window_s"]
        bucket = int(observation.timestamp_s // window)  # tumbling windows
        fleet = self.alerting.fleet
        if bucket != self._bucket:
            if self._bucket >= 0:
                # Close the finished windows (empty ones count as zero failures).
                alpha = settings.params["alpha"]
                if fleet is not None:  # the fleet's failures of the window that ended (as last synced)
                    self._count += fleet.others_sum((self.id, "*"), self._bucket, 1)
                for _ in range(min(bucket - self._bucket, 10)):
                    count, self._count = self._count, 0.0
                    base = self._baseline
                    self._baseline = count if base is None else base + alpha * (count - base)
            self._bucket = bucket
            self._count = 0.0
            self._events = []
        if observation.attributes.get(FAILURE_REASON) is None:
            return
        self._count += 1
        self._events.append(observation.event_id)
        del self._events[:-MAX_CONTRIBUTING]
        others = 0.0
        if fleet is not None:  # shared state: the other processes' failures in this window, as last synced
            others = fleet.count(self.id, "*", observation.timestamp_s, 1.0, window, 1,
                                 recheck=lambda alerts: self.recheck(observation, alerts))
        self._judge(settings, observation, alerts, self._count + others)

    def recheck(self, observation: Observation, alerts: list[Alert]) -> None:
        """After a sync (shared state): this window's local count plus the fleet's, judged again."""
        settings = self.settings_for("*")
        fleet = self.alerting.fleet
        if settings is None or fleet is None:
            return
        if int(observation.timestamp_s // settings.params["window_s"]) != self._bucket:
            return
        self._judge(settings, observation, alerts, self._count + fleet.others_sum((self.id, "*"), self._bucket, 1))

    def _judge(self, settings: Any, observation: Observation, alerts: list[Alert], count: float) -> None:
        window = settings.params["window_s"]
        baseline = self._baseline or 0.0
        threshold = max(settings.params["min_failures"], settings.params["factor"] * baseline)
        self.track("*", count / threshold)
        if count >= threshold:
            self.fire(alerts, settings, observation, "*",
                      f"{int(count)} failures within {int(window)} s against a baseline of "
                      f"{baseline:.1f}", count, threshold, window, self._events)

    @classmethod
    def sigma(cls, params: Mapping[str, float]) -> list[dict[str, Any]]:
        return [
            event_rule(cls.info, FAILED_CALL, "Milvus call failed",
                       "Any failed Milvus call (base of the error spike correlation).",
                       {"selection": {**AUDIT, OUTCOME: FAILURE}, "condition": "selection"},
                       ["Deployments and outages"], level="informational"),
            correlation(cls.info, "milvus_error_spike", "Milvus error spike", "event_count", FAILED_CALL,
                        [SERVICE_NAME], params["window_s"], params["min_failures"],
                        falsepositives=["A Milvus outage; the in-process rule also compares with a learned baseline"]),
        ]
