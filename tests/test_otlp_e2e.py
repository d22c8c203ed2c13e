"""End to end: `configure()` sends records over real OTLP (gRPC and HTTP) and to JSONL."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.otlp_receiver import OtlpReceiver

PASSWORD = "pw-Pl4nted-Secret-123"
LITERAL = "literal-Pl4nted-Value"
VECTOR_VALUE = "0.987654321"

APP = textwrap.dedent(f"""
    import sys
    import milvus_audit
    endpoint, protocol, jsonl, db = sys.argv[1:5]
    pipeline = milvus_audit.configure(endpoint, protocol=protocol, service_name="e2e-app",
                                      insecure=True if protocol == "grpc" else None,
                                      jsonl_path=jsonl, metric_export_interval_ms=200)
    client = milvus_audit.MilvusClient(db, user="alice", password="{PASSWORD}")
    client.create_collection("books", dimension=4)
    client.insert("books", [{{"id": i, "vector": [{VECTOR_VALUE}] * 4, "title": "{LITERAL}"}} for i in range(5)])
    with milvus_audit.enduser("reader-7"):
        client.search("books", [[{VECTOR_VALUE}] * 4], limit=3, filter='title == "{LITERAL}"')
    try:
        client.describe_collection("missing")
    except Exception:
        pass
    client.drop_collection("books")
    client.close()
    pipeline.force_flush()
    pipeline.shutdown()
""")

EXPECTED_OPS = ["connect", "create_collection", "insert", "search", "describe_collection",
                "drop_collection", "close"]


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_records_arrive_over_otlp_and_jsonl(protocol: str, receiver: OtlpReceiver, tmp_path: Path) -> None:
    port = receiver.grpc_port if protocol == "grpc" else receiver.http_port
    endpoint = f"http://127.0.0.1:{port}"
    jsonl = tmp_path / "audit.jsonl"
    app = tmp_path / "app.py"
    app.write_text(APP)
    run = subprocess.run([sys.executable, str(app), endpoint, protocol, str(jsonl), str(tmp_path / "m.db")],
                         capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr[-3000:]

    records = receiver.audit_logs()
    assert [r["attributes"]["db.operation.name"] for r in records] == EXPECTED_OPS
    by_op = {r["attributes"]["db.operation.name"]: r for r in records}
    for record in records:
        attributes = record["attributes"]
        assert attributes["db.system.name"] == "milvus"
        assert attributes["user.name"] == "alice"
        assert attributes["milvus_audit.auth.method"] == "password"
        assert record["resource"]["service.name"] == "e2e-app"
        assert len(record["trace_id"]) == 32 and len(record["span_id"]) == 16
    search = by_op["search"]["attributes"]
    assert search["db.query.text"] == "title == ?"
    assert search["enduser.id"] == "reader-7"
    assert search["db.response.returned_rows"] == 3
    assert by_op["insert"]["attributes"]["db.operation.batch.size"] == 5
    failed = by_op["describe_collection"]
    assert failed["severity_text"] == "WARN"
    assert failed["attributes"]["milvus_audit.failure_reason"] == "not_found"
    spans = {s["span_id"]: s for s in receiver.spans}
    assert spans[by_op["search"]["span_id"]]["name"] == "search books"
    assert spans[by_op["search"]["span_id"]]["kind"] == 3  # SPAN_KIND_CLIENT
    assert "db.client.operation.duration" in receiver.metric_names

    exported = receiver.all_bytes() + jsonl.read_bytes()
    for secret in (PASSWORD, LITERAL, VECTOR_VALUE):
        assert secret.encode() not in exported, secret

    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [line["attributes"]["db.operation.name"] for line in lines] == EXPECTED_OPS
    for line in lines:
        assert set(line) == {"timestamp", "event_name", "severity_text", "trace_id", "span_id",
                             "attributes", "resource"}
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", line["timestamp"])
        assert line["event_name"] == "milvus.audit"
        assert re.fullmatch(r"[0-9a-f]{32}", line["trace_id"])
    assert lines[3]["span_id"] == by_op["search"]["span_id"]


def test_configure_does_not_replace_the_applications_providers(tmp_path: Path) -> None:
    script = textwrap.dedent("""
        import logging
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        import milvus_audit
        logging.basicConfig()
        mine = TracerProvider()
        trace.set_tracer_provider(mine)
        pipeline = milvus_audit.configure(console=False)
        assert trace.get_tracer_provider() is mine
        assert pipeline.tracer_provider is mine
        assert any("TracerProvider" in note for note in pipeline.notes)
        print("ok")
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and "ok" in run.stdout, run.stderr
    assert "already set a TracerProvider" in run.stderr
