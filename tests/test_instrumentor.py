"""Auto-instrumentation: every pymilvus client and ORM call audited, and uninstrument restores pymilvus."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pymilvus
import pytest
from pymilvus import Collection, CollectionSchema, DataType, FieldSchema, connections, utility

import milvus_audit
from milvus_audit import MilvusAuditInstrumentor
from milvus_audit.instrumentation.orm import public_orm_calls
from milvus_audit.model.catalog import ORM
from tests.conftest import Telemetry

DIM = 4


@pytest.fixture
def instrumented(telemetry: Telemetry) -> Iterator[MilvusAuditInstrumentor]:
    instrumentor = MilvusAuditInstrumentor()
    instrumentor.instrument(audit=telemetry.config())
    yield instrumentor
    instrumentor.uninstrument()


@pytest.mark.catalog
def test_every_public_orm_call_is_in_the_catalog() -> None:
    missing = sorted(public_orm_calls() - set(ORM))
    assert not missing, f"pymilvus {pymilvus.__version__} ORM calls not in catalog.ORM: {missing}"


def test_clients_made_anywhere_are_audited(instrumented: Any, lite_uri: str, telemetry: Telemetry) -> None:
    client = pymilvus.MilvusClient(lite_uri)  # as a framework would
    assert type(client) is pymilvus.MilvusClient
    client.create_collection("docs", dimension=DIM)
    client.search("docs", [[0.1] * DIM], limit=2)
    assert [r["db.operation.name"] for r in telemetry.records()] == ["connect", "create_collection", "search"]
    instrumented.instrument(audit=telemetry.config())  # idempotent
    telemetry.clear()
    again = pymilvus.MilvusClient(lite_uri)
    again.has_collection("docs")
    assert [r["db.operation.name"] for r in telemetry.records()] == ["connect", "has_collection"]


def test_drop_in_and_auto_instrumentation_record_once(instrumented: Any, lite_uri: str, telemetry: Telemetry) -> None:
    client = milvus_audit.MilvusClient(lite_uri, audit=telemetry.config())
    client.list_collections()
    assert [r["db.operation.name"] for r in telemetry.records()] == ["connect", "list_collections"]


def test_clients_made_before_stay_unaudited_and_uninstrument_restores(lite_uri: str, telemetry: Telemetry) -> None:
    before = pymilvus.MilvusClient(lite_uri)
    originals = {name: vars(Collection)[name] for name in ("search", "insert", "__init__")}
    client_before = dict(vars(pymilvus.MilvusClient))
    async_before = dict(vars(pymilvus.AsyncMilvusClient))
    utility_before = utility.has_collection
    instrumentor = MilvusAuditInstrumentor()
    instrumentor.instrument(audit=telemetry.config())
    before.list_collections()
    assert telemetry.records() == []
    instrumentor.uninstrument()
    assert dict(vars(pymilvus.MilvusClient)) == client_before  # exactly as it was
    assert dict(vars(pymilvus.AsyncMilvusClient)) == async_before
    assert {name: vars(Collection)[name] for name in originals} == originals
    assert utility.has_collection is utility_before
    plain = pymilvus.MilvusClient(lite_uri)
    assert type(plain) is pymilvus.MilvusClient
    plain.list_collections()
    assert telemetry.records() == []


def test_instrument_is_thread_safe(lite_uri: str, telemetry: Telemetry) -> None:
    instrumentor = MilvusAuditInstrumentor()
    errors: list[BaseException] = []

    def flip() -> None:
        try:
            for _ in range(50):
                instrumentor.instrument(audit=telemetry.config())
                instrumentor.uninstrument()
        except BaseException as exc:  # pragma: no cover - what the test looks for
            errors.append(exc)

    threads = [threading.Thread(target=flip) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    client = pymilvus.MilvusClient(lite_uri)
    client.list_collections()
    assert "_milvus_audit_auditor" not in vars(client)
    assert telemetry.records() == []


def test_orm_calls_are_audited(instrumented: Any, lite_uri: str, telemetry: Telemetry) -> None:
    connections.connect(alias="orm", uri=lite_uri)
    schema = CollectionSchema([FieldSchema("id", DataType.INT64, is_primary=True),
                               FieldSchema("vec", DataType.FLOAT_VECTOR, dim=DIM),
                               FieldSchema("title", DataType.VARCHAR, max_length=64)])
    books = Collection("books", schema, using="orm")
    books.insert([[1, 2, 3], [[0.1] * DIM, [0.2] * DIM, [0.3] * DIM], ["a", "secret-title", "c"]])
    books.create_index("vec", {"index_type": "FLAT", "metric_type": "L2", "params": {}})
    books.load()
    hits = books.search([[0.1] * DIM], "vec", {"metric_type": "L2"}, limit=2, expr='title != "secret-title"')
    rows = books.query(expr="id > 1", output_fields=["id"])
    pages = books.query_iterator(batch_size=2, expr="id >= 0")
    while pages.next():
        pass
    assert utility.has_collection("books", using="orm")
    books.drop()
    connections.disconnect("orm")

    records = telemetry.records()
    ops = [r["db.operation.name"] for r in records]
    assert ops[:2] == ["connect", "create_collection"]
    for op in ("insert", "create_index", "load_collection", "search", "query", "query_iterator", "has_collection",
               "drop_collection", "close"):
        assert op in ops, op
    search = next(r for r in records if r["db.operation.name"] == "search")
    assert search["db.collection.name"] == "books" and search["db.query.text"] == "title != ?"
    assert search["db.response.returned_rows"] == len(hits[0])
    assert search["milvus_audit.api"] == "orm" and search["code.function.name"] == "Collection.search"
    query = next(r for r in records if r["db.operation.name"] == "query")
    assert query["db.response.returned_rows"] == len(rows) == 2
    insert = next(r for r in records if r["db.operation.name"] == "insert")
    assert insert["db.collection.name"] == "books" and insert["milvus_audit.category"] == "data_write"
    pages_seen = [r for r in records if r.get("milvus_audit.iterator.page")]
    assert pages_seen and all(p["db.collection.name"] == "books" for p in pages_seen)
    # no ORM call is recorded twice (Collection.drop calls utility internally, for example)
    assert ops.count("drop_collection") == 1
    assert b"secret-title" not in telemetry.exported_bytes()
