"""Real frameworks on Milvus Lite, audited by `opentelemetry-instrument` with no code changes.

Runs in its own environment (`make frameworks`): langchain-milvus and
llama-index-vector-stores-milvus require pymilvus < 3.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.otlp_receiver import OtlpReceiver

ROOT = Path(__file__).resolve().parents[1]
DOCUMENT_TEXT = (b"vacation policy", b"VPN password", b"Expense reports")

pytest.importorskip("langchain_milvus", reason="runs in .venv-frameworks (make frameworks)")


def run_instrumented(script: list[str], receiver: OtlpReceiver, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    launcher = Path(sys.executable).with_name("opentelemetry-instrument")
    env = dict(os.environ, OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{receiver.grpc_port}",
               OTEL_LOGS_EXPORTER="otlp", OTEL_TRACES_EXPORTER="otlp", OTEL_METRICS_EXPORTER="none",
               OTEL_SERVICE_NAME="framework-app", OTEL_BLRP_SCHEDULE_DELAY="100",
               # OpenLLMetry's Milvus instrumentation is installed here for the benchmark; it exports
               # document text in its search span events, so it must not run in this leak test.
               OTEL_PYTHON_DISABLED_INSTRUMENTATIONS="milvus")
    return subprocess.run([str(launcher), sys.executable, *script], capture_output=True, text=True, timeout=300,
                          env=env, cwd=tmp_path)


def test_langchain_app_is_audited_by_opentelemetry_instrument(receiver: OtlpReceiver, tmp_path: Path) -> None:
    run = run_instrumented([str(ROOT / "examples" / "langchain_app.py"), str(tmp_path / "lc.db")], receiver, tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "2 hits" in run.stdout
    records = [r["attributes"] for r in receiver.audit_logs()]
    ops = [r["db.operation.name"] for r in records]
    assert "connect" in ops and "insert" in ops and "search" in ops
    search = next(r for r in records if r["db.operation.name"] == "search")
    assert search["db.collection.name"] == "handbook"
    assert search["enduser.id"] == "alice@example.com"
    insert = next(r for r in records if r["db.operation.name"] == "insert")
    assert insert["db.collection.name"] == "handbook" and insert["db.operation.batch.size"] == 3
    assert all(r["milvus_audit.category"] for r in records)
    exported = receiver.all_bytes()
    for text in DOCUMENT_TEXT:
        assert text not in exported
    assert len(ops) == len(set(id(r) for r in records))  # one record per call


LLAMA_APP = """
import sys
from llama_index.core import Document, Settings, StorageContext, VectorStoreIndex
from llama_index.core.embeddings import MockEmbedding
from llama_index.vector_stores.milvus import MilvusVectorStore
import milvus_audit

Settings.embed_model = MockEmbedding(embed_dim=8)
Settings.llm = None
store = MilvusVectorStore(uri=sys.argv[1], collection_name="wiki", dim=8, overwrite=True,
                         use_async_client=False)  # its async client needs a running event loop
index = VectorStoreIndex.from_documents(
    [Document(text="The vacation policy is 30 days a year."), Document(text="The VPN password rotates.")],
    storage_context=StorageContext.from_defaults(vector_store=store))
with milvus_audit.enduser("bob"):
    nodes = index.as_retriever(similarity_top_k=1).retrieve("vacation")
print(len(nodes), "nodes")
"""


def test_llamaindex_app_is_audited(receiver: OtlpReceiver, tmp_path: Path) -> None:
    pytest.importorskip("llama_index.vector_stores.milvus")
    app = tmp_path / "llama_app.py"
    app.write_text(LLAMA_APP)
    run = run_instrumented([str(app), str(tmp_path / "li.db")], receiver, tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    records = [r["attributes"] for r in receiver.audit_logs()]
    search = next(r for r in records if r["db.operation.name"] == "search")
    assert search["db.collection.name"] == "wiki" and search["enduser.id"] == "bob"
    assert all(text not in receiver.all_bytes() for text in DOCUMENT_TEXT)
