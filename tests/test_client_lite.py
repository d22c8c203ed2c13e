"""The audited client on real Milvus Lite: records, spans, metrics, identity of results and errors."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import grpc
import pymilvus
import pytest
from opentelemetry.trace import SpanKind, StatusCode

import milvus_audit
from milvus_audit import AuditConfig, enduser
from tests.conftest import Telemetry

DIM = 8
SECRET_WORD = "zebra-secret-literal"


def vec(i: int) -> list[float]:
    return [float(i % 7) / 7.0 + 0.01 * k for k in range(DIM)]


@pytest.fixture
def client(lite_uri: str, telemetry: Telemetry) -> Any:
    c = milvus_audit.MilvusClient(lite_uri, audit=telemetry.config())
    c.create_collection("docs", dimension=DIM)
    c.insert("docs", [{"id": i, "vector": vec(i), "title": f"t{i}"} for i in range(50)])
    telemetry.clear()
    yield c
    c.close()


def one(telemetry: Telemetry, op: str) -> dict[str, Any]:
    found = telemetry.ops(op)
    assert len(found) == 1, (op, found)
    return found[0]


def test_drop_in_identity(client: Any, lite_uri: str) -> None:
    assert isinstance(client, pymilvus.MilvusClient)
    assert isinstance(client, milvus_audit.MilvusClient)
    assert "password" not in repr(client)


def test_connect_record(lite_uri: str, telemetry: Telemetry) -> None:
    c = milvus_audit.MilvusClient(lite_uri, audit=telemetry.config())
    c.close()
    connect = one(telemetry, "connect")
    assert connect["milvus_audit.category"] == "connection"
    assert connect["milvus_audit.outcome"] == "success"
    assert connect["milvus_audit.auth.method"] == "none"
    assert connect["db.system.name"] == "milvus"
    assert "server.address" not in connect  # embedded
    assert one(telemetry, "close")["milvus_audit.outcome"] == "success"


def test_search_record_span_and_metrics(client: Any, telemetry: Telemetry) -> None:
    result = client.search("docs", [vec(1), vec(2)], limit=5, output_fields=["title"],
                           filter=f'title == "{SECRET_WORD}" or id > 3')
    record = one(telemetry, "search")
    assert record["db.collection.name"] == "docs"
    assert record["milvus_audit.category"] == "data_read"
    assert record["milvus_audit.mutating"] is False
    assert record["db.milvus.nq"] == 2
    assert record["db.milvus.limit"] == 5
    assert list(record["db.milvus.output_fields"]) == ["title"]
    assert record["db.query.text"] == "title == ? or id > ?"
    assert record["db.response.returned_rows"] == sum(len(hits) for hits in result) == 10
    assert record["milvus_audit.outcome"] == "success"
    assert isinstance(record["milvus_audit.duration_ms"], float)

    (log,) = [r for r in telemetry.log_records() if r.log_record.attributes["db.operation.name"] == "search"]
    assert log.log_record.severity_text == "INFO"
    (span,) = [s for s in telemetry.spans.get_finished_spans() if s.name == "search docs"]
    assert span.kind is SpanKind.CLIENT
    assert log.log_record.trace_id == span.context.trace_id
    assert log.log_record.span_id == span.context.span_id
    assert span.attributes["db.operation.name"] == "search"

    metrics = telemetry.metrics_data()
    names = {m.name: m for rm in metrics.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
    duration = names["db.client.operation.duration"]
    assert duration.unit == "s"
    points = [p for p in duration.data.data_points if p.attributes.get("db.operation.name") == "search"]
    assert points and points[0].attributes["db.collection.name"] == "docs"
    assert "db.response.returned_rows" in names
    assert SECRET_WORD.encode() not in telemetry.exported_bytes()


def test_positional_and_keyword_arguments_give_the_same_record(client: Any, telemetry: Telemetry) -> None:
    client.query("docs", "id < 5", ["id"])
    client.query(collection_name="docs", filter="id < 5", output_fields=["id"])
    positional, keyword = telemetry.ops("query")
    for record in (positional, keyword):
        record.pop("milvus_audit.duration_ms")
    assert positional == keyword
    assert positional["db.collection.name"] == "docs"
    assert positional["db.response.returned_rows"] == 5


def test_every_category(client: Any, telemetry: Telemetry) -> None:
    client.get("docs", ids=[1, 2, 3])
    client.upsert("docs", [{"id": 1, "vector": vec(1), "title": "x"}])
    client.delete("docs", ids=[49])
    client.delete("docs", filter="id in [47, 48]")
    client.describe_collection("docs")
    client.list_databases()
    client.flush("docs")
    client.release_collection("docs")
    client.load_collection("docs")
    with pytest.raises(grpc.RpcError):
        client.create_role("auditor")  # Milvus Lite: UNIMPLEMENTED
    client.get_server_version()
    by_category = {r["db.operation.name"]: r["milvus_audit.category"] for r in telemetry.records()}
    assert by_category == {
        "get": "data_read", "upsert": "data_write", "delete": "data_write",
        "describe_collection": "schema", "list_databases": "database", "flush": "maintenance",
        "release_collection": "resource", "load_collection": "resource", "create_role": "rbac",
        "get_server_version": "connection",
    }
    assert one(telemetry, "get")["db.response.returned_rows"] == 3
    upsert = one(telemetry, "upsert")
    assert upsert["db.operation.batch.size"] == 1 and upsert["milvus_audit.mutating"] is True
    by_ids, by_filter = telemetry.ops("delete")
    assert by_ids["db.operation.batch.size"] == 1
    assert by_filter["db.query.text"] == "id in [?]"
    role = one(telemetry, "create_role")
    assert role["milvus_audit.failure_reason"] == "unimplemented"
    assert role["milvus_audit.target.role"] == "auditor"
    assert role["error.type"] == "UNIMPLEMENTED"


def test_insert_counts_rows_and_never_exports_them(client: Any, telemetry: Telemetry) -> None:
    rows = [{"id": 100 + i, "vector": [0.123456789] * DIM, "title": SECRET_WORD} for i in range(7)]
    result = client.insert("docs", rows)
    record = one(telemetry, "insert")
    assert record["db.operation.batch.size"] == 7
    assert record["milvus_audit.affected_rows"] == result["insert_count"] == 7
    exported = telemetry.exported_bytes()
    assert SECRET_WORD.encode() not in exported
    assert b"0.123456789" not in exported


def test_returns_the_very_object_and_raises_the_very_exception(lite_uri: str, telemetry: Telemetry) -> None:
    bare = pymilvus.MilvusClient(lite_uri)
    audited = milvus_audit.instrument(bare, telemetry.config())
    sentinel = object()
    original = bare.describe_collection

    def describe(*args: Any, **kwargs: Any) -> Any:
        return sentinel

    bare.describe_collection = describe  # type: ignore[method-assign]
    assert audited.describe_collection("x") is sentinel
    error = ValueError("boom")

    def failing(*args: Any, **kwargs: Any) -> Any:
        raise error

    bare.describe_collection = failing  # type: ignore[method-assign]
    with pytest.raises(ValueError) as raised:
        audited.describe_collection("x")
    assert raised.value is error
    bare.describe_collection = original  # type: ignore[method-assign]
    records = telemetry.ops("describe_collection")
    assert [r["milvus_audit.outcome"] for r in records] == ["success", "failure"]
    assert records[1]["error.type"] == "ValueError"


def test_failures_are_classified(client: Any, telemetry: Telemetry) -> None:
    with pytest.raises(pymilvus.MilvusException) as missing:
        client.describe_collection("no_such_collection")
    with pytest.raises(pymilvus.MilvusException):
        client.search("docs", [vec(1)], limit=5, filter=f'title == "{SECRET_WORD}" and and')
    with pytest.raises(pymilvus.MilvusException):
        client.insert("docs", [{"id": "not-an-int", "vector": [1.0]}])
    not_found = one(telemetry, "describe_collection")
    assert not_found["milvus_audit.failure_reason"] == "not_found"
    assert not_found["db.response.status_code"] == str(missing.value.code)
    assert not_found["error.type"] == "CollectionNotFound"
    bad_filter = one(telemetry, "search")
    assert bad_filter["milvus_audit.outcome"] == "failure"
    assert bad_filter["milvus_audit.failure_reason"] in ("invalid_argument", "server_error")
    bad_insert = one(telemetry, "insert")
    assert bad_insert["milvus_audit.failure_reason"] == "invalid_argument"
    failures = [r for r in telemetry.log_records() if r.log_record.attributes["milvus_audit.outcome"] == "failure"]
    assert failures and all(r.log_record.severity_text == "WARN" for r in failures)
    error_spans = [s for s in telemetry.spans.get_finished_spans() if s.status.status_code is StatusCode.ERROR]
    assert len(error_spans) == 3 and all("error.type" in s.attributes for s in error_spans)
    assert SECRET_WORD.encode() not in telemetry.exported_bytes()


def test_raw_and_none_filter_policies(lite_uri: str, telemetry: Telemetry) -> None:
    raw = milvus_audit.MilvusClient(lite_uri, audit=telemetry.config(capture_filters="raw"))
    raw.create_collection("c", dimension=DIM)
    raw.query("c", filter='id in [1, 2] and title == "x"')
    none = milvus_audit.MilvusClient(lite_uri, audit=telemetry.config(capture_filters="none"))
    none.query("c", filter='id in [1, 2]')
    first, second = telemetry.ops("query")
    assert first["db.query.text"] == 'id in [1, 2] and title == "x"'
    assert "db.query.text" not in second
    with pytest.raises(ValueError, match="capture_filters"):
        AuditConfig(capture_filters="everything")  # type: ignore[arg-type]


def test_filter_params_values_are_never_exported(client: Any, telemetry: Telemetry) -> None:
    try:
        client.query("docs", filter="title == {t}", filter_params={"t": SECRET_WORD})
    except pymilvus.MilvusException:
        pass  # Milvus Lite does not support filter templates; the record must still be safe
    assert one(telemetry, "query")["db.query.text"] == "title == {t}"
    assert SECRET_WORD.encode() not in telemetry.exported_bytes()


def test_iterators_audit_every_page(client: Any, telemetry: Telemetry) -> None:
    iterator = client.query_iterator("docs", batch_size=20, filter="id >= 0", output_fields=["id"])
    total = 0
    while page := iterator.next():
        total += len(page)
    iterator.close()
    assert total == 50
    records = telemetry.ops("query_iterator")
    pages = [r for r in records if "milvus_audit.iterator.page" in r]
    assert [p["milvus_audit.iterator.page"] for p in pages] == [1, 2, 3, 4]
    assert [p["db.response.returned_rows"] for p in pages] == [20, 20, 10, 0]
    assert all(p["db.collection.name"] == "docs" and p["db.query.text"] == "id >= ?" for p in pages)

    telemetry.clear()
    search_iterator = client.search_iterator("docs", [vec(3)], batch_size=10, limit=25)
    hits = 0
    while page := search_iterator.next():
        hits += len(page)
    assert hits == 25
    pages = [r for r in telemetry.ops("search_iterator") if "milvus_audit.iterator.page" in r]
    assert sum(p["db.response.returned_rows"] for p in pages) == 25


def test_session_calls_are_audited(client: Any, telemetry: Telemetry) -> None:
    session = client.session("cluster-a")
    try:
        session.query("docs", filter="id < 3")
    except pymilvus.MilvusException:
        pass  # Milvus Lite may refuse cluster routing; the call must be audited either way
    query = one(telemetry, "query")
    assert query["milvus_audit.session.cluster_id"] == "cluster-a"
    assert query["db.collection.name"] == "docs"
    assert one(telemetry, "session")["milvus_audit.category"] == "connection"


def test_use_database_updates_namespace(client: Any, telemetry: Telemetry) -> None:
    client.use_database("default")
    client.list_collections()
    assert one(telemetry, "list_collections")["db.namespace"] == "default"


def test_enduser_across_threads_and_tasks(client: Any, telemetry: Telemetry) -> None:
    def work(user: str) -> None:
        with enduser(user, role="analyst"):
            client.query("docs", filter="id == 1")

    threads = [threading.Thread(target=work, args=(f"user-{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    client.query("docs", filter="id == 2")
    users = sorted(r.get("enduser.id", "-") for r in telemetry.ops("query"))
    assert users == ["-", "user-0", "user-1", "user-2", "user-3"]
    assert all(r["enduser.role"] == "analyst" for r in telemetry.ops("query") if "enduser.id" in r)


def test_async_client(lite_uri: str, telemetry: Telemetry) -> None:
    # Create the collection with the sync client; Milvus Lite serves both.
    setup = milvus_audit.MilvusClient(lite_uri, audit=telemetry.config())
    setup.create_collection("docs", dimension=DIM)
    setup.insert("docs", [{"id": i, "vector": vec(i)} for i in range(10)])
    telemetry.clear()

    async def main() -> None:
        async with milvus_audit.AsyncMilvusClient(lite_uri, audit=telemetry.config()) as client:
            assert isinstance(client, pymilvus.AsyncMilvusClient)

            async def as_user(user: str) -> Any:
                with enduser(user):
                    return await client.search("docs", [vec(1)], limit=3)

            results = await asyncio.gather(as_user("a"), as_user("b"))
            assert all(len(r[0]) == 3 for r in results)
            with pytest.raises(pymilvus.MilvusException):
                await client.describe_collection("missing")

    asyncio.run(main())
    searches = telemetry.ops("search")
    assert sorted(r["enduser.id"] for r in searches) == ["a", "b"]
    assert all(r["db.response.returned_rows"] == 3 for r in searches)
    assert one(telemetry, "describe_collection")["milvus_audit.failure_reason"] == "not_found"
    assert one(telemetry, "connect")["milvus_audit.outcome"] == "success"
    assert one(telemetry, "close")["milvus_audit.outcome"] == "success"


def test_unknown_public_method_is_audited_as_other(lite_uri: str, telemetry: Telemetry) -> None:
    class NewerClient(pymilvus.MilvusClient):
        def brand_new_call(self, collection_name: str) -> str:
            return "ok"

    audited = milvus_audit.instrument(NewerClient(lite_uri), telemetry.config())
    assert audited.brand_new_call("docs") == "ok"
    record = one(telemetry, "brand_new_call")
    assert record["milvus_audit.category"] == "other"


def test_errors_inside_auditing_are_contained(client: Any, telemetry: Telemetry) -> None:
    before = milvus_audit.internal_error_count()

    def broken_sink(event: Any) -> None:
        raise RuntimeError("sink exploded")

    client.audit_auditor.sinks.append(broken_sink)
    result = client.query("docs", filter="id == 1")
    client.audit_auditor.sinks.remove(broken_sink)
    assert len(result) == 1
    assert milvus_audit.internal_error_count() == before + 1


def test_no_work_when_nothing_listens(lite_uri: str) -> None:
    from opentelemetry._logs import NoOpLoggerProvider
    from opentelemetry.trace import NoOpTracerProvider

    quiet = milvus_audit.MilvusClient(lite_uri, audit=AuditConfig(
        tracer_provider=NoOpTracerProvider(), logger_provider=NoOpLoggerProvider()))
    assert not quiet.audit_auditor.listening()
    quiet.create_collection("q", dimension=DIM)
    assert quiet.has_collection("q") is True
