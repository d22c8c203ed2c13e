"""Logs that can be trusted: outages, crashes, full disks, concurrency, fuzzing and hostile values."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pymilvus
import pytest
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider

import milvus_audit
from milvus_audit import AuditUnavailable
from milvus_audit.export.jsonl import JsonlExporter, JsonlProcessor, read_jsonl
from milvus_audit.integrity.verify import verify
from tests.otlp_receiver import OtlpReceiver


def fresh_key() -> bytes:
    """Streams are per key and process: a fresh key gives each test a stream starting at seq 1."""
    return os.urandom(32)


class StubClient(pymilvus.MilvusClient):
    """Answers at once, without a server: isolates the audit path for volume tests."""

    def __init__(self) -> None:
        pass

    def search(self, collection_name: str, data: Any = None, **kwargs: Any) -> Any:
        return [[{"id": 1, "distance": 0.1}]]


class AsyncStubClient(pymilvus.AsyncMilvusClient):
    def __init__(self) -> None:
        pass

    async def search(self, collection_name: str, data: Any = None, **kwargs: Any) -> Any:
        return [[{"id": 1, "distance": 0.1}]]


def seqs(receiver: OtlpReceiver) -> list[int]:
    return sorted(r["attributes"]["milvus_audit.seq"] for r in receiver.audit_logs())


def test_collector_down_for_30_s_loses_nothing(tmp_path: Path) -> None:
    receiver = OtlpReceiver().start()
    port = receiver.grpc_port
    receiver.stop()  # the collector goes down
    down_at = time.monotonic()
    pipeline = milvus_audit.configure(f"http://127.0.0.1:{port}", insecure=True, spool_dir=tmp_path / "spool",
                                      set_global=False)
    client = milvus_audit.instrument(StubClient(), pipeline.audit_config(integrity_key=fresh_key()))
    for _ in range(10_000):
        client.search("docs", [[0.1, 0.2]], limit=3)
    time.sleep(max(0.0, 30 - (time.monotonic() - down_at)))
    back = OtlpReceiver().start(grpc_port=port)  # the collector comes back
    try:
        assert pipeline.force_flush(90_000)
        assert seqs(back) == list(range(1, 10_001))
    finally:
        pipeline.shutdown()
        back.stop()


CRASHING_APP = textwrap.dedent("""
    import sys, time, pymilvus, milvus_audit
    class Stub(pymilvus.MilvusClient):
        def __init__(self): pass
        def search(self, *args, **kwargs): return [[{"id": 1}]]
    endpoint, spool, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    pipeline = milvus_audit.configure(endpoint, insecure=True, spool_dir=spool, set_global=False)
    client = milvus_audit.instrument(Stub(), pipeline.audit_config(integrity_key=bytes(range(32, 64))))
    for _ in range(count):
        client.search("docs", [[0.1]])
    print("written", flush=True)
    if count:
        time.sleep(600)  # killed here, mid-stream, with nothing delivered
    pipeline.force_flush(60_000)
    print("delivered", flush=True)
""")


def test_sigkill_mid_stream_then_restart_delivers_everything(tmp_path: Path) -> None:
    receiver = OtlpReceiver().start()
    dead_port = receiver.grpc_port
    receiver.stop()
    app = tmp_path / "app.py"
    app.write_text(CRASHING_APP)
    spool = tmp_path / "spool"
    victim = subprocess.Popen([sys.executable, str(app), f"http://127.0.0.1:{dead_port}", str(spool), "3000"],
                              stdout=subprocess.PIPE, text=True)
    assert victim.stdout is not None and victim.stdout.readline().strip() == "written"
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=10)

    live = OtlpReceiver().start()
    try:
        restart = subprocess.run([sys.executable, str(app), f"http://127.0.0.1:{live.grpc_port}", str(spool), "0"],
                                 capture_output=True, text=True, timeout=120)
        assert "delivered" in restart.stdout, restart.stderr[-2000:]
        assert seqs(live) == list(range(1, 3001))
    finally:
        live.stop()


def test_full_spool_drop_oldest_reports_the_gap(tmp_path: Path) -> None:
    receiver = OtlpReceiver().start()
    port = receiver.grpc_port
    receiver.stop()
    pipeline = milvus_audit.configure(f"http://127.0.0.1:{port}", insecure=True, spool_dir=tmp_path / "spool",
                                      spool_max_bytes=64 * 1024, set_global=False)
    client = milvus_audit.instrument(StubClient(), pipeline.audit_config(integrity_key=fresh_key()))
    for _ in range(2000):
        client.search("docs", [[0.1]])
    back = OtlpReceiver().start(grpc_port=port)
    try:
        assert pipeline.force_flush(60_000)
        received = seqs(back)
        gaps = back.audit_logs("milvus.audit.gap")
        lost = sum(g["attributes"]["milvus_audit.gap.lost_records"] for g in gaps)
        assert gaps and lost > 0
        assert len(received) + lost == 2000  # exactly what the gap records say was lost
        assert received[-1] == 2000  # the newest records survive, in order
        assert received == sorted(set(received))
    finally:
        pipeline.shutdown()
        back.stop()


def test_full_spool_fail_closed_refuses_calls(tmp_path: Path) -> None:
    receiver = OtlpReceiver().start()
    port = receiver.grpc_port
    receiver.stop()
    pipeline = milvus_audit.configure(f"http://127.0.0.1:{port}", insecure=True, spool_dir=tmp_path / "spool",
                                      spool_max_bytes=32 * 1024, spool_on_full="fail", set_global=False)
    inner = StubClient()
    served = 0
    original = inner.search

    def counting_search(*args: Any, **kwargs: Any) -> Any:
        nonlocal served
        served += 1
        return original(*args, **kwargs)

    inner.search = counting_search  # type: ignore[method-assign]
    client = milvus_audit.instrument(inner, pipeline.audit_config(integrity_key=fresh_key(), fail_closed=True))
    refused = 0
    for _ in range(500):
        try:
            client.search("docs", [[0.1]])
        except AuditUnavailable:
            refused += 1
    assert refused > 0 and served + refused == 500
    back = OtlpReceiver().start(grpc_port=port)
    try:
        assert pipeline.force_flush(60_000)
        audited = [r for r in back.audit_logs() if r["attributes"].get("milvus_audit.outcome") == "success"]
        assert len(audited) == served  # every call that reached "Milvus" was durably recorded
    finally:
        pipeline.shutdown()
        back.stop()


def test_fail_closed_without_a_spool_refuses(tmp_path: Path) -> None:
    pipeline = milvus_audit.configure(jsonl_path=tmp_path / "a.jsonl", set_global=False)
    client = milvus_audit.instrument(StubClient(), pipeline.audit_config(fail_closed=True))
    with pytest.raises(AuditUnavailable, match="no durable spool"):
        client.search("docs", [[0.1]])


def test_fail_open_default_counts_drops(tmp_path: Path) -> None:
    pipeline = milvus_audit.configure("http://127.0.0.1:9", insecure=True, spool_dir=tmp_path / "spool",
                                      spool_max_bytes=16 * 1024, spool_on_full="fail", set_global=False)
    client = milvus_audit.instrument(StubClient(), pipeline.audit_config())
    for _ in range(300):
        client.search("docs", [[0.1]])  # never refused
    (spool,) = pipeline.spools
    assert spool.dropped > 0
    pipeline.shutdown()


def test_jsonl_file_back_pressures_instead_of_dropping(tmp_path: Path) -> None:
    """The SDK's batch processor drops records when its queue is full; the JSONL file's never does."""
    path = tmp_path / "audit.jsonl"

    def slow(record: dict[str, Any]) -> dict[str, Any]:
        time.sleep(0.0002)  # a writer far slower than the callers: its queue fills at once
        return record

    provider = LoggerProvider()
    provider.add_log_record_processor(JsonlProcessor(JsonlExporter(path, slow), max_pending=64))
    client = milvus_audit.instrument(StubClient(), milvus_audit.AuditConfig(
        logger_provider=provider, tracer_provider=TracerProvider(), meter_provider=MeterProvider()))

    def work() -> None:
        for _ in range(500):
            client.search("docs", [[0.1]])

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    provider.shutdown()
    assert len(read_jsonl(path)) == 4 * 500


def test_concurrency_threads_and_tasks(tmp_path: Path) -> None:
    jsonl = tmp_path / "audit.jsonl"
    pipeline = milvus_audit.configure(jsonl_path=jsonl, set_global=False)
    key = fresh_key()
    config = pipeline.audit_config(integrity_key=key)
    client = milvus_audit.instrument(StubClient(), config)
    async_client = milvus_audit.instrument(AsyncStubClient(), config)

    def work() -> None:
        for _ in range(5000):
            client.search("docs", [[0.1]])

    async def tasks() -> None:
        async def one() -> None:
            for _ in range(250):
                await async_client.search("docs", [[0.1]])
        await asyncio.gather(*(one() for _ in range(8)))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    asyncio.run(tasks())
    for thread in threads:
        thread.join()
    pipeline.force_flush()
    pipeline.shutdown()
    records = [r for r in read_jsonl(jsonl) if r["event_name"] != "milvus.audit.checkpoint"]  # the final one is last
    sequence = [r["attributes"]["milvus_audit.seq"] for r in records]
    assert len(records) == 8 * 5000 + 8 * 250
    assert sequence == list(range(1, len(records) + 1))  # unique, gap-free, and in file order
    (report,) = verify([jsonl], key=key, allow_open=True)
    assert report.findings == []


def test_hostile_values_cannot_forge_jsonl_lines(lite_uri: str, tmp_path: Path) -> None:
    jsonl = tmp_path / "audit.jsonl"
    pipeline = milvus_audit.configure(jsonl_path=jsonl, set_global=False)
    client = milvus_audit.MilvusClient(lite_uri, audit=pipeline.audit_config())
    hostile = 'x"}\n{"event_name":"milvus.audit","attributes":{"user.name":"admin"}}\r\n\u2028'
    with milvus_audit.enduser(hostile):
        try:
            client.describe_collection(hostile)
        except pymilvus.MilvusException:
            pass
    pipeline.force_flush()
    pipeline.shutdown()
    lines = jsonl.read_text().splitlines()
    assert len(lines) == 2  # connect and describe_collection; nothing forged
    described = json.loads(lines[1])
    assert described["attributes"]["db.collection.name"] == hostile
    assert described["attributes"]["enduser.id"] == hostile
    assert all("admin" not in json.loads(line)["attributes"].get("user.name", "") for line in lines)
