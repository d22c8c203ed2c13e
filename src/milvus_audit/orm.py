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

import functools
import inspect
from collections.abc import Callable
from typing import Any

from pymilvus import Collection, Index, Partition, connections, utility
from pymilvus.orm.role import Role

from milvus_audit.audit import IN_AUDITED_CALL, Auditor
from milvus_audit.catalog import ORM, Action, OrmEntry, lookup
from milvus_audit.client import audited_connect
from milvus_audit.config import AuditConfig
from milvus_audit.connection import ConnectionInfo, credential_key
from milvus_audit.extract import CallPlan
from milvus_audit.proxy import iterator_class

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
    """The ORM wrappers for one `instrument()`; `restore()` puts every original back."""

    def __init__(self, config: AuditConfig) -> None:
        self.config = config
        self.auditors: dict[str, Auditor] = {}
        self._originals: list[tuple[Any, str, Any]] = []

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
            self._originals.append((target, name, original))
            setattr(target, name, self._wrap(qualified, entry, original))

    def restore(self) -> None:
        for target, name, original in reversed(self._originals):
            setattr(target, name, original)
        self._originals.clear()

    # -- one wrapper per ORM call ---------------------------------------------------------
    def _wrap(self, qualified: str, entry: OrmEntry, original: Callable[..., Any]) -> Callable[..., Any]:
        assert entry.operation is not None
        is_method = not qualified.startswith("utility.")
        plan = self._plan(entry.operation, entry, original)
        alternate = self._plan(entry.with_param[1], entry, original) if entry.with_param else None
        patches = self

        if plan.operation.action is Action.LOGON:  # connections.connect: starts the alias's auditor
            @functools.wraps(original)
            def connect(self: Any, *args: Any, **kwargs: Any) -> Any:
                return patches._connect(original, self, args, kwargs)
            return connect

        @functools.wraps(original)
        def call(*args: Any, **kwargs: Any) -> Any:
            bound_self = args[0] if is_method else None
            call_args = args[1:] if is_method else args
            auditor = patches._auditor_for(bound_self, call_args, kwargs, qualified)
            if auditor is None or IN_AUDITED_CALL.get():
                return original(*args, **kwargs)
            chosen = plan
            if alternate is not None and entry.with_param and (
                    kwargs.get(entry.with_param[0]) is not None or len(call_args) > 1):
                chosen = alternate
            extra: dict[str, Any] = {"milvus_audit.api": "orm", "code.function.name": qualified}
            collection = _collection_of(bound_self)
            if collection:
                extra["db.collection.name"] = collection
            if isinstance(bound_self, Partition) and getattr(bound_self, "_name", None):
                extra["db.milvus.partition_names"] = [str(bound_self._name)]
            if isinstance(bound_self, Role) and getattr(bound_self, "_name", None):
                extra["milvus_audit.target.role"] = str(bound_self._name)
            if auditor.blocks:
                auditor.refuse_if_blocked(chosen, call_args, kwargs, extra)
            token = IN_AUDITED_CALL.set(True)
            audit = auditor.begin(chosen, call_args, kwargs, extra)
            try:
                result = original(*args, **kwargs)
            except BaseException as exc:
                if audit is not None:
                    auditor.finish(audit, None, exc)
                raise
            finally:
                IN_AUDITED_CALL.reset(token)
            if audit is not None:
                auditor.finish(audit, result, None)
            if chosen.operation.wraps_result and hasattr(result, "next"):
                attributes = dict(extra)
                auditor.request_attributes(chosen, call_args, kwargs, attributes)
                return iterator_class(type(result), chosen.operation)(result, auditor, attributes)
            return result

        return call

    @staticmethod
    def _plan(operation: str, entry: OrmEntry, original: Callable[..., Any]) -> CallPlan:
        return CallPlan.compile(lookup(operation), original, renames=entry.renames)

    def _auditor_for(self, bound_self: Any, args: tuple[Any, ...], kwargs: dict[str, Any],
                     qualified: str) -> Auditor | None:
        alias = kwargs.get("using") or kwargs.get("alias")
        if alias is None and qualified.startswith("connections.") and args:
            alias = args[0]  # disconnect("orm")
        if alias is None and bound_self is not None and not qualified.startswith("connections."):
            alias = getattr(bound_self, "_using", None)  # Collection, Role
            owner = getattr(bound_self, "_collection", None)  # Partition, Index
            if alias is None and owner is not None:
                alias = getattr(owner, "_using", None)
        return self.auditors.get(str(alias or "default"))

    def _connect(self, original: Callable[..., Any], manager: Any, args: tuple[Any, ...],
                 kwargs: dict[str, Any]) -> Any:
        try:
            bound = inspect.signature(original).bind(manager, *args, **kwargs)
            params = {k: v for k, v in bound.arguments.items() if k not in ("self", "kwargs")}
            params.update(bound.arguments.get("kwargs") or {})
        except TypeError:
            params = dict(kwargs)
        alias = str(params.pop("alias", "default"))
        if not params.get("uri") and params.get("host"):
            params["uri"] = f"http://{params.pop('host')}:{params.pop('port', 19530)}"
        info = ConnectionInfo.from_parameters(params, credential_key(self.config.credential_key))
        result, auditor = audited_connect(info, self.config, lambda: original(manager, *args, **kwargs),
                                          {"milvus_audit.api": "orm"})
        self.auditors[alias] = auditor
        return result
