"""slow_query: a read slower than an absolute threshold, or than k times its collection's learned p99."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from milvus_audit.detect.rules.base import Alert, Observation, Param, Rule
from milvus_audit.detect.rules.sigmaform import AUDIT, event_rule
from milvus_audit.detect.windows import Baseline
from milvus_audit.model.catalog import Category, Operation
from milvus_audit.semconv import CATEGORY, DB_COLLECTION_NAME, DB_OPERATION_NAME, DURATION_MS, OUTCOME, SUCCESS


class SlowQuery(Rule):
    id = "slow_query"
    severity = "low"
    attack = ("T1499.003",)
    description = ("A read slower than an absolute threshold, or than k times the learned p99 of its "
                   "collection.")
    params = {"absolute_ms": Param(2000), "k": Param(3), "min_samples": Param(50), "min_ms": Param(100)}

    __slots__ = ("_latency",)

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._latency = self.bounded(Baseline)  # per collection

    @classmethod
    def observes_success(cls, operation: Operation) -> bool:
        return operation.category is Category.DATA_READ

    def observe(self, observation: Observation, principal: str, operation: Operation,
                alerts: list[Alert]) -> None:
        attributes = observation.attributes
        duration = attributes.get(DURATION_MS)
        collection = attributes.get(DB_COLLECTION_NAME)
        settings = self.settings_for(principal)
        if settings is None or not isinstance(duration, (int, float)):
            return
        params = settings.for_collection(collection)
        baseline: Baseline = self._latency.get(str(collection))
        limit = params["absolute_ms"]
        if baseline.samples >= params["min_samples"]:
            # relative to the learned p99, but never below min_ms: jitter on fast reads is noise
            limit = min(limit, max(params["k"] * baseline.p99(), params["min_ms"]))
        self.track(principal, duration / limit if limit else 0.0)
        if duration > limit:
            self.fire(alerts, settings, observation, principal,
                      f"{attributes.get(DB_OPERATION_NAME)} on {collection} took {duration:.0f} ms "
                      f"(limit {limit:.0f} ms)", duration, limit, 0, [observation.event_id],
                      collection=str(collection) if collection else None)
        baseline.update(float(duration))

    @classmethod
    def sigma(cls, params: Mapping[str, float]) -> list[dict[str, Any]]:
        return [event_rule(cls.info, "milvus_slow_read", "Milvus slow read",
                           "A read slower than the absolute threshold.",
                           {"selection": {**AUDIT, CATEGORY: Category.DATA_READ.value, OUTCOME: SUCCESS,
                                          f"{DURATION_MS}|gt": int(params["absolute_ms"])},
                            "condition": "selection"},
                           ["Cold collections after a restart", "Large batch analytics"])]
