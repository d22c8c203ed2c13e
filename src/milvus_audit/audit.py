"""The audit path of one call: begin (attributes, span) and finish (outcome, record, sinks).

call → proxy → catalog lookup (a precompiled `CallPlan`) → `AuditEvent` → sinks.
The OpenTelemetry emitter is always a sink; detection, response and the spool add
theirs. Nothing here may break the application: every error inside auditing is
contained, counted and logged once.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable
from contextvars import Token
from dataclasses import dataclass
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context

from milvus_audit import errors
from milvus_audit.config import AuditConfig
from milvus_audit.connection import ConnectionInfo
from milvus_audit.context import _ENDUSER
from milvus_audit.exceptions import AccessBlocked, AuditUnavailable
from milvus_audit.extract import CallPlan, filter_attribute
from milvus_audit.otel import OTelEmitter
from milvus_audit.respond.blocks import BlockList
from milvus_audit.sanitize import scrub_message
from milvus_audit.spans import CallSpan
from milvus_audit.spool import active_spools

log = logging.getLogger("milvus_audit")

AUDIT_EVENT = "milvus.audit"

# Set while an instrumented pymilvus call runs: calls it makes on itself (create_collection
# calls create_index) are part of it, not records of their own.
IN_AUDITED_CALL: contextvars.ContextVar[bool] = contextvars.ContextVar("milvus_audit_in_call", default=False)


def flagged(flag: contextvars.ContextVar[bool], function: Callable[..., Any]) -> Callable[..., Any]:
    """`function`, run with `flag` set: how nested pymilvus calls know what they are part of."""
    def call(*args: Any, **kwargs: Any) -> Any:
        token = flag.set(True)
        try:
            return function(*args, **kwargs)
        finally:
            flag.reset(token)
    return call


class _InternalErrors:
    """Errors inside auditing: counted, logged once at WARNING, never raised."""

    def __init__(self) -> None:
        self.count = 0
        self._warned = False
        self._lock = threading.Lock()

    def report(self, where: str, exc: BaseException) -> None:
        with self._lock:
            self.count += 1
            first = not self._warned
            self._warned = True
        if first:
            log.warning("milvus-audit: error inside auditing (%s), call unaffected: %r", where, exc,
                        exc_info=exc)


INTERNAL_ERRORS = _InternalErrors()


def internal_error_count() -> int:
    """How many errors inside auditing were contained since the process started."""
    return INTERNAL_ERRORS.count


class AuditEvent:
    """One audit record as the sinks see it: the same attributes that are exported."""

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


@dataclass(slots=True)
class Call:
    """A call in flight."""

    plan: CallPlan
    attributes: dict[str, Any]
    span: CallSpan
    context: Context
    token: Token[Context]
    filter_text: str | None
    start: float
    timestamp_ns: int
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


class Auditor:
    """Audits the calls of one client; shared by its sessions and iterators."""

    def __init__(self, config: AuditConfig, connection: ConnectionInfo) -> None:
        self.config = config
        self.connection_attributes = dict(connection.attributes)
        self.secrets = connection.secrets
        self.emitter = OTelEmitter(config)
        self.sinks: list[Sink] = []
        self.blocks: BlockList | None = None  # set when playbooks can block principals
        self.fail_closed = config.fail_closed
        self.filter_policy = config.capture_filters
        self._raw = config.capture_filters == "raw"
        self._database_lock = threading.Lock()

    def now_ns(self) -> int:
        clock = self.config.clock
        return time.time_ns() if clock is None else int(clock() * 1e9)

    def emit_record(self, event_name: str, severity: str, attributes: dict[str, Any],
                    timestamp_ns: int | None = None) -> None:
        """Emit a non-call record (alert, response) through this client's pipeline."""
        self.emitter.emit_record(event_name, severity, attributes,
                                 self.now_ns() if timestamp_ns is None else timestamp_ns)

    # -- state -------------------------------------------------------------------------
    def set_database(self, name: str) -> None:
        with self._database_lock:
            attributes = dict(self.connection_attributes)
            if name:
                attributes["db.namespace"] = name
            else:
                attributes.pop("db.namespace", None)
            self.connection_attributes = attributes

    def listening(self) -> bool:
        return bool(self.sinks) or self.emitter.listening()

    # -- the call path -----------------------------------------------------------------
    def refuse_unless_durable(self, plan: CallPlan, args: tuple[Any, ...], kwargs: dict[str, Any],
                              extra: dict[str, Any] | None) -> None:
        """Fail-closed mode: refuse the call before it reaches Milvus if its record cannot be kept."""
        spools = self.config.durable_spools
        if spools is None:
            spools = active_spools()
        if spools and all(spool.healthy() for spool in spools):
            return
        self.emitter.count_refusal(plan.operation.name)
        why = "no durable spool is configured" if not spools else "the audit spool cannot take records"
        refusal = AuditUnavailable(f"milvus-audit fail-closed: {why}; {plan.operation.name} was not sent")
        call = self.begin(plan, args, kwargs, extra)
        if call is not None:
            self.finish(call, None, refusal)
        raise refusal

    def refuse_if_blocked(self, plan: CallPlan, args: tuple[Any, ...], kwargs: dict[str, Any],
                          extra: dict[str, Any] | None) -> None:
        """Raise `AccessBlocked` (and audit the refusal) if a playbook blocked this principal."""
        assert self.blocks is not None
        enduser = _ENDUSER.get()
        who = {**self.connection_attributes, **enduser} if enduser else self.connection_attributes
        entry = self.blocks.blocking(who)
        if entry is None:
            return
        refusal = AccessBlocked(
            f"milvus-audit blocked {entry.scope} {entry.principal!r} until {entry.until:.0f} "
            f"(rule {entry.rule}, alert {entry.alert_id})",
            scope=entry.scope, principal=entry.principal, until=entry.until)
        call = self.begin(plan, args, kwargs, extra)
        if call is not None:
            self.finish(call, None, refusal)
        raise refusal

    def begin(self, plan: CallPlan, args: tuple[Any, ...], kwargs: dict[str, Any],
              extra: dict[str, Any] | None = None) -> Call | None:
        try:
            if not self.listening():
                return None
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
            return Call(plan, attributes, span, context, token, filter_text, time.perf_counter(),
                        self.now_ns(), args, kwargs)
        except Exception as exc:
            INTERNAL_ERRORS.report("begin " + plan.operation.name, exc)
            return None

    def request_attributes(self, plan: CallPlan, args: tuple[Any, ...], kwargs: dict[str, Any],
                           attributes: dict[str, Any]) -> str | None:
        """Add the call's request attributes, the filter shaped by policy; return the raw filter."""
        filter_text = plan.request_attributes(args, kwargs, attributes)
        if filter_text is not None:
            shaped = filter_attribute(filter_text, self.filter_policy)
            if shaped is not None:
                attributes["db.query.text"] = shaped
        return filter_text

    def finish(self, call: Call, result: Any, exc: BaseException | None,
               measure: tuple[str, Callable[[Any], int | None]] | None = None) -> None:
        try:
            duration = time.perf_counter() - call.start
            otel_context.detach(call.token)
            end: dict[str, Any] = {"milvus_audit.duration_ms": duration * 1000.0}
            failure = None
            if exc is None:
                end["milvus_audit.outcome"] = "success"
                measure = measure or call.plan.result_measure
                if measure is not None:
                    value = measure[1](result)
                    if value is not None:
                        end[measure[0]] = value
            else:
                failure = errors.classify(exc)
                end["milvus_audit.outcome"] = "failure"
                end["milvus_audit.failure_reason"] = failure.reason
                end["error.type"] = failure.error_type
                end["db.response.status_code"] = failure.status_code
                if failure.missing_privilege:
                    end["milvus_audit.missing_privilege"] = failure.missing_privilege
                if failure.message:
                    end["milvus_audit.error.message"] = self.scrub(call, failure.message)
            attributes = call.attributes
            attributes.update(end)
            self.emitter.finish_span(call.span, end, failure, call.timestamp_ns,
                                     call.timestamp_ns + int(duration * 1e9))
            span_context = call.span.context
            event = AuditEvent(AUDIT_EVENT, call.timestamp_ns, attributes,
                               span_context.trace_id, span_context.span_id, exc is not None)
            self.emitter.emit(event, call.context, duration)
            for sink in self.sinks:
                sink(event)
        except Exception as internal:
            INTERNAL_ERRORS.report("finish " + call.plan.operation.name, internal)

    def scrub(self, call: Call, message: str) -> str:
        secrets = list(self.secrets)
        secrets.extend(call.plan.secrets_in(call.args, call.kwargs))
        return scrub_message(message, filter_text=call.filter_text, secrets=secrets,
                             raw_filters=self._raw)

    def record(self, plan: CallPlan, args: tuple[Any, ...], kwargs: dict[str, Any],
               exc: BaseException | None, extra: dict[str, Any] | None = None) -> None:
        """Audit something that already happened (e.g. a connect attempt)."""
        call = self.begin(plan, args, kwargs, extra)
        if call is not None:
            self.finish(call, None, exc)
