"""Replaying recorded audit records through the detection engine, for tuning and hunting.

`replay_files` reads every format the product writes (otel core, ECS, OCSF; plain or
gzip), mapped back to core records by `integrity.verify.core_record`, and runs the
`milvus.audit` records through the engine in time order. Input it cannot read raises
`JsonlError` or `ReplayError` naming the file and line; the result's `records` says how
many audit records there were, so a caller can tell "nothing found" from "nothing read".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from milvus_audit.detect.engine import Alert, DetectionEngine, Observation
from milvus_audit.detect.rules import Rules
from milvus_audit.export.jsonl import iter_jsonl, parse_rfc3339
from milvus_audit.integrity.verify import core_record
from milvus_audit.model.record import event_id
from milvus_audit.semconv import AUDIT_EVENT, SERVER_ACCESS_EVENT

# Client records, and server access records (`milvus-audit ingest`) for shadow_access's join.
REPLAYED_EVENTS = frozenset({AUDIT_EVENT, SERVER_ACCESS_EVENT})

__all__ = ["AUDIT_EVENT", "ReplayError", "ReplayResult", "observation_from_record", "replay", "replay_files"]


class ReplayError(ValueError):
    """A record the rules cannot read; the message names the file and line."""


@dataclass
class ReplayResult:
    alerts: list[Alert]
    engine: DetectionEngine
    records: int  # the audit (`milvus.audit`) records replayed


def _core(record: Mapping[str, Any]) -> dict[str, Any]:
    """The core form of a record written as otel, ECS or OCSF, with its trace and span ids."""
    raw = record if isinstance(record, dict) else dict(record)
    core = core_record(raw)
    if "trace_id" not in core:
        trace, span = raw.get("trace"), raw.get("span")  # ECS keeps them as trace.id and span.id
        core = {**core, "trace_id": trace.get("id") if isinstance(trace, dict) else "",
                "span_id": span.get("id") if isinstance(span, dict) else ""}
    return core


def observation_from_record(record: Mapping[str, Any]) -> Observation:
    """An engine observation from one JSONL audit record (any format `configure(jsonl_path=...)` writes)."""
    core = _core(record)
    return Observation(parse_rfc3339(core["timestamp"]) / 1e9, core.get("attributes") or {},
                       event_id(str(core.get("trace_id") or ""), str(core.get("span_id") or "")))


def replay(records: Iterable[Mapping[str, Any]], rules: Rules | None = None, *,
           explain: bool = False) -> ReplayResult:
    """Run the audit records among `records` (parsed lines, any format, in the order given)
    through a fresh engine."""
    engine = DetectionEngine(rules or Rules(), explain=explain)
    alerts: list[Alert] = []
    count = 0
    for record in records:
        if _core(record).get("event_name") not in REPLAYED_EVENTS:
            continue
        count += 1
        alerts.extend(engine.observe(observation_from_record(record)))
    alerts.extend(engine.finish())
    return ReplayResult(alerts, engine, count)


def replay_files(paths: Iterable[str | Path], rules: Rules | None = None, *,
                 explain: bool = False) -> ReplayResult:
    """Replay the audit records of these files (`-` is standard input) in time order.

    A line that is not an audit record in a format the product writes raises `JsonlError`,
    a record whose attributes the rules cannot read raises `ReplayError`; both name the
    file and line."""
    positioned: list[tuple[int, str, Observation]] = []
    for path in paths:
        for number, record in iter_jsonl(path, reject_duplicate_keys=True):
            core = _core(record)
            if core.get("event_name") not in REPLAYED_EVENTS:
                continue
            observation = observation_from_record(core)
            positioned.append((parse_rfc3339(core["timestamp"]), f"{path}:{number}", observation))
    positioned.sort(key=lambda item: item[0])  # stable: file order among equal times
    engine = DetectionEngine(rules or Rules(), explain=explain)
    alerts: list[Alert] = []
    for _, where, observation in positioned:
        try:
            alerts.extend(engine.observe(observation))
        except (TypeError, ValueError, AttributeError, KeyError, OverflowError) as exc:
            raise ReplayError(f"{where}: an audit record the rules cannot read "
                              f"({type(exc).__name__}: {exc})") from None
    alerts.extend(engine.finish())
    return ReplayResult(alerts, engine, len(positioned))
