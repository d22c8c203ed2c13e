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

import random
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
from milvus_audit.auditing.policy import EMPTY, PolicyHolder
from milvus_audit.config import AuditConfig
from milvus_audit.model import failures
from milvus_audit.model.identity import ConnectionInfo
from milvus_audit.model.plan import CallPlan, Measure, filter_attribute
from milvus_audit.model.policy import EXCLUDE, RECORD, SAMPLE, OperationPolicy, Verdict, protected_failure
from milvus_audit.model.record import AuditEvent, Sink
from milvus_audit.model.sanitize import scrub_message
from milvus_audit.otel.emitter import OTelEmitter, valid_utf8
from milvus_audit.otel.spans import CallSpan
from milvus_audit.runtime.context import _ENDUSER
from milvus_audit.runtime.diagnostics import INTERNAL_ERRORS
from milvus_audit.runtime.worker import BACKGROUND


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
    # The fleet's shared state (a `milvus_audit.shared.SharedState`) with `AuditConfig(shared_state=...)`.
    shared: Any = None
    # The audit policy (`AuditConfig(policy=...)`, see auditing/policy.py); read on every call.
    policy: PolicyHolder = field(default_factory=lambda: PolicyHolder(EMPTY))


class Call:
    """A call in flight; a context manager whose exit finishes its record."""

    __slots__ = ("args", "attributes", "auditor", "context", "filter_text", "kwargs", "measure", "plan",
                 "result", "span", "start", "timestamp_ns", "token", "verdicts")

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
        # The policy's say: (record if it succeeds, sample rate or None, verdict if it fails); None: record.
        self.verdicts: tuple[bool, float | None, Verdict, Verdict] | None = None

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
NO_DROP: tuple[str, ...] = ()


class Unrecorded:
    """A call the policy does not record if it succeeds (excluded, or sampled out): decided
    before anything is built. It notes only when it started; its record is built after the
    fact if it fails and failures are recorded (or the failure is one never excluded), and
    detection gets its event from the background worker."""

    __slots__ = ("args", "auditor", "extra", "kwargs", "measure", "plan", "resolved", "result", "start",
                 "timestamp_ns")

    def __init__(self, auditor: Auditor, plan: CallPlan, args: tuple[Any, ...], kwargs: dict[str, Any],
                 extra: dict[str, Any] | None, measure: Measure | None, resolved: OperationPolicy) -> None:
        self.auditor = auditor
        self.plan = plan
        self.args = args
        self.kwargs = kwargs
        self.extra = extra
        self.measure = measure
        self.resolved = resolved  # the failure verdict is worked out only if the call fails
        self.result: Any = None
        self.timestamp_ns = 0  # set when needed, from the clock at exit less the duration
        self.start = time.perf_counter()

    def __enter__(self) -> Unrecorded:
        return self

    def returned(self, result: Any) -> Any:
        self.result = result
        return result

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        auditor = self.auditor
        if exc is None and not auditor.sinks:
            return  # an excluded success, nothing listens for it: done
        auditor.finish_unrecorded(self, exc)


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
        self.policy = runtime.policy

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
             extra: dict[str, Any] | None = None, measure: Measure | None = None) -> Call | Unrecorded | _Unaudited:
        """Run the gates (raising an audited refusal), then the policy's decision, then begin the call's record."""
        for gate in self.gates:
            refusal = gate.refusal(plan.operation.name, self.connection_attributes)
            if refusal is not None:  # a refused call is always recorded, whatever the policy
                with self.begin(plan, args, kwargs, extra, None) as refused:
                    refused.returned(None)
                    raise refusal
        policy = self.policy.policy
        if not policy.rules:
            return self.begin(plan, args, kwargs, extra, measure)
        try:
            operation = plan.operation
            resolved = policy.resolved.get(operation.name)
            if resolved is None or resolved.operation is not operation:
                resolved = policy.for_operation(operation)
            success = resolved.success
            if success is None:
                success = resolved.success_for(self.call_data(plan, args, kwargs, extra))
            action = success.action
            rate: float | None = None
            if action == SAMPLE:
                if random.random() < success.rate:
                    rate = success.rate
                    action = RECORD
                else:
                    action = EXCLUDE
            if action == EXCLUDE and not self.policy.spans_all:
                return Unrecorded(self, plan, args, kwargs, extra, measure, resolved)
            failure = resolved.failure or resolved.failure_for(self.call_data(plan, args, kwargs, extra))
        except Exception as exc:
            INTERNAL_ERRORS.report("policy " + plan.operation.name, exc)
            return self.begin(plan, args, kwargs, extra, measure)
        call = self.begin(plan, args, kwargs, extra, measure)
        if isinstance(call, Call) and (action != RECORD or rate is not None or success.drop
                                       or failure.action != RECORD or failure.drop):
            call.verdicts = (action == RECORD, rate, success, failure)
        return call

    def call_data(self, plan: CallPlan, args: tuple[Any, ...], kwargs: dict[str, Any],
                  extra: dict[str, Any] | None) -> dict[str, object]:
        """What the policy's data selectors read: database, collection, user, end user."""
        connection = self.connection_attributes
        collection = extra.get(semconv.DB_COLLECTION_NAME) if extra else None
        if plan.operation.collection:
            for attribute, slot, transform in plan.fields:
                if attribute == semconv.DB_COLLECTION_NAME:
                    value = slot.get(args, kwargs)
                    if value is not None:
                        collection = transform(value)
                    break
        database = plan.database_slot.get(args, kwargs) if plan.database_slot is not None else None
        enduser = _ENDUSER.get()
        return {"collection": collection, "database": database or connection.get(semconv.DB_NAMESPACE),
                "user": connection.get(semconv.USER_NAME),
                "enduser": enduser.get(semconv.ENDUSER_ID) if enduser else None}

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
            valid_utf8(attributes)  # once, before the span's name and attributes are taken from them
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

    def end_attributes(self, call: Call, exc: BaseException | None, duration: float,
                       failure: failures.Failure | None = None) -> tuple[dict[str, Any], failures.Failure | None]:
        """The attributes a call's end adds (duration, outcome, measures or failure)."""
        end: dict[str, Any] = {semconv.DURATION_MS: duration * 1000.0}
        if exc is None:
            end[semconv.OUTCOME] = semconv.SUCCESS
            measure = call.measure
            if measure is not None:
                value = measure[1](call.result)
                if value is not None:
                    end[measure[0]] = value
            return end, None
        if failure is None:
            failure = failures.classify(exc)
        end[semconv.OUTCOME] = semconv.FAILURE
        end[semconv.FAILURE_REASON] = failure.reason
        end[semconv.ERROR_TYPE] = failure.error_type
        end[semconv.DB_RESPONSE_STATUS_CODE] = failure.status_code
        if failure.missing_privilege:
            end[semconv.MISSING_PRIVILEGE] = failure.missing_privilege
        if failure.message:
            end[semconv.ERROR_MESSAGE] = self.scrub(call, failure.message)
        return end, failure

    def finish(self, call: Call, exc: BaseException | None) -> None:
        try:
            duration = time.perf_counter() - call.start
            otel_context.detach(call.token)
            end, failure = self.end_attributes(call, exc, duration)
            valid_utf8(end)
            attributes = call.attributes
            attributes.update(end)
            record, drop = True, NO_DROP
            verdicts = call.verdicts
            if verdicts is not None:
                if failure is None:
                    record, rate, verdict = verdicts[0], verdicts[1], verdicts[2]
                    if rate is not None:
                        attributes[semconv.SAMPLE_RATE] = rate
                else:
                    verdict = verdicts[3]
                    record = verdict.action != EXCLUDE or protected_failure(failure.reason, failure.error_type)
                drop = verdict.drop
            if record or self.policy.spans_all:
                self.emitter.finish_span(call.span, end, failure, call.timestamp_ns,
                                         call.timestamp_ns + int(duration * 1e9))
            span_context = call.span.context
            observed = attributes
            if drop:
                observed = dict(attributes)  # detection sees the call whole; the record goes without them
                for name in drop:
                    attributes.pop(name, None)
            event = AuditEvent(semconv.AUDIT_EVENT, call.timestamp_ns, attributes,
                               span_context.trace_id, span_context.span_id, exc is not None)
            if record:
                self.emitter.emit(event, call.context, duration)
            if self.sinks:
                if observed is not attributes or not record:
                    event = AuditEvent(semconv.AUDIT_EVENT, call.timestamp_ns, observed,
                                       span_context.trace_id if record else 0, span_context.span_id if record else 0,
                                       exc is not None)
                for sink in self.sinks:
                    sink(event)
        except Exception as internal:
            INTERNAL_ERRORS.report("finish " + call.plan.operation.name, internal)

    # -- calls the policy does not record (Unrecorded) -----------------------------------
    def finish_unrecorded(self, call: Unrecorded, exc: BaseException | None) -> None:
        try:
            duration = time.perf_counter() - call.start
            if exc is None:
                if self.sinks:
                    call.timestamp_ns = self.emitter.now_ns() - int(duration * 1e9)
                    measured = None
                    measure = call.measure or call.plan.result_measure
                    if measure is not None:
                        measured = measure[1](call.result)
                    self.observe_later(call, None, None, duration, measured)
                return
            call.timestamp_ns = self.emitter.now_ns() - int(duration * 1e9)
            failure = failures.classify(exc)
            verdict = call.resolved.failure or call.resolved.failure_for(
                self.call_data(call.plan, call.args, call.kwargs, call.extra))
            if verdict.action != EXCLUDE or protected_failure(failure.reason, failure.error_type):
                self.record_late(call, exc, duration, verdict)
            elif self.sinks:
                self.observe_later(call, exc, failure, duration, None)
        except Exception as internal:
            INTERNAL_ERRORS.report("finish " + call.plan.operation.name, internal)

    def record_late(self, call: Unrecorded, exc: BaseException, duration: float, verdict: Verdict) -> None:
        """A failed call whose failure is recorded: its record and span, built now."""
        full = self.begin(call.plan, call.args, call.kwargs, call.extra, call.measure)
        if isinstance(full, Call):
            full.timestamp_ns = call.timestamp_ns
            full.start = time.perf_counter() - duration
            full.verdicts = (False, None, verdict, verdict) if verdict.drop else None
            self.finish(full, exc)

    def observe_later(self, call: Unrecorded, exc: BaseException | None, failure: failures.Failure | None,
                      duration: float, measured: int | None) -> None:
        """Detection sees the unrecorded call too: its event is built on the background worker
        (or here, when a sink observes inline because a playbook can block)."""
        state = (call, exc, failure, duration, measured, self.connection_attributes, _ENDUSER.get())
        if any(getattr(sink, "inline", False) for sink in self.sinks):
            self._observe_unrecorded(state, inline=True)
        else:
            BACKGROUND.submit(self._observe_unrecorded, state)

    def _observe_unrecorded(self, state: tuple[Any, ...], inline: bool = False) -> None:
        call, exc, failure, duration, measured, connection, enduser = state
        plan = call.plan
        attributes = {**connection, **plan.static_attributes}
        if call.extra:
            attributes.update(call.extra)
        filter_text = self.request_attributes(plan, call.args, call.kwargs, attributes)
        if enduser:
            attributes.update(enduser)
        attributes[semconv.DURATION_MS] = duration * 1000.0
        if exc is None:
            attributes[semconv.OUTCOME] = semconv.SUCCESS
            measure = call.measure or plan.result_measure
            if measure is not None and measured is not None:
                attributes[measure[0]] = measured
        else:
            attributes[semconv.OUTCOME] = semconv.FAILURE
            attributes[semconv.FAILURE_REASON] = failure.reason
            attributes[semconv.ERROR_TYPE] = failure.error_type
            attributes[semconv.DB_RESPONSE_STATUS_CODE] = failure.status_code
            if failure.missing_privilege:
                attributes[semconv.MISSING_PRIVILEGE] = failure.missing_privilege
            if failure.message:
                secrets = [*self.secrets, *plan.secrets_in(call.args, call.kwargs)]
                attributes[semconv.ERROR_MESSAGE] = scrub_message(
                    failure.message, filter_text=filter_text, secrets=secrets, raw_filters=self._raw,
                    carried=plan.data_in(call.args, call.kwargs))
        event = AuditEvent(semconv.AUDIT_EVENT, call.timestamp_ns, attributes, 0, 0, exc is not None)
        for sink in self.sinks:
            if inline:
                sink(event)
            else:  # on the background worker already: observe in order, not queued again
                observe = getattr(sink, "observe", None)
                (observe if callable(observe) else sink)(event)

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
