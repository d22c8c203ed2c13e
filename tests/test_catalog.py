"""The catalog covers every public method of the installed pymilvus clients.

Also run under pymilvus 2.6 in a second environment (`make catalog26`).
"""

from __future__ import annotations

import inspect
from pathlib import Path

import pymilvus
import pytest

from milvus_audit.instrumentation.client import _AsyncProxy, _SyncProxy
from milvus_audit.model.catalog import CATALOG, Category, lookup

pytestmark = pytest.mark.catalog


def _public_methods(cls: type) -> set[str]:
    return {name for name in dir(cls) if not name.startswith("_")
            and callable(getattr(cls, name, None))}


@pytest.mark.parametrize("cls", [pymilvus.MilvusClient, pymilvus.AsyncMilvusClient])
def test_every_public_method_is_in_the_catalog(cls: type) -> None:
    missing = sorted(_public_methods(cls) - set(CATALOG))
    assert not missing, f"pymilvus {pymilvus.__version__} {cls.__name__} methods not in the catalog: {missing}"


@pytest.mark.parametrize(("cls", "proxy"), [(pymilvus.MilvusClient, _SyncProxy),
                                            (pymilvus.AsyncMilvusClient, _AsyncProxy)])
def test_every_server_method_has_an_audited_wrapper(cls: type, proxy: type) -> None:
    for name in _public_methods(cls):
        if CATALOG[name].local:
            assert name not in proxy._audit_plans
            continue
        assert name in proxy._audit_plans, name
        wrapper = getattr(proxy, name)
        assert inspect.iscoroutinefunction(wrapper) == inspect.iscoroutinefunction(getattr(cls, name)), name


def test_catalog_parameters_exist_in_the_signatures() -> None:
    """A parameter the catalog names must exist in the method it describes."""
    for cls in (pymilvus.MilvusClient, pymilvus.AsyncMilvusClient):
        for name in _public_methods(cls):
            op = CATALOG[name]
            parameters = inspect.signature(getattr(cls, name)).parameters
            named = [op.collection, op.target_user, op.target_role, op.privilege, op.object_type,
                     op.object_name, op.privilege_group, *op.secrets, *op.extra_params]
            for parameter in filter(None, named):
                assert parameter in parameters, f"{cls.__name__}.{name} has no parameter {parameter!r}"


def test_unknown_methods_are_audited_as_other() -> None:
    op = lookup("some_future_method")
    assert op.category is Category.OTHER and not op.local


def test_events_doc_is_generated_from_the_catalog() -> None:
    from milvus_audit.model.catalog_docs import render

    path = Path(__file__).resolve().parents[1] / "docs" / "events.md"
    assert path.read_text() == render(), \
        "docs/events.md is stale: python -m milvus_audit.model.catalog_docs > docs/events.md"
