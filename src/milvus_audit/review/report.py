"""`milvus-audit report`: what a person reviewing a day (or a month) of audit records reads.

`build_report` streams the records of every file once (`iter_jsonl`: otel, ECS or OCSF,
plain or gzip, `-` for standard input) into fixed-size aggregates, so memory does not grow
with the input: counters per principal and per collection (capped, the rest counted as
"(other)"), a timeline of per-second buckets that coarsens to minutes and hours as the span
grows, the slowest operations (a heap), and the lists a reviewer reads line by line (RBAC
changes, destructive operations, alerts, authentication failures), each capped with a count of
what was left out. Every listed item carries where its record is: `file:line`, and
`stream/seq` when the record is chained. The result is plain data (`Report.data`), rendered
by `milvus_audit.review.render` as HTML, Markdown, text or JSON.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from milvus_audit import semconv
from milvus_audit.detect.replay import core_of
from milvus_audit.detect.rules.base import account_of, client_of, principal_of
from milvus_audit.export.jsonl import STDIN, JsonlError, Progress, iter_jsonl, parse_rfc3339, rfc3339
from milvus_audit.model.catalog import Action, Category, Shape, lookup
from milvus_audit.model.record import event_id

__all__ = ["LIMITS", "Limits", "Report", "ReportBuilder", "build_report"]


@dataclass(frozen=True)
class Limits:
    """How much of each list a report keeps (the rest is counted): what bounds its memory and size."""

    principals: int = 10_000  # tracked; more are counted as "(other)"
    collections: int = 10_000
    shown_principals: int = 50
    shown_collections: int = 50
    listed: int = 1_000  # RBAC changes, destructive operations, alerts, authentication failures
    slowest: int = 25
    evidence_index: int = 50_000  # recent records whose event id an alert's evidence can name
    buckets: int = 20_000  # timeline buckets before they are coarsened


LIMITS = Limits()
OTHER = "(other)"
# Timeline bar widths a report chooses from (seconds): about 30 to 150 bars over its period.
INTERVALS = (1, 5, 10, 30, 60, 300, 600, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86_400, 7 * 86_400)
_COARSER = (1, 60, 3600, 86_400)


@dataclass
class _Principal:
    calls: int = 0
    reads: int = 0
    writes: int = 0
    rows_read: int = 0
    failures: int = 0
    alerts: int = 0
    first: int = 0
    last: int = 0


@dataclass
class _Collection:
    calls: int = 0
    reads: int = 0
    writes: int = 0
    rows_read: int = 0
    rows_written: int = 0
    failures: int = 0
    destructive: int = 0


class _Capped(OrderedDict[Any, Any]):
    """A dict of at most `cap` keys; further keys go to one `(other)` entry."""

    def __init__(self, cap: int, factory: Callable[[], Any]) -> None:
        super().__init__()
        self.cap = cap
        self.factory = factory
        self.overflow = 0

    def entry(self, key: Any) -> Any:
        item = self.get(key)
        if item is None:
            if len(self) >= self.cap:
                self.overflow += 1
                key = OTHER if not isinstance(key, tuple) else (OTHER,) * len(key)
                item = self.get(key)
                if item is not None:
                    return item
            item = self[key] = self.factory()
        return item


@dataclass
class _Listing:
    """A list a reviewer reads item by item: the first `cap` kept, the rest counted."""

    cap: int
    items: list[dict[str, Any]] = field(default_factory=list)
    total: int = 0

    def add(self, item: dict[str, Any]) -> None:
        self.total += 1
        if len(self.items) < self.cap:
            self.items.append(item)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value)


class ReportBuilder:
    """Aggregates records one at a time (`add`), in any order; `finish` gives the `Report`."""

    def __init__(self, *, since_ns: int | None = None, until_ns: int | None = None,
                 limits: Limits = LIMITS, keep_client_records: bool = False) -> None:
        self.since_ns, self.until_ns, self.limits = since_ns, until_ns, limits
        self.records = 0
        self.outside = 0  # records outside --since/--until
        self.events: Counter[str] = Counter()
        self.first_ns: int | None = None
        self.last_ns: int | None = None
        self.principals: _Capped = _Capped(limits.principals, _Principal)
        self.collections: _Capped = _Capped(limits.collections, _Collection)
        self.resolution = 1  # seconds per timeline bucket
        self.timeline: dict[int, list[int]] = {}  # bucket start (s) -> [calls, failures, alerts]
        self.failures: Counter[str] = Counter()
        self.failures_by_operation: Counter[tuple[str, str]] = Counter()
        self.auth_failures: Counter[tuple[str, str]] = Counter()
        self.auth_first: dict[tuple[str, str], tuple[int, str]] = {}
        self.rbac = _Listing(limits.listed)
        self.destructive = _Listing(limits.listed)
        self.alerts = _Listing(limits.listed)
        self.alerts_by_rule: Counter[tuple[str, str]] = Counter()
        self.alert_principals: Counter[str] = Counter()
        self.responses: Counter[tuple[str, str]] = Counter()
        self.slowest: list[tuple[float, int, dict[str, Any]]] = []
        self.operations: Counter[str] = Counter()
        self.streams: dict[str, list[int]] = {}  # stream -> [records, first seq, last seq]
        self.server_records = 0
        self.shadow_alerts = 0
        self.torn: list[str] = []
        self._evidence: OrderedDict[str, str] = OrderedDict()  # event id -> where (recent records)
        self._order = itertools.count()
        self.client_records: list[Any] | None = [] if keep_client_records else None

    # -- input ------------------------------------------------------------------------------
    def add_files(self, paths: Iterable[str | Path], progress: Progress | None = None) -> None:
        for path in paths:
            try:
                for number, record in iter_jsonl(path, progress=progress):
                    self.add(record, f"{path}:{number}")
            except JsonlError as exc:
                if not exc.torn:
                    raise
                self.torn.append(f"{exc.path}:{exc.line}")  # a cut last line: the rest was read

    def add(self, record: Mapping[str, Any], where: str) -> None:
        core = core_of(record)
        name = str(core.get("event_name") or "")
        attributes = core.get("attributes")
        if not isinstance(attributes, dict):
            attributes = {}
        try:
            timestamp = parse_rfc3339(str(core["timestamp"]))
        except (KeyError, ValueError):
            raise JsonlError(where.rpartition(":")[0], int(where.rpartition(":")[2] or 0),
                             "a record without a readable timestamp") from None
        if (self.since_ns is not None and timestamp < self.since_ns) or \
                (self.until_ns is not None and timestamp >= self.until_ns):
            self.outside += 1
            return
        self.records += 1
        self.events[name] += 1
        if self.first_ns is None or timestamp < self.first_ns:
            self.first_ns = timestamp
        if self.last_ns is None or timestamp > self.last_ns:
            self.last_ns = timestamp
        stream, seq = attributes.get(semconv.STREAM), attributes.get(semconv.SEQ)
        position = where
        if stream is not None:
            position = f"{where} ({stream}/{seq})"
            state = self.streams.get(str(stream))
            if state is None:
                if len(self.streams) < self.limits.principals:
                    self.streams[str(stream)] = [1, _int(seq), _int(seq)]
            else:
                state[0] += 1
                state[1] = min(state[1], _int(seq))
                state[2] = max(state[2], _int(seq))
        trace, span = str(core.get("trace_id") or ""), str(core.get("span_id") or "")
        if name == semconv.AUDIT_EVENT:
            self._audit(timestamp, attributes, position, trace, span)
        elif name == semconv.ALERT_EVENT:
            self._alert(timestamp, attributes, position)
        elif name == semconv.SERVER_ACCESS_EVENT:
            self.server_records += 1
        elif name == semconv.RESPONSE_EVENT:
            self.responses[(_text(attributes.get(semconv.RESPONSE_ACTION)),
                            _text(attributes.get(semconv.RESPONSE_OUTCOME)))] += 1

    def _bucket(self, timestamp: int) -> list[int]:
        second = timestamp // 1_000_000_000
        key = second - second % self.resolution
        bucket = self.timeline.get(key)
        if bucket is None:
            if len(self.timeline) >= self.limits.buckets:
                self._coarsen()
                key = second - second % self.resolution
                bucket = self.timeline.get(key)
            if bucket is None:
                bucket = self.timeline[key] = [0, 0, 0]
        return bucket

    def _coarsen(self) -> None:
        coarser = next((c for c in _COARSER if c > self.resolution), self.resolution * 7)
        merged: dict[int, list[int]] = {}
        for key, counts in self.timeline.items():
            target = merged.setdefault(key - key % coarser, [0, 0, 0])
            for i in range(3):
                target[i] += counts[i]
        self.timeline, self.resolution = merged, coarser

    def _audit(self, timestamp: int, attributes: dict[str, Any], where: str, trace: str, span: str) -> None:
        limits = self.limits
        if trace:
            evidence = self._evidence
            evidence[event_id(trace, span)] = where
            if len(evidence) > limits.evidence_index:
                evidence.popitem(last=False)
        operation_name = _text(attributes.get(semconv.DB_OPERATION_NAME))
        operation = lookup(operation_name)
        category = attributes.get(semconv.CATEGORY) or operation.category.value
        failure = attributes.get(semconv.FAILURE_REASON)
        failed = failure is not None or attributes.get(semconv.OUTCOME) == semconv.FAILURE
        user = _text(attributes.get(semconv.USER_NAME))
        enduser = _text(attributes.get(semconv.ENDUSER_ID))
        address = _text(attributes.get(semconv.CLIENT_ADDRESS))
        collection = _text(attributes.get(semconv.DB_COLLECTION_NAME))
        rows = _int(attributes.get(semconv.DB_RESPONSE_RETURNED_ROWS))
        written = _int(attributes.get(semconv.DB_OPERATION_BATCH_SIZE))
        self.operations[operation_name] += 1
        bucket = self._bucket(timestamp)
        bucket[0] += 1
        principal: _Principal = self.principals.entry((user, enduser, address))
        principal.calls += 1
        if not principal.first:
            principal.first = timestamp
        principal.last = max(principal.last, timestamp)
        reading = category == Category.DATA_READ.value
        writing = category == Category.DATA_WRITE.value
        if reading:
            principal.reads += 1
            principal.rows_read += rows
        elif writing:
            principal.writes += 1
        if collection:
            stats: _Collection = self.collections.entry(collection)
            stats.calls += 1
            if reading:
                stats.reads += 1
                stats.rows_read += rows
            elif writing:
                stats.writes += 1
                stats.rows_written += written
            if failed:
                stats.failures += 1
            if operation.action is Action.DESTROY and not failed:
                stats.destructive += 1
        who = principal_of(attributes)
        base = {"time": rfc3339(timestamp), "principal": who, "user": user, "enduser": enduser,
                "operation": operation_name, "where": where}
        if failed:
            bucket[1] += 1
            principal.failures += 1
            reason = _text(failure) or "unknown"
            self.failures[reason] += 1
            self.failures_by_operation[(reason, operation_name)] += 1
            if failure == semconv.FailureReason.AUTHENTICATION:
                key = (account_of(attributes), client_of(attributes))
                self.auth_failures[key] += 1
                self.auth_first.setdefault(key, (timestamp, where))
        if category == Category.RBAC.value and (operation.mutating or attributes.get(semconv.MUTATING)):
            self.rbac.add({**base, "outcome": "failure" if failed else "success",
                           "failure_reason": _text(failure),
                           "target_user": _text(attributes.get(semconv.TARGET_USER)),
                           "target_role": _text(attributes.get(semconv.TARGET_ROLE)),
                           "privilege": _text(attributes.get(semconv.PRIVILEGE)),
                           "object": " ".join(filter(None, (_text(attributes.get(semconv.OBJECT_TYPE)),
                                                            _text(attributes.get(semconv.OBJECT_NAME)))))})
        if operation.action is Action.DESTROY or operation.shape is Shape.DELETE:
            target = collection or _text(attributes.get(semconv.DB_NAMESPACE))
            deleted = attributes.get(semconv.AFFECTED_ROWS)
            detail = "" if operation.action is Action.DESTROY else \
                f"{deleted} rows" if deleted is not None else _text(attributes.get(semconv.DB_QUERY_TEXT))[:200]
            self.destructive.add({**base, "target": target, "detail": detail,
                                  "outcome": "failure" if failed else "success"})
        duration = attributes.get(semconv.DURATION_MS)
        if isinstance(duration, (int, float)) and not isinstance(duration, bool):
            item = (float(duration), next(self._order), {**base, "collection": collection,
                                                          "duration_ms": float(duration), "rows": rows})
            if len(self.slowest) < limits.slowest:
                heapq.heappush(self.slowest, item)
            elif item[0] > self.slowest[0][0]:
                heapq.heapreplace(self.slowest, item)
        if self.client_records is not None:
            from milvus_audit.serverlog.reconcile import ClientRecord

            try:
                trace_int = int(trace or "0", 16)
            except ValueError:
                trace_int = 0
            self.client_records.append(ClientRecord(timestamp, trace_int, attributes, where))

    def _alert(self, timestamp: int, attributes: dict[str, Any], where: str) -> None:
        rule = _text(attributes.get(semconv.ALERT_RULE))
        severity = _text(attributes.get(semconv.ALERT_SEVERITY))
        self.alerts_by_rule[(rule, severity)] += 1
        self._bucket(timestamp)[2] += 1
        if rule == "shadow_access":
            self.shadow_alerts += 1
        principal = _text(attributes.get(semconv.ALERT_PRINCIPAL))
        if len(self.alert_principals) < self.limits.principals or principal in self.alert_principals:
            self.alert_principals[principal] += 1
        events = attributes.get(semconv.ALERT_EVENTS)
        evidence = [{"event": str(e), "where": self._evidence.get(str(e), "")}
                    for e in (events if isinstance(events, list) else [])][:10]
        self.alerts.add({"time": rfc3339(timestamp), "rule": rule, "severity": severity, "principal": principal,
                         "summary": _text(attributes.get(semconv.ALERT_SUMMARY)),
                         "value": attributes.get(semconv.ALERT_COUNT),
                         "threshold": attributes.get(semconv.ALERT_THRESHOLD),
                         "collection": _text(attributes.get(semconv.DB_COLLECTION_NAME)),
                         "attack": _text(attributes.get(semconv.ALERT_ATTACK)),
                         "suppressed": _int(attributes.get(semconv.ALERT_SUPPRESSED)),
                         "evidence": evidence, "where": where})

    # -- output -----------------------------------------------------------------------------
    def interval(self) -> int:
        """The timeline's bar width: about 30 to 150 bars over the period, never finer than kept."""
        if self.first_ns is None or self.last_ns is None:
            return self.resolution
        span = max(1, (self.last_ns - self.first_ns) // 1_000_000_000 + 1)
        for width in INTERVALS:
            if width >= self.resolution and span / width <= 150:
                return width
        return INTERVALS[-1]

    def finish(self, *, integrity: dict[str, Any] | None = None, shadow: dict[str, Any] | None = None,
               sources: list[str] | None = None) -> Report:
        limits = self.limits
        width = self.interval()
        timeline: dict[int, list[int]] = {}
        for key, counts in self.timeline.items():
            target = timeline.setdefault(key - key % width, [0, 0, 0])
            for i in range(3):
                target[i] += counts[i]
        if timeline:  # every interval of the period, empty ones included
            start, end = min(timeline), max(timeline)
            for key in range(start, end + 1, width):
                timeline.setdefault(key, [0, 0, 0])
        principals = sorted(self.principals.items(), key=lambda kv: (-kv[1].calls, kv[0]))
        for (user, enduser, _), stats in principals[:limits.shown_principals]:
            stats.alerts = self.alert_principals.get(enduser or user, 0)  # alerts name enduser, else user
        collections = sorted(self.collections.items(), key=lambda kv: (-kv[1].calls, kv[0]))
        audit = self.events.get(semconv.AUDIT_EVENT, 0)
        distinct = {principal_key for principal_key in self.principals if principal_key != (OTHER,) * 3}
        data: dict[str, Any] = {
            "generated_by": "milvus-audit report",
            "sources": sources or [],
            "period": {"first": rfc3339(self.first_ns) if self.first_ns is not None else None,
                       "last": rfc3339(self.last_ns) if self.last_ns is not None else None,
                       "since": rfc3339(self.since_ns) if self.since_ns is not None else None,
                       "until": rfc3339(self.until_ns) if self.until_ns is not None else None},
            "counts": {"records": self.records, "audit_records": audit,
                       "failures": sum(self.failures.values()),
                       "alerts": self.events.get(semconv.ALERT_EVENT, 0),
                       "responses": self.events.get(semconv.RESPONSE_EVENT, 0),
                       "server_records": self.server_records,
                       "principals": len(distinct) + (1 if self.principals.overflow else 0),
                       "principals_over_cap": self.principals.overflow,
                       "users": len({k[0] for k in distinct if k[0]}),
                       "endusers": len({k[1] for k in distinct if k[1]}),
                       "collections": len(self.collections), "outside_period": self.outside,
                       "events": dict(self.events.most_common())},
            "timeline": {"interval_s": width,
                         "buckets": [{"start": rfc3339(key * 1_000_000_000), "calls": c[0], "failures": c[1],
                                      "alerts": c[2]} for key, c in sorted(timeline.items())]},
            "principals": [{"user": k[0], "enduser": k[1], "client_address": k[2], **vars(v),
                            "first": rfc3339(v.first) if v.first else "", "last": rfc3339(v.last) if v.last else ""}
                           for k, v in principals[:limits.shown_principals]],
            "collections": [{"collection": k, **vars(v)} for k, v in collections[:limits.shown_collections]],
            "failures": [{"reason": reason, "count": count} for reason, count in self.failures.most_common()],
            "failures_by_operation": [{"reason": r, "operation": o, "count": c}
                                      for (r, o), c in self.failures_by_operation.most_common(50)],
            "auth_failures": [{"principal": p, "source": s, "count": c, "first": rfc3339(self.auth_first[(p, s)][0]),
                               "where": self.auth_first[(p, s)][1]}
                              for (p, s), c in self.auth_failures.most_common(limits.shown_principals)],
            "rbac_changes": {"total": self.rbac.total, "items": self.rbac.items},
            "destructive": {"total": self.destructive.total, "items": self.destructive.items},
            "alerts_by_rule": [{"rule": r, "severity": s, "count": c}
                               for (r, s), c in sorted(self.alerts_by_rule.items(), key=lambda kv: -kv[1])],
            "alerts": {"total": self.alerts.total, "items": self.alerts.items},
            "responses": [{"action": a, "outcome": o, "count": c} for (a, o), c in self.responses.most_common()],
            "slowest": [item for _, _, item in sorted(self.slowest, key=lambda t: (-t[0], t[1]))],
            "operations": [{"operation": o, "count": c} for o, c in self.operations.most_common(30)],
            "streams": [{"stream": s, "records": v[0], "first_seq": v[1], "last_seq": v[2]}
                        for s, v in sorted(self.streams.items())],
            "shadow": shadow,
            "integrity": integrity,
            "torn": self.torn,
        }
        return Report(data)


@dataclass
class Report:
    data: dict[str, Any]


def build_report(paths: list[str], *, since_ns: int | None = None, until_ns: int | None = None,
                 server_logs: list[str] | None = None, key: bytes | None = None, public_key: Any = None,
                 from_checkpoint: bool = False, progress: Progress | None = None,
                 limits: Limits = LIMITS) -> Report:
    """The report over these files: one streaming pass (a second one for integrity when a key
    is given; server logs are read whole by `serverlog.reconcile`)."""
    builder = ReportBuilder(since_ns=since_ns, until_ns=until_ns, limits=limits,
                            keep_client_records=bool(server_logs))
    builder.add_files(paths, progress)
    integrity = None
    if key is not None or public_key is not None:
        if STDIN in paths:
            integrity = {"checked": False, "why": "standard input cannot be read twice: run verify on it"}
        else:
            integrity = _integrity(paths, key, public_key, from_checkpoint)
    shadow = _shadow(builder, server_logs) if server_logs else None
    return builder.finish(integrity=integrity, shadow=shadow, sources=[str(p) for p in paths])


def _integrity(paths: list[str], key: bytes | None, public_key: Any, from_checkpoint: bool) -> dict[str, Any]:
    from milvus_audit.integrity.verify import verify

    reports = verify(paths, key=key, public_key=public_key, allow_open=True, from_checkpoint=from_checkpoint)
    streams = [{"stream": r.stream, "records": r.records, "checkpoints": r.checkpoints, "closed": r.closed,
                "from_seq": r.from_seq, "status": "BROKEN" if r.findings else "ok",
                "findings": [{"kind": f.kind, "where": f.where, "detail": f.detail} for f in r.findings]}
               for r in reports]
    problems = sum(len(r.findings) for r in reports)
    checked = "chain and checkpoint signatures" if key and public_key else ("chain" if key else
                                                                           "checkpoint signatures")
    return {"checked": True, "what": checked, "streams": streams, "problems": problems,
            "records_verified": sum(r.records for r in reports if r.stream not in ("<input>", "<no stream>"))}


def _shadow(builder: ReportBuilder, server_logs: list[str]) -> dict[str, Any]:
    from milvus_audit.serverlog.parse import AccessLogParser
    from milvus_audit.serverlog.reconcile import read_server_records, reconcile

    parser = AccessLogParser()
    servers = read_server_records(server_logs, parser)
    result = reconcile(builder.client_records or [], servers, parse=parser.stats)
    builder.client_records = None
    listed = [{"time": rfc3339(r.timestamp_ns), "user": _text(r.attributes.get(semconv.USER_NAME)),
               "client_address": _text(r.attributes.get(semconv.CLIENT_ADDRESS)),
               "operation": _text(r.attributes.get(semconv.DB_OPERATION_NAME) or r.attributes.get(semconv.RPC_METHOD)),
               "collection": _text(r.attributes.get(semconv.DB_COLLECTION_NAME)),
               "failed": r.failed, "where": r.where} for r in result.shadow[:LIMITS.listed]]
    return {"server_logs": server_logs, "server_records": result.server_records,
            "client_records": result.client_records, "accounted": len(result.accounted),
            "shadow": len(result.shadow), "unconfirmed": len(result.unconfirmed),
            "groups": result.shadow_groups()[:LIMITS.shown_principals], "items": listed,
            "malformed_lines": parser.stats.malformed}
