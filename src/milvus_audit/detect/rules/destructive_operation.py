"""destructive_operation: a drop or truncate, or a delete that matches everything or removes many rows."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from milvus_audit.detect.rules.base import Alert, Observation, Param, Rule
from milvus_audit.detect.rules.sigmaform import AUDIT, event_rule, ops, shape_ops
from milvus_audit.model.catalog import Action, Operation, Shape
from milvus_audit.semconv import (
    AFFECTED_ROWS,
    DB_COLLECTION_NAME,
    DB_NAMESPACE,
    DB_OPERATION_NAME,
    DB_QUERY_TEXT,
    OUTCOME,
    SUCCESS,
)

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # no nested quantifier: cannot backtrack
_OPERATOR_WORDS = {"and", "or", "not", "in", "like", "AND", "OR", "NOT", "IN", "LIKE"}


def matches_everything(filter_shape: str | None) -> bool:
    """A delete filter with no field in it (`? == ?`, `true`) matches every row."""
    if filter_shape is None:
        return False
    fields = [word for word in _IDENTIFIER.findall(filter_shape) if word not in _OPERATOR_WORDS]
    return not fields


class DestructiveOperation(Rule):
    id = "destructive_operation"
    severity = "high"
    attack = ("T1485",)
    description = "A drop or truncate, or a delete whose filter matches everything or that removes many rows."
    params = {"delete_rows": Param(1000)}

    __slots__ = ()

    @classmethod
    def observes_success(cls, operation: Operation) -> bool:
        return operation.action is Action.DESTROY or operation.shape is Shape.DELETE

    def observe(self, observation: Observation, principal: str, operation: Operation,
                alerts: list[Alert]) -> None:
        attributes = observation.attributes
        settings = self.settings_for(principal)
        if settings is None:
            return
        name = attributes.get(DB_OPERATION_NAME)
        collection = attributes.get(DB_COLLECTION_NAME)
        target = collection or attributes.get(DB_NAMESPACE) or ""
        if operation.action is Action.DESTROY:
            summary = f"{principal} ran {name} on {target}"
        else:
            deleted = attributes.get(AFFECTED_ROWS)
            limit = settings.param("delete_rows", collection)
            everything = DB_QUERY_TEXT in attributes and matches_everything(attributes.get(DB_QUERY_TEXT))
            if not everything and not (isinstance(deleted, int) and deleted > limit):
                return
            summary = (f"{principal} deleted every row of {target}" if everything
                       else f"{principal} deleted {deleted} rows from {target}")
        self.fire(alerts, settings, observation, principal, summary,
                  1, 1, 0, [observation.event_id], collection=str(collection) if collection else None,
                  cooldown_key=f"{principal}\x00{name}\x00{target}")

    @classmethod
    def sigma(cls, params: Mapping[str, float]) -> list[dict[str, Any]]:
        # "A filter that names no field" needs a tokenizer; Sigma gets drops and mass deletes.
        done = {**AUDIT, OUTCOME: SUCCESS}
        return [
            event_rule(cls.info, "milvus_destructive_operation", "Milvus destructive operation",
                       "A collection, partition or database was dropped, or a collection truncated.",
                       {"selection": {**done, DB_OPERATION_NAME: ops(Action.DESTROY)}, "condition": "selection"},
                       ["Planned schema migrations", "Test environments"]),
            event_rule(cls.info, "milvus_mass_delete", "Milvus mass delete", "A delete removed many rows.",
                       {"selection": {**done, DB_OPERATION_NAME: shape_ops(Shape.DELETE),
                                      f"{AFFECTED_ROWS}|gt": int(params["delete_rows"])},
                        "condition": "selection"},
                       ["Retention jobs"]),
        ]
