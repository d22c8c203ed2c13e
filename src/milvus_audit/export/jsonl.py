"""The JSONL audit file: one JSON object per record, a contract that replay, verify and
SIEM tools read.

Each line has `timestamp` (RFC 3339, UTC, microseconds), `event_name`,
`severity_text`, `trace_id` and `span_id` (lowercase hex, "" when absent),
`attributes` (flat) and `resource` (flat). JSON escaping keeps every line one
record, whatever the attribute values contain.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import IO, Any

from opentelemetry.sdk._logs import LogRecordProcessor, ReadableLogRecord, ReadWriteLogRecord
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExporter, LogRecordExportResult

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
EVENT_PREFIX = "milvus."


def rfc3339(timestamp_ns: int) -> str:
    """`2026-11-27T06:42:07.123456Z` from nanoseconds since the epoch."""
    moment = _EPOCH + timedelta(microseconds=timestamp_ns // 1000)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_rfc3339(text: str) -> int:
    """Nanoseconds since the epoch from a JSONL `timestamp`."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def _plain(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, bytes):
        return value.hex()
    return value


def to_otel_json(record: ReadableLogRecord) -> dict[str, Any]:
    """The core JSONL object for one SDK log record."""
    log = record.log_record
    attributes: Mapping[str, Any] = log.attributes or {}
    return {
        "timestamp": rfc3339(log.timestamp or log.observed_timestamp or 0),
        "event_name": log.event_name or "",
        "severity_text": log.severity_text or "",
        "trace_id": f"{log.trace_id:032x}" if log.trace_id else "",
        "span_id": f"{log.span_id:016x}" if log.span_id else "",
        "attributes": {key: _plain(value) for key, value in attributes.items()},
        "resource": {key: _plain(value) for key, value in record.resource.attributes.items()},
    }


Formatter = Callable[[dict[str, Any]], Any]


class JsonlExporter(LogRecordExporter):
    """Appends milvus-audit records to a file, one JSON line each, thread-safely."""

    def __init__(self, path: str | Path, formatter: Formatter | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] = self.path.open("a", encoding="utf-8")
        self._formatter = formatter
        self._lock = threading.Lock()
        self.exported = 0  # records handed to `export`, kept or not: how far the writer got

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        self.exported += len(batch)  # one export at a time: the batch processor holds its export lock
        lines = []
        for record in batch:
            if not (record.log_record.event_name or "").startswith(EVENT_PREFIX):
                continue
            obj: Any = to_otel_json(record)
            if self._formatter is not None:
                obj = self._formatter(obj)
            text = obj if isinstance(obj, str) else json.dumps(obj, separators=(",", ":"), default=str)
            lines.append(text + "\n")
        with self._lock:
            if self._file.closed:
                return LogRecordExportResult.FAILURE
            self._file.write("".join(lines))
            self._file.flush()
        return LogRecordExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        with self._lock:
            if not self._file.closed:
                self._file.flush()
        return True

    def shutdown(self) -> None:
        with self._lock:
            self._file.close()


class JsonlProcessor(LogRecordProcessor):
    """The SDK's batch processor in front of the file, without its drops.

    The SDK's batch processor drops records when its queue is full, and a writer thread
    starved of the GIL by busy application threads is enough to fill it. A local file can
    always be written, so once `max_pending` records wait, the emitting thread writes them
    itself (back-pressure) and nothing is lost.
    """

    def __init__(self, exporter: JsonlExporter, max_pending: int = 4096) -> None:
        self._exporter = exporter
        self._batch = BatchLogRecordProcessor(exporter, max_queue_size=2 * max_pending,
                                              max_export_batch_size=min(512, max_pending))
        self._emitted = itertools.count(1)  # next() is atomic: threads may emit at once
        self._max_pending = max_pending

    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        self._batch.on_emit(log_record)
        if next(self._emitted) - self._exporter.exported >= self._max_pending:
            self._batch.force_flush()  # exports on this thread, under the processor's export lock

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._batch.force_flush(timeout_millis)

    def shutdown(self) -> None:
        self._batch.shutdown()  # type: ignore[no-untyped-call]  # the SDK leaves it untyped


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Parse a JSONL audit file; a bad line raises naming the file and line."""
    records = []
    with Path(path).open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not a JSON audit record: {exc.msg}") from exc
    return records
