"""Trace propagation to the Milvus server: every RPC of an audited client carries its call's trace id.

The server's access log then names the same trace id as the client record (`milvus_audit
reconcile` joins them), and the server's own spans join the trace. On each RPC, made
inside an audited call (connect included), the channel sends:

- `traceparent`: `00-<trace id>-<span id>-<flags>`, the current span's context. The flags
  are the W3C sampled bit only: Milvus 2.3 ignores a `traceparent` whose flags carry the
  level-2 "random trace id" bit that OpenTelemetry Python sets (`03`).
- `client-request-id`: the trace id in 32 hex digits, unless the application passed its
  own `client_request_id` (recorded as `milvus_audit.client_request_id`).

It is an interceptor added once per channel, when an audited client creates the channel
(`AuditConfig(propagate=False)` leaves it out); nothing is rebuilt per call. Channels a
bare client created before (pymilvus shares a connection between clients with the same
URI and token) carry no interceptor. Needs pymilvus 3; with older versions nothing is sent.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

import grpc
import wrapt
from opentelemetry.trace import get_current_span

from milvus_audit.runtime.diagnostics import INTERNAL_ERRORS

# Set while an audited client that propagates builds its connection. An asyncio client builds
# it later, on first use: the client is marked, and its connection manager call sets it then.
_INSTALLING: contextvars.ContextVar[bool] = contextvars.ContextVar("milvus_audit_propagate", default=False)
_CLIENT_FLAG = "_milvus_audit_propagate"
_HANDLER_FLAG = "_milvus_audit_propagating"  # on a connection handler whose channel has the interceptor
_REQUEST_ID = "client-request-id"


_last: tuple[int, int, str, str] = (0, 0, "", "")  # the last span's ids and headers (a call's RPCs share them)


def trace_headers(metadata: Any) -> list[tuple[str, Any]] | None:
    """`metadata` plus the current span's `traceparent` (and request id); None without a span."""
    global _last
    context = get_current_span().get_span_context()
    trace_id, span_id = context.trace_id, context.span_id
    if not trace_id or not span_id:
        return None
    last = _last
    if last[0] == trace_id and last[1] == span_id:
        traceparent, trace_hex = last[2], last[3]
    else:
        trace_hex = "%032x" % trace_id  # noqa: UP031 - the fastest of the three spellings, per RPC
        traceparent = "00-%s-%016x-%s" % (trace_hex, span_id, "01" if context.trace_flags & 1 else "00")  # noqa: UP031
        _last = (trace_id, span_id, traceparent, trace_hex)
    headers = list(metadata) if metadata else []
    headers.append(("traceparent", traceparent))
    for index, (key, value) in enumerate(headers):
        if key == _REQUEST_ID:
            if not value:  # pymilvus always sends one; empty unless the application chose it
                headers[index] = (_REQUEST_ID, trace_hex)
            break
    else:
        headers.append((_REQUEST_ID, trace_hex))
    return headers


class _Details(NamedTuple):
    method: str
    timeout: float | None
    metadata: Any
    credentials: Any
    wait_for_ready: bool | None
    compression: Any


class _CallDetails(_Details, grpc.ClientCallDetails):  # type: ignore[misc]
    """`grpc.ClientCallDetails` with new metadata (the grpc docs' recipe)."""


class Propagator(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):  # type: ignore[misc]
    """Adds the trace headers to every call of a synchronous channel."""

    def _details(self, details: Any) -> Any:
        headers = trace_headers(details.metadata)
        if headers is None:
            return details
        return _CallDetails(details.method, details.timeout, headers, details.credentials,
                            getattr(details, "wait_for_ready", None), getattr(details, "compression", None))

    def intercept_unary_unary(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)


class AsyncPropagator(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Adds the trace headers to every call of an asyncio channel."""

    async def intercept_unary_unary(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        headers = trace_headers(details.metadata)
        if headers is not None:
            details = grpc.aio.ClientCallDetails(details.method, details.timeout, grpc.aio.Metadata(*headers),
                                                 details.credentials, details.wait_for_ready)
        return await continuation(details, request)


@contextmanager
def propagating(enabled: bool) -> Iterator[None]:
    """Channels created inside this block (by a client's constructor) get the interceptor."""
    if not enabled:
        yield
        return
    _install_hooks()
    token = _INSTALLING.set(True)
    try:
        yield
    finally:
        _INSTALLING.reset(token)


def mark(client: Any) -> None:
    """After an audited client's construction: a connection it shares with clients made before
    gets the interceptor now; an asyncio client, which connects on first use, gets it then."""
    if client is None or not hasattr(client, "__dict__"):
        return
    client.__dict__[_CLIENT_FLAG] = True
    handler = client.__dict__.get("_handler")
    if handler is not None:
        _ensure(handler)


def _ensure(handler: Any) -> None:
    """Add the interceptor to a handler's existing channel, once (pymilvus shares a connection
    between clients with the same URI and token, so it may predate the audited client)."""
    state = getattr(handler, "__dict__", None)
    if state is None or state.get(_HANDLER_FLAG):
        return
    try:
        async_channel = state.get("_async_channel")
        if async_channel is not None:
            interceptors = getattr(async_channel, "_unary_unary_interceptors", None)
            if isinstance(interceptors, list):
                if not any(isinstance(i, AsyncPropagator) for i in interceptors):
                    interceptors.append(AsyncPropagator())
                state[_HANDLER_FLAG] = True
        elif state.get("_final_channel") is not None and state.get("_stub") is not None:
            # Over the channel as pymilvus finished it (its authorization and identifier
            # interceptors kept), with the stub pymilvus would build over it.
            from pymilvus.grpc_gen import milvus_pb2_grpc

            final = grpc.intercept_channel(state["_final_channel"], Propagator())
            handler._final_channel, handler._stub = final, milvus_pb2_grpc.MilvusServiceStub(final)
            if state.get("_channel") is not None:  # and when pymilvus rebuilds its stub (re-auth)
                handler._channel = grpc.intercept_channel(state["_channel"], Propagator())
            state[_HANDLER_FLAG] = True
    except Exception as exc:  # propagation is an aid to joining records; never a reason to fail
        INTERNAL_ERRORS.report("trace propagation", exc)


_HOOKED = False


def _install_hooks() -> None:
    """Wrap pymilvus's channel factories once per process (pymilvus 3 names them)."""
    global _HOOKED
    if _HOOKED:
        return
    _HOOKED = True
    try:
        wrapt.wrap_function_wrapper("pymilvus.client.grpc_handler", "GrpcHandler._create_grpc_channel", _sync_channel)
        wrapt.wrap_function_wrapper("pymilvus.client.async_grpc_handler", "AsyncGrpcHandler._create_channel",
                                    _async_channel)
        wrapt.wrap_function_wrapper("pymilvus.client.connection_manager", "AsyncConnectionManager.get_or_create",
                                    _deferred_connect)
    except (AttributeError, ImportError):  # an older pymilvus: records are still written, unjoined
        return


def _sync_channel(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    channel = wrapped(*args, **kwargs)
    if not (_INSTALLING.get() or instance.__dict__.get(_HANDLER_FLAG)):  # a propagating handler's new channel too
        return channel
    instance.__dict__[_HANDLER_FLAG] = True
    return grpc.intercept_channel(channel, Propagator())


def _async_channel(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    channel = wrapped(*args, **kwargs)
    interceptors = getattr(channel, "_unary_unary_interceptors", None)
    if _INSTALLING.get() and isinstance(interceptors, list):  # where pymilvus adds its own
        interceptors.append(AsyncPropagator())
        instance.__dict__[_HANDLER_FLAG] = True
    return channel


def _deferred_connect(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...],
                      kwargs: dict[str, Any]) -> Any:
    client = kwargs.get("client")
    if not getattr(client, "__dict__", {}).get(_CLIENT_FLAG):
        return wrapped(*args, **kwargs)

    async def connect() -> Any:
        token = _INSTALLING.set(True)
        try:
            handler = await wrapped(*args, **kwargs)
        finally:
            _INSTALLING.reset(token)
        _ensure(handler)  # a shared connection made before
        return handler
    return connect()
