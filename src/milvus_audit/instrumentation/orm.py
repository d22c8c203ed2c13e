"""Auditing the pymilvus ORM API (`connections`, `Collection`, `Partition`, `Index`, `Role`, `utility`).

The ORM talks to Milvus through a connection alias, not a client object, so it is
audited where its public calls are: each one is wrapped in place, audited as the catalog
operation it performs (`catalog.ORM`), with the collection taken from the object
(`Collection.name`) or the arguments (`utility`). `connections.connect` records the
connect and starts an auditor for the alias; aliases connected before `instrument()`
stay unaudited. A call the ORM makes inside another audited ORM call is part of it
and not recorded twice.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import wrapt
from opentelemetry.instrumentation.utils import unwrap
from pymilvus import Collection, Index, Partition, connections, utility
from pymilvus.orm.role import Role

from milvus_audit import semconv
from milvus_audit.auditing.auditor import Auditor
from milvus_audit.config import AuditConfig
from milvus_audit.instrumentation.client import audited_connect
from milvus_audit.instrumentation.proxy import wrap_iterator
from milvus_audit.model.catalog import ORM, ORM_ALIAS_PARAMS, ORM_OWNERS, Action, OrmEntry, OrmOwner, Returns, lookup
from milvus_audit.model.identity import ORM_RULES, ConnectionInfo, credential_key
from milvus_audit.model.plan import CallPlan, Slot, positions
from milvus_audit.runtime.context import IN_AUDITED_CALL

OWNERS: dict[str, Any] = {"Collection": Collection, "Partition": Partition, "Index": Index, "Role": Role,
                          "utility": utility, "connections": connections}


def public_orm_calls() -> set[str]:
    """`Owner.method` for every public ORM call of the installed pymilvus (the coverage test reads this)."""
    names: set[str] = set()
    for owner_name, owner in OWNERS.items():
        if inspect.ismodule(owner):
            names.update(f"{owner_name}.{n}" for n, f in vars(owner).items() if not n.startswith("_")
                         and inspect.isfunction(f) and f.__module__ == owner.__name__)
            continue
        cls = owner if inspect.isclass(owner) else type(owner)
        for name in dir(cls):
            raw = inspect.getattr_static(cls, name)
            if not name.startswith("_") and (inspect.isfunction(raw) or isinstance(raw, (classmethod, staticmethod))):
                names.add(f"{owner_name}.{name}")
        if inspect.isclass(owner):
            names.add(f"{owner_name}.__init__")
    return names


def _collection_of(obj: Any) -> str | None:
    """The collection an ORM object works on (None before its `__init__` has run)."""
    if isinstance(obj, Collection):
        return getattr(obj, "_name", None)
    owner = getattr(obj, "_collection", None)
    return getattr(owner, "_name", None) if owner is not None else None


class OrmPatches:
    """The ORM wrappers for one `instrument()`, applied with wrapt; `restore()` unwraps each."""

    def __init__(self, config: AuditConfig) -> None:
        self.config = config
        self.auditors: dict[str, Auditor] = {}
        self._wrapped: list[tuple[Any, str]] = []

    def apply(self) -> None:
        for qualified, entry in ORM.items():
            owner_name, name = qualified.split(".", 1)
            owner = OWNERS[owner_name]
            target = owner if inspect.ismodule(owner) or inspect.isclass(owner) else type(owner)
            if entry.operation is None or name not in vars(target):
                continue
            original = vars(target)[name]
            if isinstance(original, (classmethod, staticmethod)):
                continue  # construct_from_dataframe: audited through the calls it makes
            wrapt.wrap_function_wrapper(target, name, self._wrapper(owner_name, qualified, entry, original))
            self._wrapped.append((target, name))

    def restore(self) -> None:
        for target, name in reversed(self._wrapped):
            unwrap(target, name)
        self._wrapped.clear()

    # -- one wrapper per ORM call ---------------------------------------------------------
    def _wrapper(self, owner_name: str, qualified: str, entry: OrmEntry,
                 original: Callable[..., Any]) -> Callable[..., Any]:
        assert entry.operation is not None
        plan = self._plan(entry.operation, entry, original)
        if plan.operation.action is Action.LOGON:  # connections.connect: starts the alias's auditor
            def connect(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...],
                        kwargs: dict[str, Any]) -> Any:
                return self._connect(original, wrapped, instance, args, kwargs)
            return connect

        alternate = None
        if entry.with_param:  # Collection(name, schema) creates
            alternate = (Slot(entry.with_param[0], positions(original).get(entry.with_param[0])),
                         self._plan(entry.with_param[1], entry, original))
        where = positions(original)
        alias_slots = tuple(Slot(name, where.get(name)) for name in ORM_ALIAS_PARAMS)
        owner = ORM_OWNERS[owner_name]

        def call(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            auditor = self._auditor_for(instance, alias_slots, args, kwargs)
            if auditor is None or IN_AUDITED_CALL.get():
                return wrapped(*args, **kwargs)
            chosen = plan
            if alternate is not None and alternate[0].get(args, kwargs) is not None:
                chosen = alternate[1]
            extra = _orm_attributes(qualified, owner, instance)
            token = IN_AUDITED_CALL.set(True)
            try:
                with auditor.call(chosen, args, kwargs, extra) as audited:
                    result = audited.returned(wrapped(*args, **kwargs))
            finally:
                IN_AUDITED_CALL.reset(token)
            if chosen.operation.returns is Returns.ITERATOR and result is not None:
                return wrap_iterator(auditor, chosen, result, args, kwargs, extra)
            return result

        return call

    @staticmethod
    def _plan(operation: str, entry: OrmEntry, original: Callable[..., Any]) -> CallPlan:
        return CallPlan.compile(lookup(operation), original, renames=entry.renames)

    def _auditor_for(self, instance: Any, alias_slots: tuple[Slot, ...], args: tuple[Any, ...],
                     kwargs: dict[str, Any]) -> Auditor | None:
        """The auditor of the call's connection alias: named by the call, or by its object."""
        alias = None
        for slot in alias_slots:
            alias = slot.get(args, kwargs)
            if alias is not None:
                break
        if alias is None and instance is not None:
            alias = getattr(instance, "_using", None)  # Collection, Role
            owner = getattr(instance, "_collection", None)  # Partition, Index
            if alias is None and owner is not None:
                alias = getattr(owner, "_using", None)
        return self.auditors.get(str(alias or "default"))

    def _connect(self, original: Callable[..., Any], wrapped: Callable[..., Any], manager: Any,
                 args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        try:
            bound = inspect.signature(original).bind(manager, *args, **kwargs)
            params = {k: v for k, v in bound.arguments.items() if k not in ("self", "kwargs")}
            params.update(bound.arguments.get("kwargs") or {})
        except TypeError:
            params = dict(kwargs)
        alias = str(params.pop("alias", "default"))
        if not params.get("uri") and params.get("host"):
            params["uri"] = f"http://{params.pop('host')}:{params.pop('port', 19530)}"
        info = ConnectionInfo.from_parameters(params, credential_key(self.config.credential_key), ORM_RULES)
        result, auditor = audited_connect(info, self.config, lambda: wrapped(*args, **kwargs),
                                          {semconv.API: "orm"})
        self.auditors[alias] = auditor
        return result


def _orm_attributes(qualified: str, owner: OrmOwner, instance: Any) -> dict[str, Any]:
    """What an ORM call's record says beyond its arguments: the API, and what its object names."""
    extra: dict[str, Any] = {semconv.API: "orm", semconv.CODE_FUNCTION_NAME: qualified}
    collection = _collection_of(instance)
    if collection:
        extra[semconv.DB_COLLECTION_NAME] = collection
    name = getattr(instance, "_name", None) if owner.name_attribute else None
    if owner.name_attribute and name:
        extra[owner.name_attribute] = [str(name)] if owner.name_is_list else str(name)
    return extra
