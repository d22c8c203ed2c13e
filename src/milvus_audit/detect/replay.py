"""Replaying recorded audit records through the detection engine, for tuning and hunting.

`replay_files` reads every format the product writes (otel core, ECS, OCSF; plain or
gzip), mapped back to core records by `integrity.verify.core_record`, and runs the
`milvus.audit` records through the engine in time order, streaming: files are merged by
time and records ordered within a window of `REORDER_WINDOW` records, so memory does not
grow with the input. Input it cannot read raises
`JsonlError` or `ReplayError` naming the file and line; the result's `records` says how
many audit records there were, so a caller can tell "nothing found" from "nothing read".
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from milvus_audit.detect.engine import Alert, DetectionEngine, Observation
from milvus_audit.detect.rules import Rules
from milvus_audit.export.jsonl import STDIN, Progress, iter_jsonl, parse_rfc3339
from milvus_audit.integrity.verify import core_record
from milvus_audit.model.record import event_id
from milvus_audit.semconv import AUDIT_EVENT, SERVER_ACCESS_EVENT

# Client records, and server access records (`milvus-audit ingest`) for shadow_access's join.
REPLAYED_EVENTS = frozenset({AUDIT_EVENT, SERVER_ACCESS_EVENT})

__all__ = ["AUDIT_EVENT", "REORDER_WINDOW", "Peak", "ReplayError", "ReplayResult", "core_of", "explain_peaks", "merged",
           "observation_from_record", "replay", "replay_files"]


class ReplayError(ValueError):
    """A record the rules cannot read; the message names the file and line."""


@dataclass
class ReplayResult:
    alerts: list[Alert]
    engine: DetectionEngine
    records: int  # the audit (`milvus.audit`) records replayed
    late: int = 0  # records that came more than the reorder window late, replayed out of order


def _core(record: Mapping[str, Any]) -> dict[str, Any]:
    """The core form of a record written as otel, ECS or OCSF, with its trace and span ids."""
    raw = record if isinstance(record, dict) else dict(record)
    core = core_record(raw)
    if "trace_id" not in core:
        trace, span = raw.get("trace"), raw.get("span")  # ECS keeps them as trace.id and span.id
        core = {**core, "trace_id": trace.get("id") if isinstance(trace, dict) else "",
                "span_id": span.get("id") if isinstance(span, dict) else ""}
    return core


core_of = _core  # the core form of a line in any format, trace and span ids included (reports read it)


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


REORDER_WINDOW = 10_000  # records held to put a file's slightly out-of-order records in time order

# The parameter each rule compares its watched value with (`--explain` shows value against it);
# the rules whose threshold is learned per principal or collection compare with that instead.
PRIMARY_PARAM = {"brute_force": "threshold", "password_spray": "distinct_users", "unauthorized_access": "threshold",
                 "error_spike": "min_failures", "slow_query": "absolute_ms", "data_exfiltration": "rows",
                 "resource_exhaustion": "threshold", "destructive_operation": "delete_rows"}
LEARNED = {"error_spike": "max(min_failures, factor x the learned failures per window)",
           "slow_query": "min(absolute_ms, max(k x the collection's learned p99, min_ms))",
           "unusual_query": "max(the floor, factor x the principal's learned mean)"}


@dataclass
class Peak:
    """For `--explain`: how close a principal came to a rule, as a value against a threshold."""

    rule: str
    principal: str
    ratio: float  # value / threshold at the peak
    threshold: float | None  # the configured threshold it was measured against (None: learned)
    param: str | None

    @property
    def value(self) -> float | None:
        return None if self.threshold is None else self.ratio * self.threshold

    @property
    def fired(self) -> bool:
        return self.ratio >= 1


def explain_peaks(engine: DetectionEngine) -> list[Peak]:
    """Each (rule, principal) peak the engine tracked, with the value and threshold behind it."""
    peaks = []
    for (rule, principal), ratio in engine.peaks().items():
        param = PRIMARY_PARAM.get(rule)
        settings = engine.rules.rule(rule)
        threshold = settings.params.get(param) if param and rule not in LEARNED else None
        peaks.append(Peak(rule, principal, ratio, threshold, param))
    return peaks


def _first_time(path: str | Path) -> int | None:
    """The time of a file's first record (None: standard input, or unreadable: read it first)."""
    if str(path) == STDIN:
        return None
    try:
        for _, record in iter_jsonl(path):
            return parse_rfc3339(str(_core(record)["timestamp"]))
    except (ValueError, OSError):
        return None
    return None


Positioned = tuple[int, str, Observation]


def _observations(path: str | Path, progress: Progress | None) -> Iterator[Positioned]:
    for number, record in iter_jsonl(path, reject_duplicate_keys=True, progress=progress):
        core = _core(record)
        if core.get("event_name") not in REPLAYED_EVENTS:
            continue
        timestamp = parse_rfc3339(core["timestamp"])
        attributes = core.get("attributes") or {}
        yield timestamp, f"{path}:{number}", Observation(
            timestamp / 1e9, attributes, event_id(str(core.get("trace_id") or ""), str(core.get("span_id") or "")))


def merged(paths: Iterable[str | Path], progress: Progress | None = None) -> Iterator[Positioned]:
    """The replayed records of every file, merged by time. Files are opened in the order of
    their first record and only when the merge reaches it, so a month of rotated files keeps
    open only the files whose times overlap (one per writer)."""
    order = itertools.count()
    pending = sorted(((_first_time(path), next(order), path) for path in paths),
                     key=lambda item: (item[0] is not None, item[0] or 0, item[1]))
    heap: list[tuple[int, int, str, Observation, Iterator[Positioned]]] = []

    def advance(source: Iterator[Positioned]) -> None:
        item = next(source, None)
        if item is not None:
            heapq.heappush(heap, (item[0], next(order), item[1], item[2], source))

    while heap or pending:
        while pending and (not heap or pending[0][0] is None or pending[0][0] <= heap[0][0]):
            advance(_observations(pending.pop(0)[2], progress))
        if not heap:
            continue
        timestamp, _, where, observation, source = heapq.heappop(heap)
        yield timestamp, where, observation
        advance(source)


def in_time_order(items: Iterable[Positioned], window: int = REORDER_WINDOW,
                  late: list[int] | None = None) -> Iterator[Positioned]:
    """`items` in time order within a window of `window` records (equal times keep their
    order). A record more than `window` records behind a later one is yielded when it
    comes, and counted in `late[0]`."""
    buffer: list[tuple[int, int, str, Observation]] = []
    order = itertools.count()
    last = None
    for timestamp, where, observation in items:
        heapq.heappush(buffer, (timestamp, next(order), where, observation))
        if len(buffer) > window:
            item = heapq.heappop(buffer)
            if last is not None and item[0] < last and late is not None:
                late[0] += 1
            last = item[0] if last is None else max(last, item[0])
            yield item[0], item[2], item[3]
    while buffer:
        item = heapq.heappop(buffer)
        if last is not None and item[0] < last and late is not None:
            late[0] += 1
        last = item[0] if last is None else max(last, item[0])
        yield item[0], item[2], item[3]


def replay_files(paths: Iterable[str | Path], rules: Rules | None = None, *,
                 explain: bool = False, progress: Progress | None = None,
                 window: int = REORDER_WINDOW) -> ReplayResult:
    """Replay the audit records of these files (`-` is standard input) in time order, one
    record at a time: memory is bounded by `window` records and the engine's bounded maps,
    whatever the size of the files.

    The files are merged by time (a rotated set may be given in any order), and records
    are ordered within a window of `window` records; one later than that is replayed when
    it comes and counted in `late`. A line that is not an audit record in a format the
    product writes raises `JsonlError`, a record whose attributes the rules cannot read
    raises `ReplayError`; both name the file and line."""
    engine = DetectionEngine(rules or Rules(), explain=explain)
    alerts: list[Alert] = []
    count = 0
    late = [0]
    for _, where, observation in in_time_order(merged(list(paths), progress), window, late):
        count += 1
        try:
            alerts.extend(engine.observe(observation))
        except (TypeError, ValueError, AttributeError, KeyError, OverflowError) as exc:
            raise ReplayError(f"{where}: an audit record the rules cannot read "
                              f"({type(exc).__name__}: {exc})") from None
    alerts.extend(engine.finish())
    return ReplayResult(alerts, engine, count, late[0])
