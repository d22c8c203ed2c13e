"""`milvus-audit ingest`: the server's access log into the audit pipeline.

Lines are read (once, or followed like `tail -F`), parsed into `milvus.server.access`
records and emitted through an `OTelEmitter` on the providers `configure()` built: OTLP,
JSONL, spool and integrity chain, as for client records. Delivery is at least once: the
state file's offsets move only after the lines before them were emitted and the providers
flushed, so a restart (even after SIGKILL) re-reads at most the lines of the last batch.
A re-read line gets the same record id (`milvus_audit.server.record_id`, also its span
id): it is derived from the file (inode), the line's byte offset and its text.

Detection, when asked, is handed in from above (`Detector`): the serverlog layer sits below
the detection engine.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from milvus_audit import semconv
from milvus_audit.model.record import AuditEvent
from milvus_audit.runtime.progress import byte_bar
from milvus_audit.serverlog.parse import AccessLogParser, ParseStats, ServerRecord
from milvus_audit.serverlog.tail import Line, Tailer, load_state, save_state

__all__ = ["Detector", "IngestResult", "RecordSink", "client_event", "ingest", "record_id", "server_event"]

_BATCH_LINES = 2000
_BATCH_S = 1.0
_NO_TRACE = trace.set_span_in_context(trace.INVALID_SPAN)


class Detector(Protocol):
    """Detection over the ingested stream (built by the caller: see `milvus_audit.cli`)."""

    def event(self, event: AuditEvent) -> None: ...
    def tick(self, now_s: float) -> None: ...
    def close(self) -> None: ...


class RecordSink(Protocol):
    """Where server records go: `emit` each, `flush` before the state file moves on."""

    def emit(self, event: AuditEvent) -> None: ...
    def flush(self) -> bool: ...


@dataclass
class IngestResult:
    stats: ParseStats
    emitted: int = 0
    files: list[str] = field(default_factory=list)


def record_id(line: Line, server_address: str | None = None) -> str:
    """A line's stable id: the same line of the same file re-read after a restart has the same one."""
    key = f"{server_address or ''}\x00{line.inode}\x00{line.offset}\x00{line.text}"
    return hashlib.blake2b(key.encode("utf-8", "surrogateescape"), digest_size=8).hexdigest()


def server_event(record: ServerRecord, identity: str) -> AuditEvent:
    attributes = record.attributes
    attributes[semconv.SERVER_RECORD_ID] = identity
    return AuditEvent(semconv.SERVER_ACCESS_EVENT, record.timestamp_ns, attributes, record.trace_id,
                      int(identity, 16) or 1, record.failed)


def client_event(record: dict[str, Any]) -> AuditEvent | None:
    """A client `milvus.audit` record read back from JSONL (core form), for the shadow join."""
    from milvus_audit.export.jsonl import parse_rfc3339

    if record.get("event_name") != semconv.AUDIT_EVENT:
        return None
    try:
        trace_id = int(str(record.get("trace_id") or "0"), 16)
        span_id = int(str(record.get("span_id") or "0"), 16)
        timestamp = parse_rfc3339(record["timestamp"])
    except (KeyError, ValueError, TypeError):
        return None
    attributes = record.get("attributes")
    if not isinstance(attributes, dict):
        return None
    return AuditEvent(semconv.AUDIT_EVENT, timestamp, attributes, trace_id, span_id,
                      attributes.get(semconv.OUTCOME) == semconv.FAILURE)


class OTelSink:
    """Emits server records through an `OTelEmitter` (chain, sequence numbers, exporters)."""

    def __init__(self, emitter: Any, flush: Callable[[], bool]) -> None:
        self._emitter = emitter
        self._flush = flush

    def emit(self, event: AuditEvent) -> None:
        if event.trace_id:
            context = trace.set_span_in_context(NonRecordingSpan(SpanContext(
                event.trace_id, event.span_id, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))))
        else:
            context = _NO_TRACE
        self._emitter.emit_record(event.event_name, semconv.WARN if event.failed else semconv.INFO,
                                  event.attributes, event.timestamp_ns, context)

    def flush(self) -> bool:
        return self._flush()


class _Backlog:
    """Progress through the backlog on a terminal (a tqdm bar); gone once ingest is following."""

    def __init__(self, total_bytes: int, enabled: bool | None) -> None:
        self._bar: Any = byte_bar(total_bytes, "ingest", enabled) if total_bytes > 0 else None
        self._done = 0

    def update(self, done_bytes: int, lines: int) -> None:
        if self._bar is not None and done_bytes > self._done:
            self._bar.update(done_bytes - self._done)
            self._done = done_bytes
            self._bar.set_postfix_str(f"{lines} lines", refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.refresh()  # the final count, however fast the backlog went
            self._bar.close()
            self._bar = None


def _client_records(tailer: Tailer) -> Iterable[AuditEvent]:
    from milvus_audit.integrity.verify import core_record

    for line in tailer.poll():
        text = line.text.strip()
        if not text:
            continue
        try:
            record = json.loads(text)
        except ValueError:
            continue
        if isinstance(record, dict):
            event = client_event(core_record(record))
            if event is not None:
                yield event


def ingest(paths: list[str], sink: RecordSink, *, parser: AccessLogParser | None = None, follow: bool = False,
           state_path: str | None = None, detector: Detector | None = None, client_paths: list[str] | None = None,
           progress: bool | None = None, stop: Callable[[], bool] | None = None,
           poll_s: float = 0.25) -> IngestResult:
    """Read the access logs at `paths` into `sink`; see the module docstring. `client_paths`:
    JSONL files of client records the detector joins server records to (not re-emitted)."""
    parser = parser or AccessLogParser()
    tailer = Tailer(paths, load_state(state_path), follow=follow, poll_s=poll_s)
    clients = Tailer(client_paths or [], follow=follow, poll_s=poll_s) if client_paths else None
    result = IngestResult(parser.stats, files=list(paths))
    backlog = _Backlog(tailer.backlog_bytes(), progress)
    read_bytes = 0
    pending_lines: Line | None = None
    batch = 0
    batch_started = time.monotonic()

    def checkpoint() -> None:
        nonlocal batch, batch_started
        sink.flush()
        if pending_lines is not None:
            tailer.commit(pending_lines)
        if state_path is not None:
            save_state(state_path, tailer.cursors)
        batch, batch_started = 0, time.monotonic()

    try:
        while True:
            if clients is not None and detector is not None:
                for event in _client_records(clients):
                    detector.event(event)
            got = False
            for line in tailer.poll():
                got = True
                record = parser.parse_line(line.text, f"{line.path}:{line.number}")
                read_bytes += line.end - line.offset
                if record is not None:
                    event = server_event(record, record_id(line, parser.server_address))
                    sink.emit(event)
                    result.emitted += 1
                    if detector is not None:
                        detector.event(event)
                pending_lines = line
                batch += 1
                if batch >= _BATCH_LINES or time.monotonic() - batch_started >= _BATCH_S:
                    checkpoint()
                backlog.update(read_bytes, parser.stats.lines)
            if batch:
                checkpoint()
            if not follow or (stop is not None and stop()):
                break
            if detector is not None:
                detector.tick(time.time())
            if not got:
                backlog.close()  # the backlog is read: following from here on
                time.sleep(poll_s)
                if stop is not None and stop():
                    break
    finally:
        if batch:
            checkpoint()
        backlog.close()
        tailer.close()
        if clients is not None:
            clients.close()
        if detector is not None:
            detector.close()
    return result
