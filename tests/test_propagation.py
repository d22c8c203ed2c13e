"""Trace propagation: what an audited client sends on the wire, read by a real gRPC server on loopback.

The server answers every Milvus RPC with an empty message (status OK) and keeps each call's
metadata, so the tests see exactly the headers pymilvus's channel sent: `traceparent` and
`client-request-id` on every RPC, connect included, from the call's own span.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.sdk.trace import TracerProvider

import milvus_audit
from milvus_audit import semconv
from milvus_audit.export.jsonl import read_jsonl
from milvus_audit.otel.setup import configure
from milvus_audit.runtime.diagnostics import INTERNAL_ERRORS

pytest.importorskip("pymilvus.client.call_context")  # pymilvus 3: the propagation hooks

SERVICE = "milvus.proto.milvus.MilvusService"


class CapturingServer:
    """Answers every MilvusService RPC with an empty message; keeps (method, metadata) of each."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, str]]] = []
        self._lock = threading.Lock()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        self._server.add_generic_rpc_handlers((self,))
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()

    def service(self, details: Any) -> Any:  # grpc.GenericRpcHandler
        method = details.method.rsplit("/", 1)[-1]
        if not details.method.startswith(f"/{SERVICE}/"):
            return None

        def answer(request: bytes, context: Any) -> bytes:
            with self._lock:
                self.calls.append((method, dict(context.invocation_metadata())))
            return b""  # every field at its default: status OK, empty lists
        return grpc.unary_unary_rpc_method_handler(answer)

    def of(self, method: str) -> list[dict[str, str]]:
        with self._lock:
            return [metadata for name, metadata in self.calls if name == method]

    def stop(self) -> None:
        self._server.stop(None)


@pytest.fixture
def server() -> Iterator[CapturingServer]:
    capturing = CapturingServer()
    yield capturing
    capturing.stop()


def _client(server: CapturingServer, jsonl: Path, **audit: Any) -> tuple[Any, Any]:
    pipeline = configure(jsonl_path=jsonl, set_global=False)
    client = milvus_audit.MilvusClient(f"http://127.0.0.1:{server.port}", user="app", password="app-secret-1",
                                       audit=pipeline.audit_config(**audit))
    return client, pipeline


def _records(pipeline: Any, jsonl: Path) -> dict[str, dict[str, Any]]:
    pipeline.force_flush()
    return {r["attributes"][semconv.DB_OPERATION_NAME]: r for r in read_jsonl(jsonl)
            if r["event_name"] == semconv.AUDIT_EVENT}


def _trace_of(traceparent: str) -> tuple[str, str, str]:
    version, trace_id, span_id, flags = traceparent.split("-")
    assert version == "00" and len(trace_id) == 32 and len(span_id) == 16
    return trace_id, span_id, flags


def test_every_rpc_carries_its_calls_trace_context_connect_included(server: CapturingServer, tmp_path: Path) -> None:
    jsonl = tmp_path / "audit.jsonl"
    client, pipeline = _client(server, jsonl)
    client.list_collections()
    client.list_collections(client_request_id="f" * 32)  # the application's own id is kept
    records = _records(pipeline, jsonl)
    client.close()
    pipeline.shutdown()

    (connect,) = server.of("Connect")
    trace_id, span_id, flags = _trace_of(connect["traceparent"])
    assert trace_id == records["connect"]["trace_id"] and span_id == records["connect"]["span_id"]
    assert flags == "01" and connect["client-request-id"] == trace_id

    first, second = server.of("ShowCollections")
    listed = [r for r in read_jsonl(jsonl) if r["attributes"].get(semconv.DB_OPERATION_NAME) == "list_collections"]
    assert _trace_of(first["traceparent"])[0] == listed[0]["trace_id"] == first["client-request-id"]
    assert _trace_of(second["traceparent"])[0] == listed[1]["trace_id"]
    assert second["client-request-id"] == "f" * 32
    assert listed[1]["attributes"][semconv.CLIENT_REQUEST_ID] == "f" * 32
    assert semconv.CLIENT_REQUEST_ID not in listed[0]["attributes"]
    for _, metadata in server.calls:  # pymilvus's own headers are still there
        assert metadata.get("authorization") and "app-secret-1" not in str(metadata)


def test_the_applications_own_trace_propagates_through_the_audited_call(server: CapturingServer,
                                                                         tmp_path: Path) -> None:
    jsonl = tmp_path / "audit.jsonl"
    client, pipeline = _client(server, jsonl)
    tracer = TracerProvider().get_tracer("the-application")
    with tracer.start_as_current_span("handle-request") as span:
        client.list_collections()
        app_trace = f"{span.get_span_context().trace_id:032x}"
    records = _records(pipeline, jsonl)
    client.close()
    pipeline.shutdown()
    (metadata,) = server.of("ShowCollections")
    assert records["list_collections"]["trace_id"] == app_trace == _trace_of(metadata["traceparent"])[0]
    assert _trace_of(metadata["traceparent"])[1] == records["list_collections"]["span_id"]  # our span, its child


def test_propagate_false_sends_nothing(server: CapturingServer, tmp_path: Path) -> None:
    jsonl = tmp_path / "audit.jsonl"
    client, pipeline = _client(server, jsonl, propagate=False)
    client.list_collections()
    client.close()
    pipeline.shutdown()
    assert {method for method, _ in server.calls} >= {"Connect", "ShowCollections"}
    for _, metadata in server.calls:
        assert "traceparent" not in metadata and metadata.get("client-request-id", "") == ""


def test_a_failure_building_the_headers_never_fails_the_rpc(server: CapturingServer, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from milvus_audit.instrumentation import propagation

    jsonl = tmp_path / "audit.jsonl"
    client, pipeline = _client(server, jsonl)

    def broken(metadata: Any) -> Any:
        raise RuntimeError("header bug")
    monkeypatch.setattr(propagation, "_with_trace_headers", broken)
    before = INTERNAL_ERRORS.count
    assert client.list_collections() == []
    client.close()
    pipeline.shutdown()
    assert INTERNAL_ERRORS.count > before
    (metadata,) = server.of("ShowCollections")
    assert "traceparent" not in metadata


def test_an_asyncio_client_propagates_too(server: CapturingServer, tmp_path: Path) -> None:
    import asyncio

    jsonl = tmp_path / "audit.jsonl"
    pipeline = configure(jsonl_path=jsonl, set_global=False)

    async def run() -> None:
        client = milvus_audit.AsyncMilvusClient(f"http://127.0.0.1:{server.port}", user="app",
                                                password="app-secret-1", audit=pipeline.audit_config())
        await client.list_collections()
        await client.close()
    asyncio.run(run())
    records = _records(pipeline, jsonl)
    pipeline.shutdown()
    (metadata,) = server.of("ShowCollections")
    assert _trace_of(metadata["traceparent"])[0] == records["list_collections"]["trace_id"]
    assert metadata["client-request-id"] == records["list_collections"]["trace_id"]
