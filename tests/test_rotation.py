"""JSONL rotation by size and time, logrotate create/copytruncate, modes, retention, verify."""

from __future__ import annotations

import gzip
import os
import random
import stat
import time
from pathlib import Path
from typing import Any

import pymilvus
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import milvus_audit
from milvus_audit.export.jsonl import JsonlExporter, read_jsonl
from milvus_audit.integrity.verify import verify
from milvus_audit.otel.setup import configure


class Stub(pymilvus.MilvusClient):
    def __init__(self) -> None:  # no connection
        pass

    def search(self, collection_name: str, data: Any = None, filter: str = "", limit: int = 10,
               **kwargs: Any) -> Any:
        return [[{"id": 1}]]


def _set(tmp_path: Path) -> list[Path]:
    return sorted(p for p in tmp_path.iterdir() if p.name.startswith("audit.jsonl"))


def _findings(paths: list[Path], key: bytes, **options: Any) -> list[str]:
    shuffled = list(paths)
    random.Random(3).shuffle(shuffled)  # verify accepts the rotated set in any order
    return [str(f) for report in verify(shuffled, key=key, **options) for f in report.findings]


def _calls(pipeline: Any, key: bytes, n: int, **config: Any) -> Any:
    audited = milvus_audit.instrument(Stub(), pipeline.audit_config(integrity_key=key, **config))
    for _ in range(n):
        audited.search("docs")
        pipeline.force_flush()
    return audited


def test_rotation_by_size_keeps_the_chain_and_the_mode(tmp_path: Path) -> None:
    key = os.urandom(32)
    path = tmp_path / "audit.jsonl"
    pipeline = configure(jsonl_path=path, set_global=False, jsonl_max_bytes=4000, jsonl_file_mode=0o640)
    _calls(pipeline, key, 40)
    pipeline.shutdown()
    files = _set(tmp_path)
    assert len(files) > 3
    for each in files:
        assert stat.S_IMODE(each.stat().st_mode) == 0o640
        assert each == path or each.stat().st_size <= 4000
    assert _findings(files, key) == []
    assert sum(len(read_jsonl(f)) for f in files) >= 41  # 40 calls and the final checkpoint


def test_rotation_by_time_compressed_and_capped(tmp_path: Path) -> None:
    key = os.urandom(32)
    path = tmp_path / "audit.jsonl"
    pipeline = configure(jsonl_path=path, set_global=False, jsonl_rotate_interval=0.05, jsonl_compress=True,
                         jsonl_backups=3)
    audited = milvus_audit.instrument(Stub(), pipeline.audit_config(integrity_key=key))
    for _ in range(8):
        audited.search("docs")
        pipeline.force_flush()
        time.sleep(0.06)
    pipeline.shutdown()
    rotated = [f for f in _set(tmp_path) if f != path]
    assert [f.name for f in rotated] == ["audit.jsonl.1.gz", "audit.jsonl.2.gz", "audit.jsonl.3.gz"]
    for each in rotated:
        assert stat.S_IMODE(each.stat().st_mode) == 0o600
        with gzip.open(each, "rt") as handle:
            assert handle.readline().startswith("{")
    retention = [r for r in read_jsonl(path) if r["event_name"] == "milvus.audit.retention"] + [
        r for f in rotated for r in read_jsonl(f) if r["event_name"] == "milvus.audit.retention"]
    assert retention and all(r["attributes"]["milvus_audit.retention.reason"] == "backups" for r in retention)


def test_logrotate_create_moves_the_file_and_we_reopen(tmp_path: Path) -> None:
    key = os.urandom(32)
    path = tmp_path / "audit.jsonl"
    pipeline = configure(jsonl_path=path, set_global=False)
    audited = _calls(pipeline, key, 5)
    os.rename(path, tmp_path / "audit.jsonl.1")  # logrotate `create`: move, then (maybe) create anew
    for _ in range(5):
        audited.search("docs")
    pipeline.shutdown()
    assert path.exists() and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(read_jsonl(tmp_path / "audit.jsonl.1")) == 5
    assert _findings(_set(tmp_path), key) == []


def test_logrotate_copytruncate_is_followed(tmp_path: Path) -> None:
    key = os.urandom(32)
    path = tmp_path / "audit.jsonl"
    pipeline = configure(jsonl_path=path, set_global=False, jsonl_max_bytes=1_000_000)
    audited = _calls(pipeline, key, 5)
    (tmp_path / "audit.jsonl.1").write_bytes(path.read_bytes())  # logrotate `copytruncate`
    with open(path, "r+b") as handle:
        handle.truncate(0)
    for _ in range(5):
        audited.search("docs")
    pipeline.shutdown()
    text = path.read_bytes()
    assert not text.startswith(b"\0"), "writes continue at the new end, no hole"
    assert len(read_jsonl(path)) == 6  # 5 calls and the final checkpoint
    assert _findings(_set(tmp_path), key) == []


def test_retention_deletes_old_files_and_records_each_deletion(tmp_path: Path) -> None:
    key = os.urandom(32)
    signing = Ed25519PrivateKey.generate()
    path = tmp_path / "audit.jsonl"
    pipeline = configure(jsonl_path=path, set_global=False, jsonl_max_bytes=3000, jsonl_retention_days=1)
    audited = milvus_audit.instrument(Stub(), pipeline.audit_config(integrity_key=key, signing_key=signing,
                                                                    checkpoint_every=5))
    for _ in range(30):
        audited.search("docs")
        pipeline.force_flush()
    old = _exporter(pipeline).rotated_files()[-2:]  # the two oldest
    expected = {}
    for each in old:
        records = read_jsonl(each)
        first, last = records[0]["attributes"], records[-1]["attributes"]
        expected[str(each)] = (first["milvus_audit.seq"], last["milvus_audit.seq"], last["milvus_audit.chain"])
        past = time.time() - 3 * 86_400
        os.utime(each, (past, past))
    exporter = _exporter(pipeline)
    exporter.rotate()  # retention is applied at rotation (and hourly)
    for _ in range(3):
        audited.search("docs")
    pipeline.shutdown()
    files = _set(tmp_path)
    kept = {(r["attributes"].get("milvus_audit.seq"), r["attributes"].get("milvus_audit.chain"))
            for f in files for r in read_jsonl(f)}
    assert not any((last, chain) in kept for _, last, chain in expected.values())
    retention = [r["attributes"] for f in files for r in read_jsonl(f) if r["event_name"] == "milvus.audit.retention"]
    assert {r["milvus_audit.retention.file"] for r in retention} == set(expected)
    for record in retention:
        first, last, chain = expected[record["milvus_audit.retention.file"]]
        assert record["milvus_audit.retention.reason"] == "age"
        assert record["milvus_audit.retention.seq_first"] == [first]
        assert record["milvus_audit.retention.seq_last"] == [last]
        assert record["milvus_audit.retention.final_chain"] == [chain]
    assert _findings(files, key, public_key=signing.public_key(), from_checkpoint=True) == []


def _exporter(pipeline: Any) -> JsonlExporter:
    processor = pipeline.logger_provider._multi_log_record_processor
    for child in processor._log_record_processors:
        exporter = getattr(child, "exporter", None)
        if isinstance(exporter, JsonlExporter):
            return exporter
    raise AssertionError("no JSONL exporter")


def test_bad_rotation_settings_are_refused(tmp_path: Path) -> None:
    for kwargs in ({"max_bytes": 0}, {"rotate_interval": -1}, {"backups": -1}, {"retention_days": "7"}):
        with pytest.raises(ValueError):
            JsonlExporter(tmp_path / "x.jsonl", **kwargs)  # type: ignore[arg-type]
