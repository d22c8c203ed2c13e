"""`milvus-audit verify`: check a recorded audit stream's chain and checkpoints.

Reports the first broken position of each stream: a modified record (chain
mismatch), deleted records (a gap in `seq`), an inserted or reordered record (`seq`
out of order, or a chain that does not link), a forged checkpoint (bad signature, or
a head that is not the chain's), and a truncated tail (no final checkpoint: the file
ends after the last checkpoint, so what followed it may have been cut).
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from milvus_audit.export.jsonl import read_jsonl
from milvus_audit.integrity.chain import (
    CHAIN,
    CHECKPOINT_EVENT,
    FINAL,
    GENESIS,
    HEAD,
    SEQ,
    SIGNATURE,
    STREAM,
    canonical,
    checkpoint_message,
    link,
)


@dataclass
class Finding:
    kind: str  # modified | deleted | inserted_or_reordered | forged_checkpoint | truncated | unchained
    where: str
    detail: str

    def __str__(self) -> str:
        return f"{self.where}: {self.kind}: {self.detail}"


@dataclass
class StreamReport:
    stream: str
    records: int = 0
    checkpoints: int = 0
    last_checkpoint_seq: int = 0
    closed: bool = False
    findings: list[Finding] = field(default_factory=list)


def core_record(record: dict[str, Any]) -> dict[str, Any]:
    """The core form of a JSONL line written as otel, ECS or OCSF."""
    if "@timestamp" in record:  # ECS: raw attributes under `milvus`, the event name in event.code
        return {"timestamp": record["@timestamp"], "event_name": (record.get("event") or {}).get("code", ""),
                "attributes": record.get("milvus") or {}}
    if "class_uid" in record:  # OCSF: raw attributes under `unmapped`
        metadata = record.get("metadata") or {}
        return {"timestamp": metadata.get("original_time", ""), "event_name": metadata.get("log_name", ""),
                "attributes": record.get("unmapped") or {}}
    return record


def _records(paths: Iterable[str | Path]) -> Iterable[tuple[str, dict[str, Any]]]:
    for path in paths:
        for number, record in enumerate(read_jsonl(path), start=1):
            yield f"{path}:{number}", core_record(record)


def verify(paths: Iterable[str | Path], *, key: bytes | None = None,
           public_key: Ed25519PublicKey | None = None, allow_open: bool = False) -> list[StreamReport]:
    """Verify the streams in these JSONL files (read in order); one report per stream."""
    return verify_records(_records(paths), key=key, public_key=public_key, allow_open=allow_open)


def verify_records(records: Iterable[tuple[str, dict[str, Any]]], *, key: bytes | None = None,
                   public_key: Ed25519PublicKey | None = None, allow_open: bool = False,
                   memo: dict[int, bytes] | None = None) -> list[StreamReport]:
    """Verify parsed records, each with its position (`file:line`).

    `memo` keeps canonical encodings by record object across calls: for verifying many
    variants of one stream (mutation testing) without re-encoding unchanged records.
    """
    streams: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    unchained = 0
    for where, record in records:
        stream = (record.get("attributes") or {}).get(STREAM)
        if stream is None:
            unchained += 1
        else:
            streams.setdefault(str(stream), []).append((where, record))
    reports = [_verify_stream(stream, records, key, public_key, allow_open, memo)
               for stream, records in streams.items()]
    if unchained:
        report = StreamReport("<no stream>", records=unchained)
        report.findings.append(Finding("unchained", "input", f"{unchained} records carry no chain"))
        reports.append(report)
    return reports


def _verify_stream(stream: str, records: list[tuple[str, dict[str, Any]]], key: bytes | None,
                   public_key: Ed25519PublicKey | None, allow_open: bool,
                   memo: dict[int, bytes] | None = None) -> StreamReport:
    report = StreamReport(stream, records=len(records))
    seqs = [(r.get("attributes") or {}).get(SEQ) for _, r in records]
    expected_seq, head = 0, GENESIS
    for index, (where, record) in enumerate(records):
        attributes = record.get("attributes") or {}
        seq = seqs[index]
        expected_seq += 1
        if not isinstance(seq, int):
            return _fail(report, "modified", where, "the record's seq is missing or not a number")
        if seq != expected_seq:
            if expected_seq in seqs[index + 1:]:
                return _fail(report, "inserted_or_reordered", where,
                             f"seq {seq} stands where seq {expected_seq} belongs; seq {expected_seq} comes later")
            if seq > expected_seq:
                return _fail(report, "deleted", where,
                             f"records seq {expected_seq}..{seq - 1} are missing before this one")
            return _fail(report, "inserted_or_reordered", where, f"seq {seq} again after seq {expected_seq - 1}")
        if key is not None:
            encoded = memo.get(id(record)) if memo is not None else None
            if encoded is None:
                encoded = canonical(record["timestamp"], record.get("event_name", ""), attributes)
                if memo is not None:
                    memo[id(record)] = encoded
            computed = link(key, head, encoded)
            if attributes.get(CHAIN) != computed:
                return _fail(report, "modified", where, f"the chain does not verify at seq {seq}")
        if record.get("event_name") == CHECKPOINT_EVENT:
            report.checkpoints += 1
            if attributes.get(HEAD) != head:
                return _fail(report, "forged_checkpoint", where,
                             f"checkpoint head is not the chain head at seq {seq - 1}")
            if public_key is not None:
                try:
                    signature = base64.b64decode(str(attributes.get(SIGNATURE, "")))
                    public_key.verify(signature, checkpoint_message(stream, seq - 1, head))
                except (InvalidSignature, ValueError):
                    return _fail(report, "forged_checkpoint", where, f"bad signature on the checkpoint at seq {seq}")
            report.last_checkpoint_seq = seq
            report.closed = bool(attributes.get(FINAL))
        head = str(attributes.get(CHAIN, ""))
    if not report.closed and not allow_open:
        after = expected_seq - report.last_checkpoint_seq
        report.findings.append(Finding(
            "truncated", f"stream {stream}",
            f"no final checkpoint: {after} records after the last checkpoint (seq {report.last_checkpoint_seq}); "
            "the tail may have been cut (or the stream is still open: --allow-open)"))
    return report


def _fail(report: StreamReport, kind: str, where: str, detail: str) -> StreamReport:
    report.findings.append(Finding(kind, where, detail))
    return report
