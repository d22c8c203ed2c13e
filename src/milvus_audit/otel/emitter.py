"""The OpenTelemetry sink: one span, one log record and two histograms per call.

The span is derived from the record (see `spans.py`); the metrics are recorded off the
calling thread (see `background.py`)."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from opentelemetry import _logs, metrics, trace
from opentelemetry._logs import SeverityNumber
from opentelemetry.context import Context, get_current
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from milvus_audit._version import __version__
from milvus_audit.export.jsonl import JsonlProcessor
from milvus_audit.export.spool import SpoolProcessor
from milvus_audit.integrity.chain import (
    EMPTY_RESOURCE,
    Chain,
    Sequence,
    canonical_resource,
    chain_for,
    integrity_key,
    load_signing_key,
    sequence_for,
)
from milvus_audit.model.record import AuditEvent
from milvus_audit.otel.spans import CallSpan, DerivedSpans, spans_for
from milvus_audit.runtime.worker import BACKGROUND
from milvus_audit.semconv import RETENTION_EVENT

if TYPE_CHECKING:
    from milvus_audit.config import AuditConfig
    from milvus_audit.model.failures import Failure

SCOPE = "milvus_audit"
_DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0)
_ROW_BUCKETS = (1, 10, 100, 1000, 10_000, 100_000, 1_000_000)
# The span carries the semantic-convention core; the log record carries everything.
# Each attribute costs validation in the SDK, so the span stays small.
SPAN_KEYS = ("db.system.name", "db.operation.name", "db.collection.name", "db.namespace",
             "server.address", "server.port", "user.name", "enduser.id")
SPAN_END_KEYS = ("milvus_audit.outcome", "milvus_audit.failure_reason", "error.type", "db.response.status_code")
_METRIC_KEYS = ("db.system.name", "db.operation.name", "db.collection.name", "error.type")
_MAX_CACHED_METRIC_SETS = 4096

# What a checkpoint (which belongs to no call) is emitted under: no span, so no trace ids.
_NO_TRACE = trace.set_span_in_context(trace.INVALID_SPAN)
_SURROGATES = re.compile("[\ud800-\udfff]")

SEVERITY = {
    "INFO": SeverityNumber.INFO,
    "WARN": SeverityNumber.WARN,
    "ERROR": SeverityNumber.ERROR,
    "FATAL": SeverityNumber.FATAL,
}


class OTelEmitter:
    """Creates spans and emits log records and metrics for audit events."""

    def __init__(self, config: AuditConfig) -> None:
        self._clock = config.clock
        self._tracer_provider = config.tracer_provider
        self._logger_provider = config.logger_provider
        self.tracer = trace.get_tracer(SCOPE, __version__, tracer_provider=config.tracer_provider)
        self.spans = spans_for(self.tracer, InstrumentationScope(SCOPE, __version__))
        self._sdk_tracer = isinstance(self.spans, DerivedSpans)
        self.logger = _logs.get_logger(SCOPE, __version__, logger_provider=config.logger_provider)
        meter = metrics.get_meter(SCOPE, __version__, meter_provider=config.meter_provider)
        self.duration = meter.create_histogram(
            "db.client.operation.duration", unit="s",
            description="Duration of Milvus client operations.",
            explicit_bucket_boundaries_advisory=list(_DURATION_BUCKETS),
        )
        self.returned_rows = meter.create_histogram(
            "db.response.returned_rows", unit="{row}",
            description="Rows or hits returned by Milvus reads.",
            explicit_bucket_boundaries_advisory=list(_ROW_BUCKETS),
        )
        self._metric_sets: dict[tuple[Any, ...], dict[str, Any]] = {}
        key = integrity_key(config.integrity_key)
        self.chain: Chain | None = None
        self.sequence: Sequence | None = None
        destination = config.logger_provider or _logs.get_logger_provider()
        if key is not None:
            self.chain = chain_for(key, load_signing_key(config.signing_key), destination,
                                   checkpoint_every=config.checkpoint_every,
                                   checkpoint_interval_s=config.checkpoint_interval_s)
        elif config.durable_spools or _spooled(destination):
            self.sequence = sequence_for(destination)  # spooled without a key: still (stream, seq) ids
        self._resource: object = None
        self._resource_bytes = EMPTY_RESOURCE
        self.refusals = meter.create_counter("milvus_audit.audit_unavailable", unit="{call}",
                                             description="Calls refused in fail-closed mode.")
        self.alerts = meter.create_counter("milvus_audit.alerts", unit="{alert}",
                                           description="Alerts raised by in-process detection.")
        _claim_retention(destination, self)

    def record_retention(self, attributes: dict[str, Any]) -> None:
        """A rotated JSONL file deleted by retention: recorded (and chained) as `milvus.audit.retention`,
        from the background worker (never from the writer that deleted it, which holds its lock)."""
        BACKGROUND.submit(self.emit_record, RETENTION_EVENT, "INFO", attributes)

    def now_ns(self) -> int:
        clock = self._clock
        return time.time_ns() if clock is None else int(clock() * 1e9)

    def count_refusal(self, operation: str) -> None:
        self.refusals.add(1, {"db.operation.name": operation})

    def count_alert(self, rule: str, severity: str) -> None:
        self.alerts.add(1, {"milvus_audit.alert.rule": rule, "milvus_audit.alert.severity": severity})

    def listening(self) -> bool:
        """False only when neither a tracer nor a logger would record anything."""
        if self._sdk_tracer or self.logger.enabled():  # an SDK tracer records spans: no need to ask
            return True
        provider = self._tracer_provider or trace.get_tracer_provider()
        return not isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider))

    def start_span(self, operation: str, attributes: dict[str, Any], parent: Context) -> CallSpan:
        """The call's span; `attributes` already valid UTF-8 (`valid_utf8`, which the auditor runs)."""
        collection = attributes.get("db.collection.name")
        name = f"{operation} {collection}" if collection else operation
        core = {key: attributes[key] for key in SPAN_KEYS if key in attributes}
        return self.spans.start(name, core, parent)

    def finish_span(self, span: CallSpan, end: dict[str, Any], failure: Failure | None,
                    start_ns: int, end_ns: int) -> None:
        end_attributes = {key: end[key] for key in SPAN_END_KEYS if key in end}
        message = end.get("milvus_audit.error.message") if failure is not None else None
        self.spans.end(span, end_attributes, failure is not None, message, start_ns, end_ns)

    def emit(self, event: AuditEvent, context: Context | None, duration_s: float | None) -> None:
        """Emit a call's log record and queue its metrics. Its attributes are valid UTF-8
        already: the auditor checks them as it builds them (`valid_utf8`)."""
        attributes = event.attributes
        severity = "WARN" if event.failed else "INFO"
        self.emit_record(event.event_name, severity, attributes, event.timestamp_ns, context, checked=True)
        if duration_s is not None:
            BACKGROUND.submit(self._record_metrics, duration_s, attributes)

    def _record_metrics(self, duration_s: float, attributes: dict[str, Any]) -> None:
        """Runs on the background thread (see `background.py`)."""
        metric_attributes = self._metric_attributes(attributes)
        self.duration.record(duration_s, metric_attributes)
        rows = attributes.get("db.response.returned_rows")
        if rows is not None:
            self.returned_rows.record(rows, metric_attributes)

    def emit_record(self, event_name: str, severity: str, attributes: dict[str, Any],
                    timestamp_ns: int | None = None, context: Context | None = None, checked: bool = False) -> None:
        """Emit one record (a call's, an alert's, a response's); with an integrity key, sealed
        into the chain first. Without a timestamp it is stamped now, by the configured clock.

        String values are made valid UTF-8 first (unless `checked`), in place: every sink (the
        OTLP encoder, the files, detection, which gets this same dict) then sees the same values."""
        if timestamp_ns is None:
            timestamp_ns = self.now_ns()
        if not checked:
            valid_utf8(attributes)
        chain = self.chain
        if chain is not None:
            if not context:  # as the SDK does: the current context
                context = get_current()
            span = trace.get_current_span(context).get_span_context()
            trace_id = f"{span.trace_id:032x}" if span.trace_id else ""
            span_id = f"{span.span_id:016x}" if span.span_id else ""
            chain.seal_and_emit(event_name, severity, attributes, timestamp_ns, self._emit_sealed, context,
                                trace_id=trace_id, span_id=span_id, resource=self._resource_now())
            return
        if self.sequence is not None:
            self.sequence.number(attributes)
        self._emit_raw(event_name, severity, attributes, timestamp_ns, context)

    def _resource_now(self) -> bytes:
        """The canonical resource of the provider records go to (encoded once per resource)."""
        provider = self._logger_provider or _logs.get_logger_provider()
        resource = getattr(provider, "resource", None)
        if resource is not self._resource:
            attributes = getattr(resource, "attributes", None)
            self._resource_bytes = canonical_resource(attributes if isinstance(attributes, Mapping) else {})
            self._resource = resource
        return self._resource_bytes

    def _emit_sealed(self, event_name: str, severity: str, attributes: dict[str, Any],
                     timestamp_ns: int, context: Context | None) -> None:
        """For the chain: its records come with their context resolved; its checkpoints with
        None, which here means no trace (the ids the chain sealed for them are "")."""
        self._emit_raw(event_name, severity, attributes, timestamp_ns, _NO_TRACE if context is None else context)

    def _emit_raw(self, event_name: str, severity: str, attributes: dict[str, Any],
                  timestamp_ns: int, context: Context | None) -> None:
        self.logger.emit(
            timestamp=timestamp_ns,
            context=context,
            severity_number=SEVERITY[severity],
            severity_text=severity,
            attributes=attributes,
            event_name=event_name,
        )

    def _metric_attributes(self, attributes: dict[str, Any]) -> dict[str, Any]:
        key = tuple(attributes.get(k) for k in _METRIC_KEYS)
        cached = self._metric_sets.get(key)
        if cached is None:
            cached = {k: v for k, v in zip(_METRIC_KEYS, key, strict=True) if v is not None}
            if len(self._metric_sets) < _MAX_CACHED_METRIC_SETS:
                self._metric_sets[key] = cached
        return cached


def _valid(text: str) -> str:
    if text.isascii():
        return text
    try:
        text.encode()
    except UnicodeEncodeError:  # lone surrogates, the only code points UTF-8 cannot carry
        return _SURROGATES.sub("\ufffd", text)
    return text


def _valid_sequence(values: Any) -> Any:
    cleaned = [_valid(v) if type(v) is str else _valid_sequence(v) if isinstance(v, (list, tuple)) else v
               for v in values]
    if all(a is b for a, b in zip(cleaned, values, strict=True)):
        return values
    return tuple(cleaned) if isinstance(values, tuple) else cleaned


def valid_utf8(attributes: dict[str, Any]) -> None:
    """Replace what UTF-8 cannot encode (lone surrogates) with U+FFFD, in place, in string
    values and in strings inside list and tuple values. ASCII, the usual case, costs one
    `isascii()` per string."""
    for key, value in attributes.items():
        if type(value) is str:
            if not value.isascii():
                cleaned = _valid(value)
                if cleaned is not value:
                    attributes[key] = cleaned
        elif isinstance(value, (list, tuple)):
            cleaned = _valid_sequence(value)
            if cleaned is not value:
                attributes[key] = cleaned


def _claim_retention(provider: object, emitter: OTelEmitter) -> None:
    """The first emitter of a destination records the deletions of its JSONL files' retention."""
    processor = getattr(provider, "_multi_log_record_processor", None)
    for child in getattr(processor, "_log_record_processors", ()):
        if isinstance(child, JsonlProcessor) and child.exporter.on_retention is None:
            child.exporter.on_retention = emitter.record_retention
            pending, child.exporter.pending_retention = child.exporter.pending_retention, []
            for attributes in pending:
                emitter.record_retention(attributes)


def _spooled(provider: object) -> bool:
    """Whether a logger provider delivers through a durable spool (decided once, at construction)."""
    processor = getattr(provider, "_multi_log_record_processor", None)
    return any(isinstance(child, SpoolProcessor) for child in getattr(processor, "_log_record_processors", ()))
