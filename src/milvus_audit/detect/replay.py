"""Replaying recorded audit records through the detection engine, for tuning and hunting."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from milvus_audit.detect.engine import Alert, DetectionEngine, Observation
from milvus_audit.detect.rules import Rules
from milvus_audit.export.jsonl import parse_rfc3339
from milvus_audit.model.record import event_id

AUDIT_EVENT = "milvus.audit"


@dataclass
class ReplayResult:
    alerts: list[Alert]
    engine: DetectionEngine
    records: int


def observation_from_record(record: Mapping[str, Any]) -> Observation:
    """An engine observation from one JSONL audit record (the `configure(jsonl_path=...)` format)."""
    return Observation(parse_rfc3339(record["timestamp"]) / 1e9, record.get("attributes") or {},
                       event_id(record.get("trace_id") or "", record.get("span_id") or ""))


def replay(records: Iterable[Mapping[str, Any]], rules: Rules | None = None, *,
           explain: bool = False) -> ReplayResult:
    engine = DetectionEngine(rules or Rules(), explain=explain)
    alerts: list[Alert] = []
    count = 0
    for record in records:
        if record.get("event_name") != AUDIT_EVENT:
            continue
        count += 1
        alerts.extend(engine.observe(observation_from_record(record)))
    return ReplayResult(alerts, engine, count)
