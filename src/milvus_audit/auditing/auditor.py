"""The one call path: gates, then begin (attributes, span), the call, then finish (outcome, record, sinks).

Every audited call, whatever made it (a proxy method sync or async, a connect, a session,
an iterator page, an ORM call, an instrumented pymilvus class), runs as

    with auditor.call(plan, args, kwargs, extra) as call:
        result = call.returned(function(*args, **kwargs))

`call()` runs the runtime's gates first; a gate's refusal is audited as a failed call and
raised before anything reaches Milvus. Nothing else here may break the application:
every error inside auditing is contained and counted (`runtime.diagnostics`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextvars import Token
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context

from milvus_audit import semconv
from milvus_audit.auditing.gates import BlockList, Gate
from milvus_audit.config import AuditConfig
from milvus_audit.model import failures
from milvus_audit.model.identity import ConnectionInfo
from milvus_audit.model.plan import CallPlan, Measure, filter_attribute
from milvus_audit.model.record import AuditEvent, Sink
from milvus_audit.model.sanitize import scrub_message
from milvus_audit.otel.emitter import OTelEmitter
from milvus_audit.otel.spans import CallSpan
from milvus_audit.runtime.context import _ENDUSER
from milvus_audit.runtime.diagnostics import INTERNAL_ERRORS


@dataclass
class AuditRuntime:
    """What one `AuditConfig` runs, built once by `wiring` and shared by every client of it."""

    config: AuditConfig
    emitter: OTelEmitter
    gates: tuple[Gate, ...] = ()
    sinks: list[Sink] = field(default_factory=list)
    blocks: BlockList | None = None
    # The response side, for operators and tests (a `milvus_audit.respond.Responder`).
    responder: Any = None


class Call:
    """A call in flight; a context manager whose exit finishes its record."""

    __slots__ = ("args", "attributes", "auditor", "context", "filter_text", "kwargs", "measure", "plan",
                 "result", "span", "start", "timestamp_ns", "token")

    def __init__(self, auditor: Auditor, plan: CallPlan, attributes: dict[str, Any], span: CallSpan,
                 context: Context, token: Token[Context], filter_text: str | None, timestamp_ns: int,
                 args: tuple[Any, ...], kwargs: dict[str, Any], measure: Measure | None) -> None:
        self.auditor = auditor
        self.plan = plan
        self.attributes = attributes
        self.span = span
        self.context = context
        self.token = token
        self.filter_text = filter_text
        self.timestamp_ns = timestamp_ns
        self.args = args
        self.kwargs = kwargs
        self.measure = measure
        self.result: Any = None
        self.start = time.perf_counter()

    def __enter__(self) -> Call:
        return self

    def returned(self, result: Any) -> Any:
        """Note what the call returned (for its measures); return it unchanged."""
        self.result = result
        return result

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.auditor.finish(self, exc)


class _Unaudited:
    """The call path when nothing listens (or beginning failed): the call runs as it is."""

    __slots__ = ()

    def __enter__(self) -> _Unaudited:
        return self

    def returned(self, result: Any) -> Any:
        return result

    def __exit__(self, *exc_info: object) -> None:
        return None


UNAUDITED = _Unaudited()


class Auditor:
    """Audits the calls of one client (its connection), shared by its sessions and iterators."""

    def __init__(self, runtime: AuditRuntime, connection: ConnectionInfo) -> None:
        self.runtime = runtime
        self.config = runtime.config
        self.emitter = runtime.emitter
        self.gates = runtime.gates
        self.sinks = runtime.sinks
        self.connection_attributes = dict(connection.attributes)
        self.secrets = connection.secrets
        self.filter_policy = runtime.config.capture_filters
        self._raw = runtime.config.capture_filters == "raw"
        self._database_lock = threading.Lock()

    @property
    def blocks(self) -> BlockList | None:
        return self.runtime.blocks

    # -- state -------------------------------------------------------------------------
    def set_database(self, name: str) -> None:
        with self._database_lock:
            attributes = dict(self.connection_attributes)
            if name:
                attributes[semconv.DB_NAMESPACE] = name
            else:
                attributes.pop(semconv.DB_NAMESPACE, None)
            self.connection_attributes = attributes

    def listening(self) -> bool:
        return bool(self.sinks) or self.emitter.listening()

    # -- the call path -----------------------------------------------------------------
    def call(self, plan: CallPlan, args: tuple[Any, ...], kwargs: dict[str, Any],
             extra: dict[str, Any] | None = None, measure: Measure | None = None) -> Call | _Unaudited:
        """Run the gates (raising an audited refusal), then begin the call's record."""
        for gate in self.gates:
            refusal = gate.refusal(plan.operation.name, self.connection_attributes)
            if refusal is not None:
                with self.begin(plan, args, kwargs, extra, None) as refused:
                    refused.returned(None)
                    raise refusal
        return self.begin(plan, args, kwargs, extra, measure)

    def begin(self, plan: CallPlan, args: tuple[Any, ...], kwargs: dict[str, Any],
              extra: dict[str, Any] | None, measure: Measure | None) -> Call | _Unaudited:
        try:
            if not self.listening():
                return UNAUDITED
            attributes = {**self.connection_attributes, **plan.static_attributes}
            if extra:
                attributes.update(extra)
            filter_text = self.request_attributes(plan, args, kwargs, attributes)
            enduser = _ENDUSER.get()
            if enduser:
                attributes.update(enduser)
            parent = otel_context.get_current()
            span = self.emitter.start_span(plan.operation.name, attributes, parent)
            context = trace.set_span_in_context(span.span(), parent)
            token = otel_context.attach(context)
            return Call(self, plan, attributes, span, context, token, filter_text, self.emitter.now_ns(),
                        args, kwargs, measure or plan.result_measure)
        except Exception as exc:
            INTERNAL_ERRORS.report("begin " + plan.operation.name, exc)
            return UNAUDITED

    def request_attributes(self, plan: CallPlan, args: tuple[Any, ...], kwargs: dict[str, Any],
                           attributes: dict[str, Any]) -> str | None:
        """Add the call's request attributes, the filter shaped by policy; return the raw filter."""
        filter_text = plan.request_attributes(args, kwargs, attributes)
        if filter_text is not None:
            shaped = filter_attribute(filter_text, self.filter_policy)
            if shaped is not None:
                attributes[semconv.DB_QUERY_TEXT] = shaped
        return filter_text

    def finish(self, call: Call, exc: BaseException | None) -> None:
        try:
            duration = time.perf_counter() - call.start
            otel_context.detach(call.token)
            end: dict[str, Any] = {semconv.DURATION_MS: duration * 1000.0}
            failure = None
            if exc is None:
                end[semconv.OUTCOME] = semconv.SUCCESS
                measure = call.measure
                if measure is not None:
                    value = measure[1](call.result)
                    if value is not None:
                        end[measure[0]] = value
            else:
                failure = failures.classify(exc)
                end[semconv.OUTCOME] = semconv.FAILURE
                end[semconv.FAILURE_REASON] = failure.reason
                end[semconv.ERROR_TYPE] = failure.error_type
                end[semconv.DB_RESPONSE_STATUS_CODE] = failure.status_code
                if failure.missing_privilege:
                    end[semconv.MISSING_PRIVILEGE] = failure.missing_privilege
                if failure.message:
                    end[semconv.ERROR_MESSAGE] = self.scrub(call, failure.message)
            attributes = call.attributes
            attributes.update(end)
            self.emitter.finish_span(call.span, end, failure, call.timestamp_ns,
                                     call.timestamp_ns + int(duration * 1e9))
            span_context = call.span.context
            event = AuditEvent(semconv.AUDIT_EVENT, call.timestamp_ns, attributes,
                               span_context.trace_id, span_context.span_id, exc is not None)
            self.emitter.emit(event, call.context, duration)
            for sink in self.sinks:
                sink(event)
        except Exception as internal:
            INTERNAL_ERRORS.report("finish " + call.plan.operation.name, internal)

    def scrub(self, call: Call, message: str) -> str:
        secrets = list(self.secrets)
        secrets.extend(call.plan.secrets_in(call.args, call.kwargs))
        return scrub_message(message, filter_text=call.filter_text, secrets=secrets, raw_filters=self._raw,
                             carried=call.plan.data_in(call.args, call.kwargs))


def audited(auditor: Auditor, plan: CallPlan, function: Callable[..., Any], args: tuple[Any, ...],
            kwargs: dict[str, Any], extra: dict[str, Any] | None = None) -> Any:
    """`function(*args, **kwargs)` through the call path: the synchronous shorthand."""
    with auditor.call(plan, args, kwargs, extra) as call:
        return call.returned(function(*args, **kwargs))
