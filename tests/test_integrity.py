"""Tamper evidence: a recorded stream verifies, and every single-record mutation is caught."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import milvus_audit
from milvus_audit.export.jsonl import read_jsonl
from milvus_audit.integrity.chain import CHECKPOINT_EVENT, SIGNATURE
from milvus_audit.integrity.verify import verify_records
from tests.test_detect import DIM, rules_only, vec

KEY = bytes(range(32))


@pytest.fixture(scope="module")
def stream(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Ed25519PrivateKey, list[dict[str, Any]]]:
    """A recorded stream of ~2,500 audit, alert and checkpoint records."""
    tmp = tmp_path_factory.mktemp("integrity")
    jsonl = tmp / "audit.jsonl"
    signing = Ed25519PrivateKey.generate()
    pipeline = milvus_audit.configure(jsonl_path=jsonl, set_global=False)
    config = pipeline.audit_config(integrity_key=KEY, signing_key=signing, checkpoint_every=250,
                                   detection=rules_only("destructive_operation",
                                                        destructive_operation={"cooldown_s": 0}))
    client = milvus_audit.MilvusClient(str(tmp / "m.db"), audit=config)
    client.create_collection("docs", dimension=DIM)
    client.insert("docs", [{"id": i, "vector": vec(i)} for i in range(100)])
    for i in range(2400):
        client.get("docs", ids=[i % 100])
        if i % 400 == 0:
            client.create_collection(f"tmp{i}", dimension=DIM)
            client.drop_collection(f"tmp{i}")  # alerts are chained too
    client.close()
    pipeline.shutdown()  # final checkpoint
    return jsonl, signing, read_jsonl(jsonl)


def positioned(records: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [(f"audit.jsonl:{n}", r) for n, r in enumerate(records, start=1)]


MEMO: dict[int, bytes] = {}  # canonical encodings of the unchanged records, reused across mutations


def problems(records: list[dict[str, Any]], signing: Ed25519PrivateKey, key: bytes | None = KEY) -> list[Any]:
    reports = verify_records(positioned(records), key=key, public_key=signing.public_key(), memo=MEMO)
    return [finding for report in reports for finding in report.findings]


def test_the_recorded_stream_verifies(stream: Any) -> None:
    jsonl, signing, records = stream
    assert len(records) > 2000
    events = {r["event_name"] for r in records}
    assert events == {"milvus.audit", "milvus.alert", CHECKPOINT_EVENT}
    seqs = [r["attributes"]["milvus_audit.seq"] for r in records]
    assert seqs == list(range(1, len(records) + 1))
    assert len({r["attributes"]["milvus_audit.stream"] for r in records}) == 1
    assert problems(records, signing) == []
    assert records[-1]["event_name"] == CHECKPOINT_EVENT and records[-1]["attributes"]["milvus_audit.checkpoint.final"]
    assert KEY.hex().encode() not in jsonl.read_bytes()


def test_every_single_record_mutation_is_detected(stream: Any) -> None:
    _, signing, records = stream
    caught = {"modified": 0, "deleted": 0, "swapped": 0, "truncated": 0, "forged": 0}
    checkpoints = [i for i, r in enumerate(records) if r["event_name"] == CHECKPOINT_EVENT]
    for index in range(len(records)):
        modified = copy.copy(records)
        changed = copy.deepcopy(records[index])  # a new object: not in MEMO
        if index % 2:
            changed["attributes"]["db.collection.name"] = "tampered"
        else:
            stamp = changed["timestamp"]
            changed["timestamp"] = stamp[:-2] + ("8" if stamp[-2] == "9" else "9") + "Z"
        modified[index] = changed
        assert (found := problems(modified, signing)), f"modification at {index} missed"
        assert found[0].kind == "modified" and found[0].where == f"audit.jsonl:{index + 1}"
        caught["modified"] += 1

        deleted = records[:index] + records[index + 1:]
        found = problems(deleted, signing)
        assert found, f"deletion at {index} missed"
        caught["deleted"] += 1

        if index + 1 < len(records):
            swapped = copy.copy(records)
            swapped[index], swapped[index + 1] = swapped[index + 1], swapped[index]
            found = problems(swapped, signing)
            assert found and found[0].kind == "inserted_or_reordered", f"swap at {index} missed"
            caught["swapped"] += 1
    for index in checkpoints[:-1]:
        found = problems(records[: index + 1], signing)
        assert [f.kind for f in found] == ["truncated"], f"truncation after checkpoint {index} missed"
        caught["truncated"] += 1
    impostor = Ed25519PrivateKey.generate()
    for index in checkpoints:
        forged = copy.copy(records)
        fake = copy.deepcopy(records[index])
        fake["attributes"][SIGNATURE] = impostor.sign(b"anything").hex()
        forged[index] = fake
        found = problems(forged, signing, key=None)  # a verifier holding only the public key
        assert found and found[0].kind == "forged_checkpoint"
        caught["forged"] += 1
    print(f"\nmutations caught: {caught} over {len(records)} records")
    assert caught["modified"] == caught["deleted"] == len(records)
    assert caught["truncated"] == len(checkpoints) - 1 >= 7


def test_verify_cli(stream: Any, tmp_path: Path) -> None:
    jsonl, signing, _ = stream
    public = tmp_path / "verify.pem"
    public.write_bytes(signing.public_key().public_bytes(serialization.Encoding.PEM,
                                                         serialization.PublicFormat.SubjectPublicKeyInfo))
    ok = subprocess.run([sys.executable, "-m", "milvus_audit", "verify", str(jsonl), "--key", KEY.hex(),
                         "--public-key", str(public)], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "0 problem(s)" in ok.stdout
    tampered = tmp_path / "tampered.jsonl"
    lines = jsonl.read_text().splitlines()
    record = json.loads(lines[500])
    record["attributes"]["db.operation.name"] = "list_collections"
    lines[500] = json.dumps(record)
    tampered.write_text("\n".join(lines) + "\n")
    bad = subprocess.run([sys.executable, "-m", "milvus_audit", "verify", str(tampered), "--key", KEY.hex()],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1
    assert "tampered.jsonl:501: modified" in bad.stdout
