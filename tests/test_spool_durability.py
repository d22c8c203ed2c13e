"""The spool's promises under real processes, a real OTLP receiver and a real filesystem:
several processes share one spool dir and a dead one's records are still delivered; a
failed write makes the spool unhealthy (fail-closed refuses); a short write never
desynchronises the spool's index from its file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from tests.otlp_receiver import OtlpReceiver

ROOT = Path(__file__).resolve().parents[1]

WORKER = textwrap.dedent("""
    import sys, pymilvus, milvus_audit
    class Stub(pymilvus.MilvusClient):
        def __init__(self): pass
        def search(self, *args, **kwargs): return [[{"id": 1}]]
    endpoint, spool, tag, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    pipeline = milvus_audit.configure(endpoint, insecure=True, spool_dir=spool, set_global=False)
    client = milvus_audit.instrument(Stub(), pipeline.audit_config())
    for i in range(count):
        with milvus_audit.enduser(f"{tag}-{i}"):
            client.search("docs", [[0.1]])
        if (i + 1) % 100 == 0:
            print(i + 1, flush=True)  # records 0..i are appended to the spool (on this thread)
    print("written", flush=True)
    sys.stdin.readline()  # the test says when to flush (after it has killed the victim)
    ok = pipeline.force_flush(120_000)
    pipeline.shutdown()
    print("delivered" if ok else "not delivered", flush=True)
""")


def _start(app: Path, endpoint: str, spool: Path, tag: str, count: int) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(app), endpoint, str(spool), tag, str(count)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, cwd=ROOT)


def _workers_share_one_spool_dir(tmp_path: Path, workers: int, count: int) -> None:
    app = tmp_path / "worker.py"
    app.write_text(WORKER)
    spool = tmp_path / "spool"
    receiver = OtlpReceiver().start()
    endpoint = f"http://127.0.0.1:{receiver.grpc_port}"
    processes = {f"p{n}": _start(app, endpoint, spool, f"p{n}", count) for n in range(workers)}
    try:
        victim = processes["p0"]
        assert victim.stdout is not None
        appended = 0
        while appended < count // 3:  # kill it mid-run, while the others write and deliver
            line = victim.stdout.readline().strip()
            assert line, "the victim died on its own"
            appended = int(line)
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(timeout=10)
        survivors = {tag: p for tag, p in processes.items() if tag != "p0"}
        for process in survivors.values():
            assert process.stdout is not None
            while (line := process.stdout.readline().strip()) != "written":
                assert line, "a worker died"
        for process in survivors.values():
            out, err = process.communicate("flush\n", timeout=180)
            assert "delivered" in out.split(), err[-3000:]

        got = {r["attributes"].get("enduser.id") for r in receiver.audit_logs()}
        expected = {f"p0-{i}" for i in range(appended)}
        expected |= {f"{tag}-{i}" for tag in survivors for i in range(count)}
        missing = expected - got
        assert not missing, f"{len(missing)} of {len(expected)} records lost, e.g. {sorted(missing)[:5]}"
        assert not [p for p in spool.iterdir() if not p.name.startswith(".")], "the spools were not all removed"
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
        receiver.stop()


def test_promise_two_processes_one_spool_dir_lose_nothing(tmp_path: Path) -> None:
    _workers_share_one_spool_dir(tmp_path, workers=2, count=12_000)


def test_promise_four_processes_one_spool_dir_lose_nothing(tmp_path: Path) -> None:
    _workers_share_one_spool_dir(tmp_path, workers=4, count=6_000)


FORKED = textwrap.dedent("""
    import os, sys, pymilvus, milvus_audit
    class Stub(pymilvus.MilvusClient):
        def __init__(self): pass
        def search(self, *args, **kwargs): return [[{"id": 1}]]
    endpoint, spool, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    # gunicorn --preload: configure() in the parent, then fork the workers
    pipeline = milvus_audit.configure(endpoint, insecure=True, spool_dir=spool, set_global=False)
    client = milvus_audit.instrument(Stub(), pipeline.audit_config())
    children = []
    for n in range(2):
        pid = os.fork()
        if pid == 0:
            for i in range(count):
                with milvus_audit.enduser(f"c{n}-{i}"):
                    client.search("docs", [[0.1]])
            ok = pipeline.force_flush(120_000)
            pipeline.shutdown()
            os._exit(0 if ok else 3)
        children.append(pid)
    for i in range(count):
        with milvus_audit.enduser(f"parent-{i}"):
            client.search("docs", [[0.1]])
    codes = [os.waitpid(pid, 0)[1] for pid in children]
    ok = pipeline.force_flush(120_000)
    pipeline.shutdown()
    print("delivered" if ok and codes == [0, 0] else f"failed {codes}", flush=True)
""")


def test_promise_forked_workers_one_spool_dir_lose_nothing(tmp_path: Path) -> None:
    app = tmp_path / "forked.py"
    app.write_text(FORKED)
    receiver = OtlpReceiver().start()
    try:
        run = subprocess.run([sys.executable, str(app), f"http://127.0.0.1:{receiver.grpc_port}",
                              str(tmp_path / "spool"), "3000"], capture_output=True, text=True, timeout=300, cwd=ROOT)
        assert "delivered" in run.stdout, run.stdout + run.stderr[-3000:]
        got = {r["attributes"].get("enduser.id") for r in receiver.audit_logs()}
        expected = {f"{who}-{i}" for who in ("parent", "c0", "c1") for i in range(3000)}
        assert not expected - got, f"{len(expected - got)} records lost"
    finally:
        receiver.stop()


FILE_SIZE_LIMIT = textwrap.dedent("""
    import json, os, resource, signal, sys, pymilvus, milvus_audit
    from milvus_audit import AuditUnavailable
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG surfaces as an OSError instead of a signal
    class Stub(pymilvus.MilvusClient):
        def __init__(self): pass
        def search(self, *args, **kwargs): return [[{"id": 1}]]
    endpoint, spool_dir = sys.argv[1], sys.argv[2]
    pipeline = milvus_audit.configure(endpoint, insecure=True, spool_dir=spool_dir, set_global=False)
    (spool,) = pipeline.spools
    client = milvus_audit.instrument(Stub(), pipeline.audit_config(fail_closed=True))
    served, refused = [], []
    def call(tag):
        try:
            with milvus_audit.enduser(tag):
                client.search("docs", [[0.1]])
            served.append(tag)
        except AuditUnavailable:
            refused.append(tag)
    for i in range(20):
        call(f"before-{i}")
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    sizes = [os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(spool_dir) for f in fs if f.endswith(".seg")]
    resource.setrlimit(resource.RLIMIT_FSIZE, (max(sizes) + 100, hard))  # the segment cannot grow
    for i in range(100):
        call(f"full-{i}")
    healthy_when_full = spool.healthy()
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # space again
    for i in range(20):
        call(f"after-{i}")
    ok = pipeline.force_flush(60_000)
    pipeline.shutdown()
    print(json.dumps({"served": served, "refused": refused, "ok": ok, "healthy_when_full": healthy_when_full,
                      "write_errors": spool.write_errors}), flush=True)
""")


def test_promise_fail_closed_refuses_calls_after_a_write_error(tmp_path: Path) -> None:
    app = tmp_path / "limited.py"
    app.write_text(FILE_SIZE_LIMIT)
    receiver = OtlpReceiver().start()
    try:
        run = subprocess.run([sys.executable, str(app), f"http://127.0.0.1:{receiver.grpc_port}",
                              str(tmp_path / "spool")], capture_output=True, text=True, timeout=180, cwd=ROOT)
        assert run.returncode == 0, run.stderr[-3000:]
        result = json.loads(run.stdout.splitlines()[-1])
        assert result["ok"] and result["write_errors"] > 0
        assert not result["healthy_when_full"]
        got = {r["attributes"].get("enduser.id") for r in receiver.audit_logs()}
        served_full = [tag for tag in result["served"] if tag.startswith("full-")]
        # The write that finds the disk full is the one record the spool could not foresee;
        # every call after it is refused until a write succeeds again.
        assert len(served_full) <= 1 and len(result["refused"]) >= 99
        unrecorded = [tag for tag in result["served"] if tag not in got]
        assert unrecorded == served_full, unrecorded
        assert all(f"after-{i}" in got for i in range(20))  # healthy again once a write succeeds
    finally:
        receiver.stop()


SHORT_WRITE = textwrap.dedent("""
    import json, os, resource, signal, sys
    from milvus_audit.export.spool import Spool
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    spool = Spool(sys.argv[1], fsync="never")
    record = lambda i: {"event_name": "milvus.audit", "attributes": {"i": i, "pad": "x" * 300}}
    said = {}
    for i in range(10):
        said[i] = spool.append(record(i))
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    sizes = [os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(sys.argv[1]) for f in fs if f.endswith(".seg")]
    resource.setrlimit(resource.RLIMIT_FSIZE, (max(sizes) + 150, hard))  # the next record fits only in part
    for i in range(10, 13):
        said[i] = spool.append(record(i))
    healthy_when_full = spool.healthy()
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    said[13] = spool.append(record(13))
    records, cursor = spool.read(1000, wait_s=0)  # the newest record must not be held back
    spool.ack(cursor)
    said[14] = spool.append(record(14))
    more, cursor = spool.read(1000, wait_s=0)
    spool.ack(cursor)
    spool.close()
    again = Spool(sys.argv[1], fsync="never")  # and a restart reads the same records, no torn one
    print(json.dumps({"said": said, "read": [r["attributes"]["i"] for r in records + more],
                      "healthy_when_full": healthy_when_full, "pending_after_restart": again.pending()}))
""")


def test_promise_short_write_keeps_the_spool_index_and_file_in_step(tmp_path: Path) -> None:
    app = tmp_path / "short.py"
    app.write_text(SHORT_WRITE)
    run = subprocess.run([sys.executable, str(app), str(tmp_path / "spool")], capture_output=True, text=True,
                         timeout=60, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.splitlines()[-1])
    said = {int(k): v for k, v in result["said"].items()}
    assert [i for i, ok in said.items() if not ok] == [10, 11, 12]
    assert not result["healthy_when_full"]
    assert result["read"] == [i for i, ok in sorted(said.items()) if ok]  # exactly what append said it kept
    assert not result["pending_after_restart"]


def test_promise_spool_exporter_survives_a_vanished_segment(tmp_path: Path) -> None:
    """A segment removed behind the spool's back must not kill the exporter thread."""
    from milvus_audit.export.spool import Spool

    spool = Spool(tmp_path / "spool", fsync="never", segment_bytes=4096, max_bytes=1 << 20)
    for i in range(50):
        assert spool.append({"event_name": "milvus.audit", "attributes": {"i": i, "pad": "x" * 200}})
    first = sorted(spool.path.glob("*.seg"))[0]
    first.unlink()
    deadline = time.monotonic() + 5
    records: list[dict[str, object]] = []
    while spool.pending() and time.monotonic() < deadline:
        batch, cursor = spool.read(100, wait_s=0)
        records.extend(batch)
        spool.ack(cursor)
    assert not spool.pending()
    assert any(r.get("event_name") == "milvus.audit.gap" for r in records)  # the loss is said, not silent
    spool.close()
