"""data_exfiltration: rows read by one principal within a window exceed a threshold."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from milvus_audit.detect.rules.base import SIGMA_PRINCIPAL, Alert, Observation, Param, Rule
from milvus_audit.detect.rules.sigmaform import AUDIT, correlation, event_rule
from milvus_audit.model.catalog import Category, Operation
from milvus_audit.semconv import CATEGORY, DB_RESPONSE_RETURNED_ROWS, OUTCOME, SUCCESS

ROWS_READ = "milvus_large_read"  # the name predates the sum: every read that returned rows


class DataExfiltration(Rule):
    id = "data_exfiltration"
    severity = "high"
    attack = ("T1530", "T1020")
    description = "Rows read by one principal within a window exceed a threshold."
    params = {"rows": Param(10_000, positive=True), "window_s": Param(300, positive=True)}

    __slots__ = ("_rows",)

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._rows = self.counted()

    @classmethod
    def observes_success(cls, operation: Operation) -> bool:
        return operation.category is Category.DATA_READ

    def observe(self, observation: Observation, principal: str, operation: Operation,
                alerts: list[Alert]) -> None:
        rows = observation.attributes.get(DB_RESPONSE_RETURNED_ROWS)
        if not isinstance(rows, int) or rows <= 0:
            return
        self.windowed(self._rows, principal, observation, alerts,
                      "{principal} read {count} rows within {window} s", value=rows, param="rows")

    @classmethod
    def sigma(cls, params: Mapping[str, float]) -> list[dict[str, Any]]:
        return [
            event_rule(cls.info, ROWS_READ, "Milvus read returning rows",
                       "A read or iterator page that returned rows (base of the exfiltration correlation, "
                       "which sums them).",
                       {"selection": {**AUDIT, CATEGORY: Category.DATA_READ.value, OUTCOME: SUCCESS,
                                      f"{DB_RESPONSE_RETURNED_ROWS}|gt": 0}, "condition": "selection"},
                       ["Every application read: use it through the correlation"], level="informational"),
            correlation(cls.info, "milvus_data_exfiltration", "Milvus bulk read by one principal", "value_sum",
                        ROWS_READ, [SIGMA_PRINCIPAL], params["window_s"], params["rows"],
                        field=DB_RESPONSE_RETURNED_ROWS, falsepositives=["Backup jobs (allowlist them)"]),
        ]
