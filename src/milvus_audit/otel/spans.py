"""The span of each audited call, derived from the audit record instead of built live.

A live SDK span validates its attributes when it starts, again when they are set, locks
on every change and is copied into a `ReadableSpan` when it ends. The audit record
already holds everything the span needs, and the call's start and end times are known
when it finishes, so with the SDK's tracer the span is built once, finished, as the
`ReadableSpan` the SDK itself hands to span processors, and given to the tracer's span
processor. Ids, parent, sampling and trace flags follow the SDK tracer's own rules, so
the span is indistinguishable from a live one to processors and exporters.

What is not reproduced: processors' `on_start` (the span exists only once finished),
span limits (the span carries at most a dozen short identifiers) and the experimental
per-tracer configurator. Any other tracer gets live spans (`LiveSpans`).
"""

from __future__ import annotations

from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace import Tracer as SdkTracer
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, Decision, ParentBased
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags

_UNSET = Status(StatusCode.UNSET)
_RANDOM_TRACE_ID = int(getattr(TraceFlags, "RANDOM_TRACE_ID", 0))
_DEFAULT_SAMPLER = ParentBased(ALWAYS_ON).get_description()  # type: ignore[no-untyped-call]


class CallSpan:
    """The span of a call in flight: the ids that its log record and child spans see."""

    __slots__ = ("attributes", "context", "live", "name", "parent")

    def __init__(self, name: str, context: SpanContext, parent: SpanContext | None,
                 attributes: dict[str, Any] | None = None, live: trace.Span | None = None) -> None:
        self.name = name
        self.context = context
        self.parent = parent
        self.attributes = attributes  # of a derived span; None when it is not recorded
        self.live = live

    def span(self) -> trace.Span:
        """What to put in the call's context: the live span, or its ids."""
        return self.live if self.live is not None else NonRecordingSpan(self.context)


class DerivedSpans:
    """Spans of the SDK's tracer, built finished from the audit record (see the module doc)."""

    def __init__(self, tracer: SdkTracer, scope: InstrumentationScope) -> None:
        self.tracer = tracer
        self.scope = scope
        # The SDK's default sampler is evaluated inline: same decision, a call less per span.
        sampler = tracer.sampler
        self._default_sampler = sampler if sampler.get_description() == _DEFAULT_SAMPLER else None

    def start(self, name: str, attributes: dict[str, Any], parent_context: Context) -> CallSpan:
        tracer = self.tracer
        parent: SpanContext | None = trace.get_current_span(parent_context).get_span_context()
        if parent is None or not parent.is_valid:
            parent = None
            trace_id = tracer.id_generator.generate_trace_id()
            random_trace_id = tracer.id_generator.is_trace_id_random()
        else:
            trace_id = parent.trace_id
            random_trace_id = bool(parent.trace_flags & _RANDOM_TRACE_ID)
        if tracer.sampler is self._default_sampler:
            sampled = parent is None or parent.trace_flags.sampled
            recorded, trace_state = sampled, parent.trace_state if parent is not None else None
        else:
            sampling = tracer.sampler.should_sample(parent_context, trace_id, name, SpanKind.CLIENT, attributes)
            sampled = sampling.decision is Decision.RECORD_AND_SAMPLE
            recorded, trace_state = sampling.decision is not Decision.DROP, sampling.trace_state
            if recorded and sampling.attributes:
                attributes = {**sampling.attributes, **attributes}
        flags = TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT
        if random_trace_id:
            flags |= _RANDOM_TRACE_ID
        context = SpanContext(trace_id, tracer.id_generator.generate_span_id(), is_remote=False,
                              trace_flags=TraceFlags(flags), trace_state=trace_state)
        return CallSpan(name, context, parent, attributes if recorded else None)

    def end(self, span: CallSpan, end_attributes: dict[str, Any], failed: bool, message: str | None,
            start_ns: int, end_ns: int) -> None:
        attributes = span.attributes
        if attributes is None:
            return
        attributes.update(end_attributes)
        self.tracer.span_processor.on_end(ReadableSpan(
            span.name, span.context, span.parent, resource=self.tracer.resource, attributes=attributes,
            kind=SpanKind.CLIENT, status=Status(StatusCode.ERROR, message) if failed else _UNSET,
            start_time=start_ns, end_time=end_ns, instrumentation_scope=self.scope,
        ))


class LiveSpans:
    """Spans of any other tracer (an API-only one, a vendor's SDK), started and ended live."""

    def __init__(self, tracer: trace.Tracer) -> None:
        self.tracer = tracer

    def start(self, name: str, attributes: dict[str, Any], parent_context: Context) -> CallSpan:
        live = self.tracer.start_span(name, context=parent_context, kind=SpanKind.CLIENT, attributes=attributes)
        parent = trace.get_current_span(parent_context).get_span_context()
        return CallSpan(name, live.get_span_context(), parent if parent.is_valid else None, live=live)

    def end(self, span: CallSpan, end_attributes: dict[str, Any], failed: bool, message: str | None,
            start_ns: int, end_ns: int) -> None:
        live = span.live
        assert live is not None
        if live.is_recording():
            live.set_attributes(end_attributes)
            if failed:
                live.set_status(Status(StatusCode.ERROR, message))
            live.end()


def spans_for(tracer: trace.Tracer, scope: InstrumentationScope) -> DerivedSpans | LiveSpans:
    return DerivedSpans(tracer, scope) if isinstance(tracer, SdkTracer) else LiveSpans(tracer)
