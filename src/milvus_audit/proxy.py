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
from typing import Any

import wrapt

from milvus_audit.audit import INTERNAL_ERRORS, Auditor
from milvus_audit.catalog import ITERATOR_METHODS, Category, Operation, lookup
from milvus_audit.extract import PAGE_MEASURE, CallPlan


class AuditedObject(wrapt.ObjectProxy):  # type: ignore[misc, type-arg]
    """Base of every audited proxy: holds the auditor shared with its children."""

    _self_auditor: Auditor
    _self_extra: dict[str, Any] | None
    _self_pages: int

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
            plan = CallPlan.compile(lookup(name), value)
            if not plan.operation.local:
                return _bind_dynamic(self, plan, value)
        return value


def _after(proxy: AuditedObject, plan: CallPlan, args: tuple[Any, ...], kwargs: dict[str, Any],
           result: Any) -> Any:
    """State changes and result wrapping that follow a successful call."""
    if plan.operation.switches_database and plan.database_slot is not None:
        proxy._self_auditor.set_database(str(plan.database_slot.get(args, kwargs) or ""))
    if plan.operation.wraps_result and result is not None:
        return wrap_result(proxy, plan, result, args, kwargs)
    return result


def _sync_wrapper(name: str, plan: CallPlan) -> Callable[..., Any]:
    after = plan.operation.switches_database or plan.operation.wraps_result

    def method(self: AuditedObject, *args: Any, **kwargs: Any) -> Any:
        auditor = self._self_auditor
        if auditor.fail_closed:
            auditor.refuse_unless_durable(plan, args, kwargs, self._self_extra)
        if auditor.blocks:
            auditor.refuse_if_blocked(plan, args, kwargs, self._self_extra)
        call = auditor.begin(plan, args, kwargs, self._self_extra)
        if call is None:
            result = getattr(self.__wrapped__, name)(*args, **kwargs)
        else:
            try:
                result = getattr(self.__wrapped__, name)(*args, **kwargs)
            except BaseException as exc:
                auditor.finish(call, None, exc)
                raise
            auditor.finish(call, result, None)
        return _after(self, plan, args, kwargs, result) if after else result

    method.__name__ = name
    return method


def _async_wrapper(name: str, plan: CallPlan) -> Callable[..., Any]:
    after = plan.operation.switches_database or plan.operation.wraps_result

    async def method(self: AuditedObject, *args: Any, **kwargs: Any) -> Any:
        auditor = self._self_auditor
        if auditor.fail_closed:
            auditor.refuse_unless_durable(plan, args, kwargs, self._self_extra)
        if auditor.blocks:
            auditor.refuse_if_blocked(plan, args, kwargs, self._self_extra)
        call = auditor.begin(plan, args, kwargs, self._self_extra)
        if call is None:
            result = await getattr(self.__wrapped__, name)(*args, **kwargs)
        else:
            try:
                result = await getattr(self.__wrapped__, name)(*args, **kwargs)
            except BaseException as exc:
                auditor.finish(call, None, exc)
                raise
            auditor.finish(call, result, None)
        return _after(self, plan, args, kwargs, result) if after else result

    method.__name__ = name
    return method


def _bind_dynamic(proxy: AuditedObject, plan: CallPlan, bound: Any) -> Callable[..., Any]:
    name = plan.operation.name
    wrapper = (_async_wrapper if inspect.iscoroutinefunction(bound) else _sync_wrapper)(name, plan)
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
        make = _async_wrapper if inspect.iscoroutinefunction(function) else _sync_wrapper
        namespace[attribute] = make(attribute, plan)
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


def _iterator_class(iterator_type: type, operation: Operation) -> type[AuditedObject]:
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
    def start(self: AuditedObject) -> Any:
        if self._self_auditor.fail_closed:
            self._self_auditor.refuse_unless_durable(plan, (), {}, self._self_extra)
        if self._self_auditor.blocks:
            self._self_auditor.refuse_if_blocked(plan, (), {}, self._self_extra)
        self._self_pages += 1
        extra = dict(self._self_extra or {})
        extra["milvus_audit.iterator.page"] = self._self_pages
        return self._self_auditor.begin(plan, (), {}, extra)

    if is_async:
        async def anext_page(self: AuditedObject, *args: Any, **kwargs: Any) -> Any:
            call = start(self)
            try:
                page = await getattr(self.__wrapped__, name)(*args, **kwargs)
            except BaseException as exc:
                if call is not None:
                    self._self_auditor.finish(call, None, exc)
                raise
            if call is not None:
                self._self_auditor.finish(call, page, None, PAGE_MEASURE)
            return page
        return anext_page

    def next_page(self: AuditedObject, *args: Any, **kwargs: Any) -> Any:
        call = start(self)
        try:
            page = getattr(self.__wrapped__, name)(*args, **kwargs)
        except BaseException as exc:
            if call is not None:
                self._self_auditor.finish(call, None, exc)
            raise
        if call is not None:
            self._self_auditor.finish(call, page, None, PAGE_MEASURE)
        return page
    return next_page


def wrap_result(proxy: AuditedObject, plan: CallPlan, result: Any,
                args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Wrap a returned session or iterator so that its server calls are audited too."""
    operation = plan.operation
    try:
        extra = dict(proxy._self_extra or {})
        if operation.category is Category.CONNECTION:  # session()
            cluster = getattr(result, "_cluster_id", None)
            if cluster:
                extra["milvus_audit.session.cluster_id"] = str(cluster)
            session_class = _session_class(type(result), type(proxy.__wrapped__))
            return session_class(result, proxy._self_auditor, extra)
        if hasattr(result, "next"):
            # Every page carries the iterator call's own request attributes.
            proxy._self_auditor.request_attributes(plan, args, kwargs, extra)
            iterator_class = _iterator_class(type(result), operation)
            return iterator_class(result, proxy._self_auditor, extra)
    except Exception as exc:
        INTERNAL_ERRORS.report("wrap " + operation.name, exc)
    return result
