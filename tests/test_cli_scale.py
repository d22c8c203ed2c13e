"""The CLI on a busy app's logs (issue 17): report, replay and verify stream in bounded memory
and time, and verify takes rotated sets (any order, mid-stream starts, a torn last line).

The data is synthetic but shaped exactly as the writer shapes it (otel core lines, chained
with the HMAC key, a checkpoint every 1,000 records, a final one), about 900 bytes a record.
`MILVUS_AUDIT_SCALE=1000000` runs the memory and time checks on a million records.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from milvus_audit.export.jsonl import rfc3339
from milvus_audit.integrity.chain import (
    CHAIN,
    CHECKPOINT_EVENT,
    COVERS,
    FINAL,
    HEAD,
    KEY_ID,
    SEQ,
    STREAM,
    canonical,
    canonical_resource,
    key_id,
    link,
)

KEY = bytes(range(32))
RESOURCE = {"service.name": "shop-api", "service.version": "4.2.0", "host.name": "api-7f9c6d-x2k4p",
            "telemetry.sdk.name": "opentelemetry", "telemetry.sdk.language": "python",
            "telemetry.sdk.version": "1.39.0", "deployment.environment": "production"}
SCALE = int(os.environ.get("MILVUS_AUDIT_SCALE", "200000"))
MB = 1024 * 1024


def synthetic(path: Path, records: int, *, start_ns: int = 1_780_000_000 * 10**9, seed: int = 3,
              checkpoint_every: int = 1000, stream: str = "5ca1ab1e00000001", close: bool = True) -> Path:
    """`records` calls of a busy app (~25 per second, 40 end users, a few failures, a rare drop),
    chained and checkpointed as the writer does it."""
    rng = random.Random(seed)
    encoded_resource = canonical_resource(RESOURCE)
    head, seq = "0" * 64, 0
    t = start_ns
    operations = (("search", "data_read"), ("query", "data_read"), ("insert", "data_write"),
                  ("upsert", "data_write"), ("get", "data_read"))
    with path.open("w") as out:
        def emit(name: str, severity: str, attributes: dict[str, Any], trace: str, span: str) -> None:
            nonlocal head, seq
            seq += 1
            attributes[STREAM], attributes[SEQ] = stream, seq
            if seq == 1:
                attributes[KEY_ID] = key_id(KEY)
            stamp = rfc3339(t)
            attributes[CHAIN] = head = link(KEY, head, canonical(stamp, name, attributes, severity, trace, span,
                                                                    encoded_resource))
            out.write(json.dumps({"timestamp": stamp, "event_name": name, "severity_text": severity,
                                  "trace_id": trace, "span_id": span, "attributes": attributes,
                                  "resource": RESOURCE}, separators=(",", ":")) + "\n")

        def checkpoint(final: bool) -> None:
            emit(CHECKPOINT_EVENT, "INFO", {HEAD: head, COVERS: seq, FINAL: final, KEY_ID: key_id(KEY)}, "", "")

        for _ in range(records):
            t += rng.randint(1, 80) * 1_000_000
            operation, category = operations[rng.randrange(5)] if rng.random() > 0.0005 else ("drop_collection",
                                                                                             "schema")
            failed = rng.random() < 0.01
            attributes: dict[str, Any] = {
                "db.system.name": "milvus", "db.operation.name": operation,
                "db.collection.name": f"products_{rng.randrange(12)}", "db.namespace": "default",
                "server.address": "milvus.prod.internal", "server.port": 19530, "user.name": "shop-api",
                "enduser.id": f"customer-{rng.randrange(40):04d}", "client.address": f"10.4.{rng.randrange(4)}.17",
                "milvus_audit.category": category, "milvus_audit.api": "MilvusClient",
                "milvus_audit.outcome": "failure" if failed else "success",
                "milvus_audit.duration_ms": round(rng.lognormvariate(2.3, 0.6), 3),
                "milvus_audit.auth.method": "token", "milvus_audit.tls": True,
                "milvus_audit.auth.credential_id": "c2a4e1f09b7d3e55",
                "code.function.name": f"pymilvus.MilvusClient.{operation}",
            }
            if category == "data_read":
                attributes.update({"db.milvus.nq": 1, "db.milvus.limit": 10, "db.response.returned_rows": 10,
                                   "db.query.text": "category == ? and price < ?",
                                   "db.milvus.output_fields": ["id", "title", "price"]})
            elif category == "data_write":
                attributes.update({"db.operation.batch.size": 16, "milvus_audit.mutating": True})
            if failed:
                attributes.update({"milvus_audit.failure_reason": rng.choice(["unavailable", "timeout",
                                                                              "permission_denied"]),
                                   "error.type": "MilvusException", "db.response.status_code": "65535",
                                   "milvus_audit.error.message": "service unavailable: ?"})
            emit("milvus.audit", "WARN" if failed else "INFO", attributes, f"{rng.getrandbits(128):032x}",
                 f"{rng.getrandbits(64):016x}")
            if seq % checkpoint_every == checkpoint_every - 1:
                checkpoint(False)
        if close:
            checkpoint(True)
    return path


def timed(*args: str | Path) -> tuple[subprocess.CompletedProcess[str], float, float]:
    """Run the CLI; (result, seconds, peak RSS in MiB of the process). The peak is VmHWM, which
    starts afresh at exec (ru_maxrss would carry over the parent's, pytest's, peak)."""
    script = ("import runpy, sys\n"
              "sys.argv = ['milvus-audit', *sys.argv[1:]]\n"
              "try:\n    runpy.run_module('milvus_audit', run_name='__main__')\n"
              "finally:\n    hwm = [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')]\n"
              "    print('RSS_KB', hwm[0], file=sys.stderr)\n")
    began = time.perf_counter()
    run = subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True,
                         timeout=1800)
    elapsed = time.perf_counter() - began
    rss = next((int(line.split()[1]) for line in run.stderr.splitlines() if line.startswith("RSS_KB")), 0)
    return run, elapsed, rss / 1024


@pytest.fixture(scope="module")
def busy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic(tmp_path_factory.mktemp("scale") / "busy.jsonl", SCALE)


def test_report_replay_verify_stream_in_bounded_memory_and_time(busy: Path, tmp_path: Path) -> None:
    key_file = tmp_path / "integrity.key"
    key_file.write_text(KEY.hex())
    html = tmp_path / "day.html"
    run, seconds, rss = timed("report", busy, "-o", html)
    assert run.returncode == 0, run.stderr
    print(f"\nreport {SCALE} records ({busy.stat().st_size / MB:.0f} MiB): {seconds:.1f} s, {rss:.0f} MiB RSS, "
          f"{html.stat().st_size / 1024:.0f} KiB")
    assert html.stat().st_size <= 2 * MB
    assert rss <= 300
    if SCALE <= 200_000:
        assert seconds <= 15 * max(1.0, float(os.environ.get("MILVUS_AUDIT_SLOW_MACHINE", "1")))
    for args in (("replay", busy), ("verify", busy, "--key-file", key_file)):
        run, seconds, rss = timed(*args)
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
        print(f"{args[0]} {SCALE} records: {seconds:.1f} s, {rss:.0f} MiB RSS")
        assert rss <= 300
    data = json.loads(subprocess.run([sys.executable, "-m", "milvus_audit", "report", busy, "--format", "json"],
                                     capture_output=True, text=True, timeout=600).stdout)
    assert data["counts"]["audit_records"] == SCALE and data["destructive"]["total"] > 0


def test_verify_rotated_sets(tmp_path: Path) -> None:
    whole = synthetic(tmp_path / "whole.jsonl", 3000, checkpoint_every=500)
    key_file = tmp_path / "integrity.key"
    key_file.write_text(KEY.hex())
    lines = whole.read_text().splitlines(keepends=True)
    parts = [tmp_path / f"audit.jsonl.{i}" for i in (1, 2, 3)]
    parts[0].write_text("".join(lines[:1100]))
    parts[1].write_bytes(gzip.compress("".join(lines[1100:2300]).encode()))
    parts[2].write_text("".join(lines[2300:]))

    def verify(*args: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "milvus_audit", "verify", *map(str, args), "--key-file",
                               key_file], capture_output=True, text=True, timeout=300)

    for order in ((2, 1, 0), (1, 2, 0), (0, 1, 2)):  # any order, as a glob or a person gives them
        run = verify(*(parts[i] for i in order))
        assert run.returncode == 0 and "0 problem(s)" in run.stdout, (order, run.stdout, run.stderr)
    alone = verify(parts[1], "--allow-open")
    assert alone.returncode == 1 and "deleted" in alone.stdout
    resumed = verify(parts[1], parts[2], "--from-checkpoint")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "verified from its checkpoint at seq" in resumed.stdout and "were not verified" in resumed.stdout
    torn = tmp_path / "torn.jsonl"
    torn.write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])  # the final checkpoint cut mid-write
    run = verify(torn)
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert "truncated" in run.stdout and "ends without a newline" in run.stdout
    assert f"{len(lines) - 1} records" in run.stdout  # everything before the cut was read and verified
    assert "modified" not in run.stdout and "unreadable" not in run.stdout
    piped = subprocess.run([sys.executable, "-m", "milvus_audit", "verify", "-", "--key-file", key_file],
                           input=whole.read_text(), capture_output=True, text=True, timeout=300)
    assert piped.returncode == 0, piped.stdout
