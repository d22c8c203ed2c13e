"""The one call path: every way of calling Milvus runs the same gates, and shutdown drains in order."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymilvus
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pymilvus import Collection, CollectionSchema, DataType, FieldSchema, connections, utility

import milvus_audit
from milvus_audit import AccessBlocked, AuditUnavailable, MilvusAuditInstrumentor
from milvus_audit.export.jsonl import read_jsonl
from milvus_audit.integrity.verify import verify
from milvus_audit.respond import Block, Playbook, Webhook
from tests.conftest import Telemetry
from tests.otlp_receiver import OtlpReceiver
from tests.test_detect import DIM, rules_only, vec
from tests.test_respond import Receiver


def schema() -> CollectionSchema:
    return CollectionSchema([FieldSchema("id", DataType.INT64, is_primary=True),
                             FieldSchema("vec", DataType.FLOAT_VECTOR, dim=DIM)])


@pytest.fixture
def orm_alias(lite_uri: str) -> Iterator[str]:
    yield "orm-gates"
    if connections.has_connection("orm-gates"):
        connections.disconnect("orm-gates")


def test_orm_honours_fail_closed(tmp_path: Path, lite_uri: str, orm_alias: str) -> None:
    """`Collection(...).insert(...)` is refused, not sent, once its record cannot be kept."""
    receiver = OtlpReceiver().start()
    port = receiver.grpc_port
    receiver.stop()  # the collector is down: records stay in the spool, which fills up
    pipeline = milvus_audit.configure(f"http://127.0.0.1:{port}", insecure=True, spool_dir=tmp_path / "spool",
                                      spool_max_bytes=32 * 1024, spool_on_full="fail", set_global=False)
    instrumentor = MilvusAuditInstrumentor()
    instrumentor.instrument(audit=pipeline.audit_config(integrity_key=os.urandom(32), fail_closed=True))
    try:
        connections.connect(alias=orm_alias, uri=lite_uri)
        books = Collection("books", schema(), using=orm_alias)
        sent = refused = 0
        for i in range(400):
            try:
                books.insert([[i], [vec(i)]])
                sent += 1
            except AuditUnavailable:
                refused += 1
    finally:
        instrumentor.uninstrument()
    assert refused > 0 and sent + refused == 400
    stored = Collection("books", using=orm_alias).query(expr="id >= 0", output_fields=["count(*)"])
    assert stored[0]["count(*)"] == sent  # a refused insert never reached Milvus
    pipeline.shutdown(timeout_s=1)


def test_orm_honours_blocks(lite_uri: str, telemetry: Telemetry, orm_alias: str) -> None:
    """A principal blocked by a playbook is refused on the ORM path too."""
    playbook = Playbook(rules=["destructive_operation"], actions=[Block(ttl_s=600, scope="enduser")])
    config = telemetry.config(detection=rules_only("destructive_operation"), playbooks=[playbook])
    instrumentor = MilvusAuditInstrumentor()
    instrumentor.instrument(audit=config)
    try:
        connections.connect(alias=orm_alias, uri=lite_uri)
        books = Collection("books", schema(), using=orm_alias)
        Collection("doomed", schema(), using=orm_alias)
        with milvus_audit.enduser("mallory"):
            utility.drop_collection("doomed", using=orm_alias)  # fires, and blocks mallory
            with pytest.raises(AccessBlocked) as blocked:
                books.insert([[1], [vec(1)]])
        with milvus_audit.enduser("alice"):
            books.insert([[2], [vec(2)]])  # others unaffected
    finally:
        instrumentor.uninstrument()
    assert blocked.value.principal == "mallory"
    inserts = [(r["enduser.id"], r["milvus_audit.outcome"], r.get("milvus_audit.failure_reason"))
               for r in telemetry.ops("insert")]
    assert inserts == [("mallory", "failure", "blocked"), ("alice", "success", None)]


def test_drop_in_client_and_stub_run_the_same_gates(tmp_path: Path) -> None:
    """Connect, plain calls, sessions and iterators all meet fail-closed."""
    pipeline = milvus_audit.configure(jsonl_path=tmp_path / "a.jsonl", set_global=False)
    with pytest.raises(AuditUnavailable, match="connect was not sent"):
        milvus_audit.MilvusClient(str(tmp_path / "m.db"), audit=pipeline.audit_config(fail_closed=True))
    pipeline.shutdown()
    records = read_jsonl(tmp_path / "a.jsonl")
    assert [(r["attributes"]["db.operation.name"], r["attributes"]["milvus_audit.failure_reason"])
            for r in records] == [("connect", "client_error")]


def _ordered_stream(tmp_path: Path, hook_url: str, timeout_s: float) -> tuple[Path, Ed25519PrivateKey]:
    """Drops that raise alerts whose webhooks are still in flight when `shutdown()` is called."""
    jsonl = tmp_path / "audit.jsonl"
    signing = Ed25519PrivateKey.generate()
    key = os.urandom(32)
    pipeline = milvus_audit.configure(jsonl_path=jsonl, set_global=False)
    playbook = Playbook(rules=["destructive_operation"], actions=[Webhook(hook_url, retries=0, timeout_s=5)])
    config = pipeline.audit_config(integrity_key=key, signing_key=signing,
                                   detection=rules_only("destructive_operation",
                                                        destructive_operation={"cooldown_s": 0}),
                                   playbooks=[playbook])
    client = milvus_audit.MilvusClient(str(tmp_path / "m.db"), audit=config)
    for i in range(4):
        client.create_collection(f"tmp{i}", dimension=DIM)
        client.drop_collection(f"tmp{i}")
    client.close()
    pipeline.shutdown(timeout_s=timeout_s)  # at once: detection and deliveries are still queued
    reports = verify([jsonl], key=key, public_key=signing.public_key())
    assert [(r.closed, r.findings) for r in reports] == [(True, [])]
    return jsonl, signing


def _before_final_checkpoint(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    finals = [i for i, r in enumerate(records) if r["attributes"].get("milvus_audit.checkpoint.final")]
    assert finals == [len(records) - 1]  # the final checkpoint is the last line
    return records[:-1]


def test_promise_shutdown_drains_alerts_and_responses_before_the_final_checkpoint(tmp_path: Path) -> None:
    hook = Receiver(delay_s=0.2)
    try:
        jsonl, _ = _ordered_stream(tmp_path, hook.url, timeout_s=10)
    finally:
        hook.stop()
    records = _before_final_checkpoint(read_jsonl(jsonl))
    alerts = [r for r in records if r["event_name"] == "milvus.alert"]
    responses = [r["attributes"]["milvus_audit.response.outcome"] for r in records
                 if r["event_name"] == "milvus.response"]
    assert len(alerts) == 4 and responses == ["success"] * 4
    assert len(hook.requests) == 4


def test_promise_shutdown_records_undelivered_responses_as_abandoned(tmp_path: Path) -> None:
    hook = Receiver(delay_s=3)
    try:
        jsonl, _ = _ordered_stream(tmp_path, hook.url, timeout_s=0.5)
    finally:
        hook.stop()
    records = _before_final_checkpoint(read_jsonl(jsonl))
    responses = [r["attributes"]["milvus_audit.response.outcome"] for r in records
                 if r["event_name"] == "milvus.response"]
    assert sorted(set(responses)) in (["abandoned"], ["abandoned", "success"])
    assert len(responses) == 4  # each alert's response is said once, none lost silently
    assert sum(r["event_name"] == "milvus.alert" for r in records) == 4


def test_session_and_iterator_calls_share_the_call_path(lite_uri: str, telemetry: Telemetry) -> None:
    bare = pymilvus.MilvusClient(lite_uri)
    bare.create_collection("docs", dimension=DIM)
    bare.insert("docs", [{"id": i, "vector": vec(i)} for i in range(5)])
    client = milvus_audit.instrument(bare, telemetry.config())
    pages = client.query_iterator("docs", batch_size=2, filter="id >= 0")
    while pages.next():
        pass
    records = [(r["db.operation.name"], r.get("milvus_audit.iterator.page")) for r in telemetry.records()]
    assert records[0] == ("query_iterator", None) and all(op == "query_iterator" for op, _ in records)
    assert [page for _, page in records[1:]] == list(range(1, len(records)))


def test_each_destination_gets_its_own_closed_stream(tmp_path: Path) -> None:
    """Two pipelines with one key: each file holds a whole stream, final checkpoint included."""
    key, signing = os.urandom(32), Ed25519PrivateKey.generate()
    files = [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]
    pipelines = [milvus_audit.configure(jsonl_path=path, set_global=False) for path in files]
    for index, pipeline in enumerate(pipelines):
        client = milvus_audit.MilvusClient(str(tmp_path / f"m{index}.db"),
                                           audit=pipeline.audit_config(integrity_key=key, signing_key=signing))
        client.list_collections()
        client.close()
    for pipeline in pipelines:
        pipeline.shutdown()
    for path in files:
        reports = verify([path], key=key, public_key=signing.public_key())
        assert [(r.closed, r.findings) for r in reports] == [(True, [])], path
