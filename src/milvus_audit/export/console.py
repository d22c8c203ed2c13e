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


# What a terminal or a log viewer would act on instead of showing: C0 and C1 controls and
# DEL (newline, carriage return and ESC forge lines or hide text with `ESC[8m`), the line
# and paragraph separators, the bidi marks, embeddings, overrides and isolates (which
# reorder what is shown), and lone surrogates (which no terminal encoding can write). The
# backslash is escaped too, so an escape is never ambiguous.
_NAMED = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_ESCAPES: dict[int, str] = {
    **{code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7F, 0xA0))},
    **{code: f"\\u{code:04x}" for code in (0x061C, 0x200E, 0x200F, 0x2028, 0x2029, *range(0x202A, 0x202F),
                                            *range(0x2066, 0x206A), *range(0xD800, 0xE000))},
    **{ord(char): escaped for char, escaped in _NAMED.items()},
}


def printable(value: object) -> str:
    """`value` as text that cannot forge, hide or reorder what a terminal shows: every
    control character, DEL, U+2028/U+2029, bidi control and lone surrogate becomes a visible escape
    (`\\n`, `\\x1b`, `\\u202e`), and a backslash becomes `\\\\`. Linear time; use it for
    every human-readable output of values that came from outside."""
    return str(value).translate(_ESCAPES)


def _shown(value: Any) -> str:
    text = printable(value)
    if isinstance(value, str) and (" " in text or not text):
        return "'" + text.replace("'", "\\'") + "'"
    return text


def render(timestamp: str, event_name: str, severity: str, attributes: dict[str, Any]) -> str:
    operation = attributes.get("db.operation.name") or attributes.get("milvus_audit.alert.rule") or ""
    parts = [printable(timestamp[11:23]), f"{printable(severity):<5}", printable(event_name), printable(operation)]
    outcome = attributes.get("milvus_audit.outcome")
    if outcome:
        parts.append(printable(outcome))
    parts.extend(f"{label}={_shown(attributes[key])}" for key, label in _SHOWN if key in attributes)
    duration = attributes.get("milvus_audit.duration_ms")
    if isinstance(duration, (int, float)):
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
