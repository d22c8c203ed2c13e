"""The public drop-in clients and `instrument()`."""

from __future__ import annotations

import contextvars
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

import pymilvus

from milvus_audit import semconv
from milvus_audit.auditing.auditor import Auditor
from milvus_audit.config import AuditConfig
from milvus_audit.instrumentation.propagation import mark, propagating
from milvus_audit.instrumentation.proxy import AuditedClient, AuditedObject, build_proxy_class
from milvus_audit.model.catalog import lookup
from milvus_audit.model.identity import ConnectionInfo, credential_key
from milvus_audit.model.plan import CallPlan
from milvus_audit.runtime.context import flagged
from milvus_audit.wiring import runtime_for

_SyncProxy = build_proxy_class("_AuditedMilvusClient", pymilvus.MilvusClient, base=AuditedClient)
_AsyncProxy = build_proxy_class("_AuditedAsyncMilvusClient", pymilvus.AsyncMilvusClient,
                                base=AuditedClient)
_CONNECT = CallPlan.compile(lookup("connect"), None)


T = TypeVar("T")
_BARE_CONSTRUCTION: contextvars.ContextVar[bool] = contextvars.ContextVar("milvus_audit_bare", default=False)


def audited_connect(info: ConnectionInfo, config: AuditConfig, construct: Callable[[], T],
                    extra: dict[str, Any] | None = None, client: Any = None) -> tuple[T, Auditor]:
    """Run `construct` (which connects) through the call path, audited as `connect`; `client` is
    the pymilvus client it builds, when it is not what `construct` returns."""
    auditor = Auditor(runtime_for(config), info)
    with auditor.call(_CONNECT, (), {}, {semconv.TLS: info.tls, **(extra or {})}) as call, \
            propagating(config.propagate):
        result = call.returned(construct())
    if config.propagate:
        mark(client if client is not None else result)
    return result, auditor


def connection_info(client_cls: type, args: tuple[Any, ...], kwargs: dict[str, Any],
                    config: AuditConfig) -> ConnectionInfo:
    return ConnectionInfo.from_arguments(client_cls, args, kwargs, credential_key(config.credential_key))


def bare_constructing() -> bool:
    """True while the drop-in client builds its inner pymilvus client (not to be audited again)."""
    return _BARE_CONSTRUCTION.get()


def _bare(inner_cls: type, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Callable[[], Any]:
    return lambda: flagged(_BARE_CONSTRUCTION, inner_cls)(*args, **kwargs)


class MilvusClient(_SyncProxy):  # type: ignore[misc, valid-type]
    """`pymilvus.MilvusClient`, audited. Takes the same arguments, plus `audit=AuditConfig(...)`.

    `isinstance(client, pymilvus.MilvusClient)` holds; every call returns what the inner
    client returned and raises what it raised.
    """

    def __init__(self, *args: Any, audit: AuditConfig | None = None, **kwargs: Any) -> None:
        config = audit or AuditConfig()
        info = connection_info(pymilvus.MilvusClient, args, kwargs, config)
        inner, auditor = audited_connect(info, config, _bare(pymilvus.MilvusClient, args, kwargs))
        super().__init__(inner, auditor)

    def __enter__(self) -> MilvusClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncMilvusClient(_AsyncProxy):  # type: ignore[misc, valid-type]
    """`pymilvus.AsyncMilvusClient`, audited, including `async with`."""

    def __init__(self, *args: Any, audit: AuditConfig | None = None, **kwargs: Any) -> None:
        config = audit or AuditConfig()
        info = connection_info(pymilvus.AsyncMilvusClient, args, kwargs, config)
        inner, auditor = audited_connect(info, config, _bare(pymilvus.AsyncMilvusClient, args, kwargs))
        super().__init__(inner, auditor)

    async def __aenter__(self) -> AsyncMilvusClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


def _signature_with_audit(inner: type) -> inspect.Signature:
    signature = inspect.signature(inner)
    parameters = [p for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD]
    parameters.append(inspect.Parameter("audit", inspect.Parameter.KEYWORD_ONLY, default=None,
                                        annotation="AuditConfig | None"))
    parameters.extend(p for p in signature.parameters.values() if p.kind is p.VAR_KEYWORD)
    return signature.replace(parameters=parameters)


MilvusClient.__init__.__signature__ = _signature_with_audit(pymilvus.MilvusClient)  # type: ignore[attr-defined]
AsyncMilvusClient.__init__.__signature__ = _signature_with_audit(pymilvus.AsyncMilvusClient)  # type: ignore[attr-defined]


def instrument(client: Any, audit: AuditConfig | None = None) -> Any:
    """Wrap an existing `MilvusClient` or `AsyncMilvusClient` in an audited proxy.

    The connect happened before; records carry what the client still knows of its
    endpoint and user. An already audited client is returned as it is.
    """
    if isinstance(client, AuditedObject) or "_milvus_audit_auditor" in getattr(client, "__dict__", {}):
        return client  # already audited (by a proxy, or by MilvusAuditInstrumentor)
    config = audit or AuditConfig()
    info = ConnectionInfo.from_client(client, credential_key(config.credential_key))
    auditor = Auditor(runtime_for(config), info)
    if isinstance(client, pymilvus.AsyncMilvusClient):
        return _AsyncProxy(client, auditor)
    if isinstance(client, pymilvus.MilvusClient):
        return _SyncProxy(client, auditor)
    raise TypeError(
        f"instrument() takes a pymilvus MilvusClient or AsyncMilvusClient, not {type(client).__name__}"
    )
