"""Readable one-line rendering of audit records, for `configure(console=True)`."""

from __future__ import annotations

import sys
import threading
from collections.abc import Sequence
from typing import IO, Any

from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult

from milvus_audit.export.jsonl import EVENT_PREFIX, rfc3339

_SHOWN = (
    ("db.collection.name", "collection"),
    ("user.name", "user"),
    ("enduser.id", "enduser"),
    ("milvus_audit.target.user", "target_user"),
    ("milvus_audit.target.role", "target_role"),
    ("milvus_audit.privilege", "privilege"),
    ("db.query.text", "filter"),
    ("db.milvus.nq", "nq"),
    ("db.milvus.limit", "limit"),
    ("db.operation.batch.size", "batch"),
    ("db.response.returned_rows", "rows"),
    ("milvus_audit.failure_reason", "reason"),
    ("error.type", "error"),
    ("milvus_audit.missing_privilege", "missing"),
    ("milvus_audit.alert.rule", "rule"),
    ("milvus_audit.alert.summary", "summary"),
    ("milvus_audit.response.action", "action"),
    ("milvus_audit.response.target", "target"),
    ("milvus_audit.response.outcome", "outcome"),
    ("milvus_audit.response.dry_run", "dry_run"),
)


def render(timestamp: str, event_name: str, severity: str, attributes: dict[str, Any]) -> str:
    operation = attributes.get("db.operation.name") or attributes.get("milvus_audit.alert.rule") or ""
    parts = [timestamp[11:23], f"{severity:<5}", event_name, str(operation)]
    outcome = attributes.get("milvus_audit.outcome")
    if outcome:
        parts.append(outcome)
    parts.extend(f"{label}={attributes[key]!r}" if isinstance(attributes[key], str) and " " in attributes[key]
                 else f"{label}={attributes[key]}" for key, label in _SHOWN if key in attributes)
    duration = attributes.get("milvus_audit.duration_ms")
    if duration is not None:
        parts.append(f"{duration:.2f}ms")
    return " ".join(parts)


class ConsoleExporter(LogRecordExporter):
    """Prints milvus-audit records readably, one per line."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        stream = self._stream or sys.stdout
        with self._lock:
            for record in batch:
                log = record.log_record
                if not (log.event_name or "").startswith(EVENT_PREFIX):
                    continue
                line = render(rfc3339(log.timestamp or 0), log.event_name or "",
                              log.severity_text or "", dict(log.attributes or {}))
                stream.write(line + "\n")
            stream.flush()
        return LogRecordExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True

    def shutdown(self) -> None:
        pass
