"""unusual_query: a request shape far above the principal's baseline, or a collection it never read."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from milvus_audit.detect.rules.base import Alert, Observation, Param, Rule
from milvus_audit.detect.rules.sigmaform import AUDIT, event_rule
from milvus_audit.detect.windows import Baseline
from milvus_audit.model.catalog import Category, Operation
from milvus_audit.semconv import (
    CATEGORY,
    DB_COLLECTION_NAME,
    DB_MILVUS_LIMIT,
    DB_MILVUS_NQ,
    DB_RESPONSE_RETURNED_ROWS,
    OUTCOME,
    SUCCESS,
)

# attribute -> the parameter that is its absolute floor
SHAPE_FLOORS = ((DB_MILVUS_LIMIT, "limit_floor"), (DB_MILVUS_NQ, "nq_floor"),
                (DB_RESPONSE_RETURNED_ROWS, "rows_floor"))


class _History:
    """What the rule learns of a principal: since when, how much, which collections."""

    __slots__ = ("collections", "events", "first")

    def __init__(self) -> None:
        self.first: float | None = None
        self.events = 0
        self.collections: set[str] = set()


class UnusualQuery(Rule):
    id = "unusual_query"
    severity = "medium"
    attack = ("T1213",)
    description = ("limit/top_k, nq or returned rows far above the principal's baseline on a collection, or a "
                   "collection the principal never touched after its learning period.")
    params = {"factor": Param(10, positive=True), "limit_floor": Param(1000), "nq_floor": Param(100),
              "rows_floor": Param(1000), "min_samples": Param(20), "learning_s": Param(3600),
              "learning_events": Param(50)}

    __slots__ = ("_principals", "_shapes")

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._shapes = self.bounded(dict)  # principal\0collection -> {attribute: Baseline}
        self._principals = self.bounded(_History)

    @classmethod
    def observes_success(cls, operation: Operation) -> bool:
        return operation.category is Category.DATA_READ

    def observe(self, observation: Observation, principal: str, operation: Operation,
                alerts: list[Alert]) -> None:
        attributes = observation.attributes
        settings = self.settings_for(principal)
        collection = attributes.get(DB_COLLECTION_NAME)
        if settings is None or not collection:
            return
        params = settings.for_collection(collection)
        now = observation.timestamp_s
        history: _History = self._principals.get(principal)
        if history.first is None:
            history.first = now
        history.events += 1
        if collection not in history.collections:
            if now - history.first >= params["learning_s"] and history.events > params["learning_events"]:
                self.fire(alerts, settings, observation, principal,
                          f"{principal} read collection {collection}, which it never touched before",
                          1, 1, 0, [observation.event_id], collection=str(collection),
                          cooldown_key=f"{principal}\x00{collection}\x00new")
            if len(history.collections) < 1024:
                history.collections.add(str(collection))
        shapes: dict[str, Baseline] = self._shapes.get(f"{principal}\x00{collection}")
        for attribute, floor_param in SHAPE_FLOORS:
            value = attributes.get(attribute)
            if value is None or value.__class__ is bool:
                continue
            baseline = shapes.get(attribute)
            if baseline is None:
                baseline = shapes[attribute] = Baseline()
            if baseline.samples >= params["min_samples"]:
                limit = max(params[floor_param], params["factor"] * max(baseline.mean, 1.0))
                self.track(principal, value / limit)
                if value > limit:
                    self.fire(alerts, settings, observation, principal,
                              f"{principal} asked {attribute}={value} on {collection}, usually "
                              f"{baseline.mean:.0f}", value, limit, 0, [observation.event_id],
                              collection=str(collection), cooldown_key=f"{principal}\x00{collection}")
            baseline.update(float(value))

    @classmethod
    def sigma(cls, params: Mapping[str, float]) -> list[dict[str, Any]]:
        # Sigma has the absolute floors only: the baselines are learned per principal in the engine.
        read = {**AUDIT, CATEGORY: Category.DATA_READ.value, OUTCOME: SUCCESS}
        detection: dict[str, Any] = {
            key: {**read, f"{attribute}|gt": int(params[floor])}
            for key, (attribute, floor) in zip(("limit", "nq", "rows"), SHAPE_FLOORS, strict=True)}
        detection["condition"] = "limit or nq or rows"
        return [event_rule(cls.info, "milvus_unusual_query_shape", "Milvus unusually large query",
                           "A read asking for far more results or query vectors than applications usually do "
                           "(the absolute floors of the in-process rule; baselines are per principal there).",
                           detection, ["Exports and re-indexing jobs"])]
