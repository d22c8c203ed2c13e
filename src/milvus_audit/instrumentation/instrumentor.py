"""Auditing code you don't own: an OpenTelemetry `BaseInstrumentor` for pymilvus.

`MilvusAuditInstrumentor().instrument(...)` audits every `pymilvus.MilvusClient` and
`AsyncMilvusClient` constructed afterwards, anywhere in the process (LangChain,
LlamaIndex, your own code): the classes' `__init__` records the connect and gives the
instance an auditor, and each catalogued method goes through the same audited call path
as the drop-in proxy. It also audits the ORM API (`connections`, `Collection`,
`Partition`, `Index`, `Role`, `utility`), see `milvus_audit.instrumentation.orm`. Registered under the
`opentelemetry_instrumentor` entry point, so `opentelemetry-instrument python app.py`
turns it on without code changes.

Clients created before `instrument()` stay unaudited. `uninstrument()` restores
pymilvus exactly. The drop-in `milvus_audit.MilvusClient` is not audited twice.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Collection
from dataclasses import fields
from typing import Any

import pymilvus
import wrapt
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.instrumentation.utils import unwrap

from milvus_audit.auditing.auditor import AuditRuntime
from milvus_audit.auditing.lifecycle import lifecycle_stopped
from milvus_audit.config import AuditConfig
from milvus_audit.instrumentation.client import (
    _AsyncProxy,
    _SyncProxy,
    audited_connect,
    bare_constructing,
    connection_info,
)
from milvus_audit.instrumentation.proxy import Target, audited_method
from milvus_audit.runtime.context import IN_AUDITED_CALL, flagged

_INSTRUMENTS = ("pymilvus >= 2.6, < 4",)
_CONFIG_FIELDS = {f.name for f in fields(AuditConfig) if f.init}


def _config_from(kwargs: dict[str, Any]) -> AuditConfig:
    audit = kwargs.get("audit")
    if isinstance(audit, AuditConfig):
        return audit
    return AuditConfig(**{key: value for key, value in kwargs.items() if key in _CONFIG_FIELDS})


class MilvusAuditInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Audit every pymilvus client created after `instrument()`. Idempotent and thread-safe."""

    _lock = threading.Lock()

    def instrumentation_dependencies(self) -> Collection[str]:
        return _INSTRUMENTS

    def instrument(self, **kwargs: Any) -> Any:
        with self._lock:
            return super().instrument(**kwargs)

    def uninstrument(self, **kwargs: Any) -> Any:
        with self._lock:
            return super().uninstrument(**kwargs)

    def _instrument(self, **kwargs: Any) -> None:
        from milvus_audit.instrumentation import orm

        config = _config_from(kwargs)
        self._config = config
        self._wrapped: list[tuple[type, str, bool]] = []
        for cls, proxy_class in ((pymilvus.MilvusClient, _SyncProxy), (pymilvus.AsyncMilvusClient, _AsyncProxy)):
            self._wrap(cls, "__init__", _audited_init(cls, config))
            for name, plan in proxy_class._audit_plans.items():
                original = getattr(cls, name)
                method = audited_method(name, plan, inspect.iscoroutinefunction(original), _instance_target(original))
                self._wrap(cls, name, _as_wrapper(method))
        patches = orm.OrmPatches(config)
        patches.apply()
        self._orm: orm.OrmPatches | None = patches

    def _wrap(self, cls: type, name: str, wrapper: Callable[..., Any]) -> None:
        own = name in vars(cls)  # an inherited method is wrapped on `cls`, and removed from it again
        wrapt.wrap_function_wrapper(cls, name, wrapper)
        self._wrapped.append((cls, name, own))

    def _uninstrument(self, **kwargs: Any) -> None:
        for cls, name, own in reversed(getattr(self, "_wrapped", [])):
            if own:
                unwrap(cls, name)
            else:
                delattr(cls, name)
        self._wrapped = []
        patches = getattr(self, "_orm", None)
        if patches is not None:
            patches.restore()
            self._orm = None
        config = getattr(self, "_config", None)
        if config is not None and isinstance(config._runtime, AuditRuntime):  # auditing stops: PCI DSS 10.2.1.6
            lifecycle_stopped(config._runtime, "uninstrument")


AUDITOR = "_milvus_audit_auditor"


def _as_wrapper(method: Callable[..., Any]) -> Callable[..., Any]:
    """An audited method `(self, *args, **kwargs)` as a wrapt wrapper."""
    def wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return method(instance, *args, **kwargs)
    return wrapper


def _audited_init(cls: type, config: AuditConfig) -> Callable[..., None]:
    def __init__(wrapped: Callable[..., None], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if bare_constructing():  # the drop-in client's inner client: audited by its proxy
            wrapped(*args, **kwargs)
            return
        info = connection_info(cls, args, kwargs, config)
        _, auditor = audited_connect(info, config, lambda: wrapped(*args, **kwargs), client=instance)
        instance.__dict__[AUDITOR] = auditor

    return __init__


def _instance_target(original: Callable[..., Any]) -> Callable[[Any, str], Target]:
    """Resolve a call on an instrumented instance: its auditor, and the original method marked
    as an audited call, so the calls it makes on itself are not recorded again."""
    is_async = inspect.iscoroutinefunction(original)

    def resolve(instance: Any, name: str) -> Target:
        bound = original.__get__(instance, type(instance))
        auditor = None if IN_AUDITED_CALL.get() else instance.__dict__.get(AUDITOR)
        if auditor is None:
            return Target(None, bound, None, type(instance))
        marked = _marked_async(bound) if is_async else flagged(IN_AUDITED_CALL, bound)
        return Target(auditor, marked, None, type(instance))
    return resolve


def _marked_async(bound: Callable[..., Any]) -> Callable[..., Any]:
    async def call(*args: Any, **kwargs: Any) -> Any:
        token = IN_AUDITED_CALL.set(True)
        try:
            return await bound(*args, **kwargs)
        finally:
            IN_AUDITED_CALL.reset(token)
    return call
