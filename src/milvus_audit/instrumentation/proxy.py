"""Audited proxies: wrapt `ObjectProxy` classes with one precompiled wrapper per method.

The proxy classes are built once, at import, from the installed pymilvus classes and
the catalog: every public method gets a wrapper whose `CallPlan` already knows where
each audited argument sits. `isinstance(proxy, pymilvus.MilvusClient)` holds because
`ObjectProxy` forwards `__class__`. Anything the proxy does not define (attributes,
local helpers such as `create_schema`) is forwarded untouched.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

import wrapt

from milvus_audit import semconv
from milvus_audit.auditing.auditor import Auditor
from milvus_audit.model.catalog import ITERATOR_METHODS, Category, Operation, Returns, lookup
from milvus_audit.model.plan import PAGE_MEASURE, CallPlan
from milvus_audit.runtime.diagnostics import INTERNAL_ERRORS


class AuditedObject(wrapt.ObjectProxy):  # type: ignore[misc, type-arg]
    """Base of every audited proxy: holds the auditor shared with its children."""

    _self_auditor: Auditor
    _self_extra: dict[str, Any] | None
    _self_pages: int
    _audit_plans: dict[str, CallPlan] = {}  # per class: the plan of each audited method

    def __init__(self, wrapped: Any, auditor: Auditor, extra: dict[str, Any] | None = None) -> None:
        super().__init__(wrapped)
        self._self_auditor = auditor
        self._self_extra = extra
        self._self_pages = 0

    def __repr__(self) -> str:
        return f"<audited {type(self.__wrapped__).__name__} at {id(self.__wrapped__):#x}>"

    def __reduce_ex__(self, protocol: Any) -> Any:
        raise TypeError("audited Milvus clients cannot be pickled")

    @property
    def audit_auditor(self) -> Auditor:
        """The auditor behind this proxy (for sinks and tests)."""
        return self._self_auditor


class AuditedClient(AuditedObject):
    """Base of audited client proxies."""

    def __getattr__(self, name: str) -> Any:
        value = getattr(self.__wrapped__, name)
        # A public method this proxy class does not know (a subclass's, or a newer
        # pymilvus's): still audited, as category `other`.
        if not name.startswith("_") and inspect.ismethod(value):
            key = (type(self.__wrapped__), name)
            plan = _DYNAMIC_PLANS.get(key)
            if plan is None:  # compiled once per class and method, not on every access
                plan = _DYNAMIC_PLANS[key] = CallPlan.compile(lookup(name), value)
            if not plan.operation.local:
                return _bind_dynamic(self, plan, value)
        return value


_DYNAMIC_PLANS: dict[tuple[type, str], CallPlan] = {}


class Target(NamedTuple):
    """What an audited method call resolves to: who audits it, what to call, and the context
    (`extra` attributes and the client class, for sessions and iterators it returns)."""

    auditor: Auditor | None
    function: Callable[..., Any]
    extra: dict[str, Any] | None
    client_type: type


Resolver = Callable[[Any, str], Target]


def proxy_target(proxy: AuditedObject, name: str) -> Target:
    wrapped = proxy.__wrapped__
    return Target(proxy._self_auditor, getattr(wrapped, name), proxy._self_extra, type(wrapped))


def _after(target: Target, plan: CallPlan, args: tuple[Any, ...], kwargs: dict[str, Any], result: Any) -> Any:
    """State changes and result wrapping that follow a successful call."""
    assert target.auditor is not None
    if plan.operation.switches_database and plan.database_slot is not None:
        target.auditor.set_database(str(plan.database_slot.get(args, kwargs) or ""))
    if plan.operation.returns is not Returns.PLAIN and result is not None:
        return wrap_result(target, plan, result, args, kwargs)
    return result


def audited_method(name: str, plan: CallPlan, is_async: bool, resolve: Resolver = proxy_target) -> Callable[..., Any]:
    """A method through the one call path, for proxies and for instrumented pymilvus classes alike."""
    after = plan.operation.switches_database or plan.operation.returns is not Returns.PLAIN

    if is_async:
        async def async_method(self: Any, *args: Any, **kwargs: Any) -> Any:
            target = resolve(self, name)
            if target.auditor is None:
                return await target.function(*args, **kwargs)
            with target.auditor.call(plan, args, kwargs, target.extra) as call:
                result = call.returned(await target.function(*args, **kwargs))
            return _after(target, plan, args, kwargs, result) if after else result

        async_method.__name__ = name
        return async_method

    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        target = resolve(self, name)
        if target.auditor is None:
            return target.function(*args, **kwargs)
        with target.auditor.call(plan, args, kwargs, target.extra) as call:
            result = call.returned(target.function(*args, **kwargs))
        return _after(target, plan, args, kwargs, result) if after else result

    method.__name__ = name
    return method


def _bind_dynamic(proxy: AuditedObject, plan: CallPlan, bound: Any) -> Callable[..., Any]:
    wrapper = audited_method(plan.operation.name, plan, inspect.iscoroutinefunction(bound))
    bound_wrapper: Callable[..., Any] = wrapper.__get__(proxy, type(proxy))
    return bound_wrapper


def build_proxy_class(name: str, target: type, *, base: type[AuditedObject] = AuditedObject,
                      signature_source: type | None = None,
                      only: Callable[[Operation], bool] | None = None) -> type[AuditedObject]:
    """An `AuditedObject` subclass with an audited wrapper for each public method of `target`.

    `signature_source` names the class whose signatures give argument positions, for
    targets whose methods forward `*args` (sessions forward to the client).
    """
    namespace: dict[str, Any] = {"__module__": __name__, "__qualname__": name}
    plans: dict[str, CallPlan] = {}
    for attribute in dir(target):
        if attribute.startswith("_"):
            continue
        raw = inspect.getattr_static(target, attribute)
        if not callable(raw) and not isinstance(raw, (classmethod, staticmethod)):
            continue
        if isinstance(raw, (classmethod, staticmethod, property)):
            continue
        operation = lookup(attribute)
        if operation.local or (only is not None and not only(operation)):
            continue
        function = getattr(target, attribute)
        source = getattr(signature_source, attribute, function) if signature_source else function
        plan = CallPlan.compile(operation, source)
        plans[attribute] = plan
        namespace[attribute] = audited_method(attribute, plan, inspect.iscoroutinefunction(function))
    namespace["_audit_plans"] = plans
    proxy_class: type[AuditedObject] = type(name, (base,), namespace)
    return proxy_class


# -- sessions and iterators ------------------------------------------------------------
_SESSION_CLASSES: dict[type, type[AuditedObject]] = {}
_ITERATOR_CLASSES: dict[tuple[type, str], type[AuditedObject]] = {}


def _session_class(session_type: type, client_type: type) -> type[AuditedObject]:
    cls = _SESSION_CLASSES.get(session_type)
    if cls is None:
        cls = build_proxy_class(
            f"Audited{session_type.__name__}", session_type, signature_source=client_type,
            only=lambda op: op.category is not Category.CONNECTION,
        )
        _SESSION_CLASSES[session_type] = cls
    return cls


def iterator_class(iterator_type: type, operation: Operation) -> type[AuditedObject]:
    key = (iterator_type, operation.name)
    cached = _ITERATOR_CLASSES.get(key)
    if cached is not None:
        return cached
    plan = CallPlan.compile(operation, None)
    namespace: dict[str, Any] = {"__module__": __name__}
    for method_name, audited in ITERATOR_METHODS.items():
        if not audited or not hasattr(iterator_type, method_name):
            continue
        is_async = inspect.iscoroutinefunction(getattr(iterator_type, method_name))
        namespace[method_name] = _page_wrapper(method_name, plan, is_async)
    cls: type[AuditedObject] = type(f"Audited{iterator_type.__name__}", (AuditedObject,), namespace)
    _ITERATOR_CLASSES[key] = cls
    return cls


def _page_wrapper(name: str, plan: CallPlan, is_async: bool) -> Callable[..., Any]:
    """An iterator's page fetch through the call path; each page is one audited call."""
    def page_extra(self: AuditedObject) -> dict[str, Any]:
        self._self_pages += 1
        extra = dict(self._self_extra or {})
        extra[semconv.ITERATOR_PAGE] = self._self_pages
        return extra

    if is_async:
        async def anext_page(self: AuditedObject, *args: Any, **kwargs: Any) -> Any:
            with self._self_auditor.call(plan, (), {}, page_extra(self), PAGE_MEASURE) as call:
                return call.returned(await getattr(self.__wrapped__, name)(*args, **kwargs))
        return anext_page

    def next_page(self: AuditedObject, *args: Any, **kwargs: Any) -> Any:
        with self._self_auditor.call(plan, (), {}, page_extra(self), PAGE_MEASURE) as call:
            return call.returned(getattr(self.__wrapped__, name)(*args, **kwargs))
    return next_page


def wrap_result(target: Target, plan: CallPlan, result: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Wrap a returned session or iterator so that its server calls are audited too."""
    operation = plan.operation
    auditor = target.auditor
    assert auditor is not None
    try:
        extra = dict(target.extra or {})
        if operation.returns is Returns.SESSION:
            cluster = getattr(result, "_cluster_id", None)
            if cluster:
                extra[semconv.SESSION_CLUSTER_ID] = str(cluster)
            return _session_class(type(result), target.client_type)(result, auditor, extra)
        if operation.returns is Returns.ITERATOR:
            return wrap_iterator(auditor, plan, result, args, kwargs, extra)
    except Exception as exc:
        INTERNAL_ERRORS.report("wrap " + operation.name, exc)
    return result


def wrap_iterator(auditor: Auditor, plan: CallPlan, result: Any, args: tuple[Any, ...], kwargs: dict[str, Any],
                  extra: dict[str, Any]) -> Any:
    """An audited iterator: every page carries the iterator call's own request attributes."""
    attributes = dict(extra)
    auditor.request_attributes(plan, args, kwargs, attributes)
    return iterator_class(type(result), plan.operation)(result, auditor, attributes)
