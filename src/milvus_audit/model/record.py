"""`AuditEvent`: one audit record as every sink sees it, the same attributes that are exported."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class AuditEvent:
    """One record: a call's `milvus.audit`, or an alert, response or checkpoint."""

    __slots__ = ("attributes", "event_name", "failed", "span_id", "timestamp_ns", "trace_id")

    def __init__(self, event_name: str, timestamp_ns: int, attributes: dict[str, Any],
                 trace_id: int = 0, span_id: int = 0, failed: bool = False) -> None:
        self.event_name = event_name
        self.timestamp_ns = timestamp_ns
        self.attributes = attributes
        self.trace_id = trace_id
        self.span_id = span_id
        self.failed = failed


Sink = Callable[[AuditEvent], object]


def event_id(trace_id: int | str, span_id: int | str) -> str:
    """`trace:span` in hex: how alerts name the events that raised them."""
    if isinstance(trace_id, int):
        return f"{trace_id:032x}:{span_id:016x}" if trace_id else ""
    return f"{trace_id}:{span_id}" if trace_id else ""
