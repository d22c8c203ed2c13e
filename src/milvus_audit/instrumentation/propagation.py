"""Trace propagation to the Milvus server: every RPC of an audited client carries its call's trace id.

The server's access log then names the same trace id as the client record (`milvus_audit
reconcile` joins them), and the server's own spans join the trace. On each RPC, made
inside an audited call (connect included), the channel sends:

- `traceparent`: `00-<trace id>-<span id>-<flags>`, the current span's context. The flags
  are the W3C sampled bit only: Milvus 2.3 ignores a `traceparent` whose flags carry the
  level-2 "random trace id" bit that OpenTelemetry Python sets (`03`).
- `client-request-id`: the trace id in 32 hex digits, unless the application passed its
  own `client_request_id` (recorded as `milvus_audit.client_request_id`).

It is added once per channel, when an audited client creates the channel
(`AuditConfig(propagate=False)` leaves it out): a thin channel wrapper under pymilvus's own
interceptors (sync), an interceptor in the channel's list (asyncio); nothing is rebuilt per
call. A connection pymilvus shares with a client made before the audited one (same URI and
token) gets it when the audited client is made (`mark`). Needs pymilvus 3; with older
versions nothing is sent.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import grpc
import wrapt
from opentelemetry.context import get_current
from opentelemetry.trace.propagation import _SPAN_KEY

from milvus_audit.runtime.diagnostics import INTERNAL_ERRORS

# Set while an audited client that propagates builds its connection. An asyncio client builds
# it later, on first use: the client is marked, and its connection manager call sets it then.
_INSTALLING: contextvars.ContextVar[bool] = contextvars.ContextVar("milvus_audit_propagate", default=False)
_CLIENT_FLAG = "_milvus_audit_propagate"
_HANDLER_FLAG = "_milvus_audit_propagating"  # on a connection handler whose channel propagates
_REQUEST_ID = "client-request-id"


# The last span's headers: a call's RPCs share its span, so they are built once per call.
_last: tuple[Any, tuple[str, str], tuple[str, str]] = (None, ("", ""), ("", ""))


def trace_headers(metadata: Any) -> list[tuple[str, Any]] | None:
    """`metadata` plus the current span's `traceparent` (and request id); None without a span."""
    try:
        return _with_trace_headers(metadata)
    except Exception as exc:  # propagation is an aid to joining records; never a reason to fail
        INTERNAL_ERRORS.report("trace propagation", exc)
        return None


def _with_trace_headers(metadata: Any) -> list[tuple[str, Any]] | None:
    global _last
    span: Any = get_current().get(_SPAN_KEY)
    if span is None:
        return None
    last = _last
    if last[0] is span:
        traceparent, request_id = last[1], last[2]
    else:
        context = span.get_span_context()
        if not context.trace_id or not context.span_id:
            return None
        trace_hex = "%032x" % context.trace_id  # noqa: UP031 - the fastest of the three spellings
        traceparent = ("traceparent", "00-%s-%016x-%s" % (  # noqa: UP031
            trace_hex, context.span_id, "01" if context.trace_flags & 1 else "00"))
        request_id = (_REQUEST_ID, trace_hex)
        _last = (span, traceparent, request_id)
    if not metadata:
        return [traceparent, request_id]
    headers = list(metadata)
    headers.append(traceparent)
    if len(headers) > 2 and headers[1][0] == _REQUEST_ID:  # where pymilvus's CallContext puts it
        if not headers[1][1]:  # pymilvus always sends one; empty unless the application chose it
            headers[1] = request_id
        return headers
    for index, (key, value) in enumerate(headers):
        if key == _REQUEST_ID:
            if not value:
                headers[index] = request_id
            break
    else:
        headers.append(request_id)
    return headers


class _TracedCallable:
    """One RPC of a propagating channel: the caller's metadata plus the trace headers. Unary
    calls and unary-stream calls take the same arguments."""

    __slots__ = ("_inner",)

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __call__(self, request: Any, timeout: float | None = None, metadata: Any = None, credentials: Any = None,
                 wait_for_ready: bool | None = None, compression: Any = None) -> Any:
        return self._inner(request, timeout, trace_headers(metadata) or metadata, credentials,
                           wait_for_ready, compression)

    def with_call(self, request: Any, timeout: float | None = None, metadata: Any = None, credentials: Any = None,
                  wait_for_ready: bool | None = None, compression: Any = None) -> Any:
        return self._inner.with_call(request, timeout, trace_headers(metadata) or metadata, credentials,
                                     wait_for_ready, compression)

    def future(self, request: Any, timeout: float | None = None, metadata: Any = None, credentials: Any = None,
               wait_for_ready: bool | None = None, compression: Any = None) -> Any:
        return self._inner.future(request, timeout, trace_headers(metadata) or metadata, credentials,
                                  wait_for_ready, compression)


class TracingChannel(grpc.Channel):  # type: ignore[misc]
    """A synchronous channel whose unary RPCs carry the trace headers.

    A thin wrapper rather than a `grpc.intercept_channel` layer: grpc's interceptor machinery
    builds call details, a continuation and an outcome object per RPC (about 2 µs on its own);
    this adds one call frame. pymilvus puts its own interceptor layers over it."""

    def __init__(self, channel: Any) -> None:
        self._channel = channel
        # grpc's interceptor layers ask their channel for the method's callable on every RPC:
        # one wrapper per method, kept (callables are reusable and thread-safe, stubs keep theirs).
        self._callables: dict[tuple[Any, ...], _TracedCallable] = {}

    def unary_unary(self, method: str, request_serializer: Any = None, response_deserializer: Any = None,
                    _registered_method: bool = False) -> Any:
        key = (method, request_serializer, response_deserializer, _registered_method, False)
        return self._callables.get(key) or self._traced(key, self._channel.unary_unary)

    def unary_stream(self, method: str, request_serializer: Any = None, response_deserializer: Any = None,
                     _registered_method: bool = False) -> Any:
        key = (method, request_serializer, response_deserializer, _registered_method, True)
        return self._callables.get(key) or self._traced(key, self._channel.unary_stream)

    def _traced(self, key: tuple[Any, ...], make: Callable[..., Any]) -> _TracedCallable:
        """The first RPC of a method: its callable from the channel under, wrapped and kept."""
        method, request_serializer, response_deserializer, registered, _ = key
        options = {"_registered_method": True} if registered else {}  # older grpc has no such option
        traced = self._callables[key] = _TracedCallable(make(method, request_serializer, response_deserializer,
                                                             **options))
        return traced

    def stream_unary(self, *args: Any, **kwargs: Any) -> Any:
        return self._channel.stream_unary(*args, **kwargs)

    def stream_stream(self, *args: Any, **kwargs: Any) -> Any:
        return self._channel.stream_stream(*args, **kwargs)

    def subscribe(self, callback: Any, try_to_connect: bool = False) -> None:
        self._channel.subscribe(callback, try_to_connect=try_to_connect)

    def unsubscribe(self, callback: Any) -> None:
        self._channel.unsubscribe(callback)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> TracingChannel:
        return self

    def __exit__(self, *exc: object) -> None:
        self._channel.__exit__(*exc)

    def __getattr__(self, name: str) -> Any:  # anything else grpc or pymilvus reads of the channel
        return getattr(self._channel, name)


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
    """Channels created inside this block (by a client's constructor) propagate."""
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
    propagates from now on; an asyncio client, which connects on first use, gets it then."""
    if client is None or not hasattr(client, "__dict__"):
        return
    client.__dict__[_CLIENT_FLAG] = True
    handler = client.__dict__.get("_handler")
    if handler is not None:
        _ensure(handler)


def _ensure(handler: Any) -> None:
    """Make a handler's existing channel propagate, once (pymilvus shares a connection
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

            final = TracingChannel(state["_final_channel"])
            handler._final_channel, handler._stub = final, milvus_pb2_grpc.MilvusServiceStub(final)
            if state.get("_channel") is not None:  # and when pymilvus rebuilds its stub (re-auth)
                handler._channel = TracingChannel(state["_channel"])
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
    return TracingChannel(channel)


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
