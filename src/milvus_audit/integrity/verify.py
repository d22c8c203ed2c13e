"""`milvus-audit verify`: check a recorded audit stream's chain and checkpoints.

Every line is read as written, in any format the product writes (otel, ECS, OCSF). Its
core (timestamp, event name, severity text, trace and span ids, attributes, resource)
is what the chain authenticates, and every other field of the line must be exactly
what the writer derives from that core: a field added, removed or changed anywhere in
the line is a finding, as is a key given twice (readers disagree on which one wins).

Reports the first broken position of each stream: a modified record (chain mismatch,
or a field not derived from the core), deleted records (a gap in `seq`), an inserted
or reordered record (`seq` out of order, or a chain that does not link), a forged
checkpoint (bad signature, or a head or count that is not the chain's), records after
the stream's final checkpoint (`after_final`), a wrong key (`wrong_key`: the key id
the stream states is not the given key's), and a truncated tail (no final checkpoint:
what followed the last checkpoint may have been cut). Input without any chained record
(`empty`), or with another number of streams than expected (`streams`), fails too; a
line that cannot be read is `unreadable`, naming the file and line.
"""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from milvus_audit.export.formats import ENVELOPE, to_ecs, to_ocsf
from milvus_audit.export.jsonl import Progress, iter_jsonl
from milvus_audit.integrity.chain import (
    CHAIN,
    CHECKPOINT_EVENT,
    COVERS,
    FINAL,
    GENESIS,
    HEAD,
    KEY_ID,
    SEQ,
    SIGNATURE,
    SIGNER,
    STREAM,
    canonical,
    canonical_resource,
    checkpoint_message,
    key_id,
    link,
    signer_id,
)

CORE_KEYS = ("timestamp", "event_name", "severity_text", "trace_id", "span_id", "attributes", "resource")
_OBJECTS = ("attributes", "resource")
_DUMPS = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str).encode


@dataclass
class Finding:
    # modified | deleted | inserted_or_reordered | forged_checkpoint | truncated | unchained | after_final
    # | wrong_key | empty | streams | unreadable
    kind: str
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
    from_seq: int = 0  # with from_checkpoint: the checkpoint verification started at (0: from seq 1)
    skipped: int = 0  # with from_checkpoint: records before that checkpoint, not verified


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _format(record: dict[str, Any]) -> str:
    if "@timestamp" in record:
        return "ecs"
    if "class_uid" in record:
        return "ocsf"
    return "otel"


def core_record(record: dict[str, Any]) -> dict[str, Any]:
    """The core form of a JSONL line written as otel, ECS or OCSF (lenient: never raises)."""
    kind = _format(record)
    if kind == "otel":
        return record
    if kind == "ecs":
        envelope = _obj(record.get(ENVELOPE))  # raw attributes under `milvus`, the event name in event.code
        level = _obj(record.get("log")).get("level")
        return {"timestamp": record["@timestamp"], "event_name": _obj(record.get("event")).get("code", ""),
                "severity_text": envelope.get("severity_text", level.upper() if isinstance(level, str) else ""),
                "trace_id": envelope.get("trace_id", _obj(record.get("trace")).get("id", "")),
                "span_id": envelope.get("span_id", _obj(record.get("span")).get("id", "")),
                "attributes": record.get("milvus") or {}, "resource": envelope.get("resource") or {}}
    metadata = _obj(record.get("metadata"))  # OCSF: raw attributes under `unmapped`, with the envelope
    unmapped = record.get("unmapped")
    attributes = {k: v for k, v in unmapped.items() if k != ENVELOPE} if isinstance(unmapped, dict) else unmapped
    envelope = _obj(unmapped.get(ENVELOPE)) if isinstance(unmapped, dict) else {}
    return {"timestamp": metadata.get("original_time", ""), "event_name": metadata.get("log_name", ""),
            "severity_text": envelope.get("severity_text", ""),
            "trace_id": envelope.get("trace_id", metadata.get("correlation_uid", "")),
            "span_id": envelope.get("span_id", ""),
            "attributes": attributes or {}, "resource": envelope.get("resource") or {}}


def _difference(rendered: Any, written: Any, path: str = "") -> str:
    """Where the line as written first departs from the line its core gives."""
    if isinstance(rendered, dict) and isinstance(written, dict):
        for key in sorted(set(rendered) | set(written), key=str):
            name = f"{path}{key}"
            if key not in written:
                return f"`{name}` is missing"
            if key not in rendered:
                return f"`{name}` is not a field the writer writes"
            if _DUMPS(rendered[key]) != _DUMPS(written[key]):
                return _difference(rendered[key], written[key], f"{name}.")
    return f"`{path.rstrip('.') or 'the line'}` is not what the record's core gives"


def _derive(record: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """The line's core, and why the line is not exactly what the writer makes of it (or None)."""
    core = core_record(record)
    core = {key: core.get(key) for key in CORE_KEYS}
    for key in CORE_KEYS:
        wanted = dict if key in _OBJECTS else str
        if not isinstance(core[key], wanted):
            return core, f"`{key}` is missing or not {'an object' if wanted is dict else 'a string'}"
    try:
        kind = _format(record)
        rendered: Any = core if kind == "otel" else to_ecs(core) if kind == "ecs" else to_ocsf(core)
        if _DUMPS(rendered) == _DUMPS(record):
            return core, None
        return core, _difference(json.loads(_DUMPS(rendered)), record)
    except Exception as exc:  # hostile values the formatter cannot take: the writer never wrote this line
        return core, f"not a line the writer can have written ({type(exc).__name__})"


class _Prepared:
    """One line, read once: its core, its stream and seq, and what the chain covers."""

    __slots__ = ("_encoded", "attributes", "core", "event_name", "problem", "seq", "stream")

    def __init__(self, record: dict[str, Any]) -> None:
        self.core, self.problem = _derive(record)
        self.attributes = _obj(self.core["attributes"])
        stream = self.attributes.get(STREAM)
        self.stream = None if stream is None else str(stream)
        self.seq = self.attributes.get(SEQ)
        self.event_name = self.core["event_name"]
        self._encoded: bytes | None = None

    def encoded(self, without: str | None = None) -> bytes:
        """The canonical core (the chain's input); `without` an attribute (a signature)."""
        if without is None and self._encoded is not None:
            return self._encoded
        core = self.core
        attributes = self.attributes if without is None else \
            {k: v for k, v in self.attributes.items() if k != without}
        encoded = canonical(core["timestamp"], core["event_name"], attributes, core["severity_text"],
                            core["trace_id"], core["span_id"], canonical_resource(core["resource"]))
        if without is None:
            self._encoded = encoded
        return encoded


class _Unreadable(dict[str, Any]):
    """Stands for a line that could not be read as a JSON object."""

    def __init__(self, reason: str, *, torn: bool = False) -> None:
        super().__init__()
        self.reason = reason
        self.torn = torn


HEAD_LINES = 64  # lines read from each file to order a rotated set


def _head(path: str | Path) -> tuple[dict[str, int], str]:
    """The first seq of each stream in the first lines of a file, and its first timestamp."""
    firsts: dict[str, int] = {}
    first_time = ""
    try:
        for number, record in iter_jsonl(path):
            core = core_record(record)
            first_time = first_time or str(core.get("timestamp") or "")
            attributes = _obj(core.get("attributes"))
            stream, seq = attributes.get(STREAM), attributes.get(SEQ)
            if stream is not None and isinstance(seq, int) and not isinstance(seq, bool):
                firsts.setdefault(str(stream), seq)
            if number >= HEAD_LINES:
                break
    except (ValueError, OSError):  # read again, in order, and reported then
        pass
    return firsts, first_time


def order_files(paths: Iterable[str | Path]) -> list[str | Path]:
    """A rotated set in the order its records were written, whatever order it was given in:
    by the first seq of a stream two files share, else by their first timestamp. Standard
    input (`-`) cannot be read twice and is read first."""
    paths = list(paths)
    stdin = [p for p in paths if str(p) == "-"]
    files = [p for p in paths if str(p) != "-"]
    if len(files) < 2:
        return [*stdin, *files]
    heads = {index: _head(path) for index, path in enumerate(files)}

    def compare(a: int, b: int) -> int:
        (firsts_a, time_a), (firsts_b, time_b) = heads[a], heads[b]
        for stream in sorted(set(firsts_a) & set(firsts_b)):
            if firsts_a[stream] != firsts_b[stream]:
                return -1 if firsts_a[stream] < firsts_b[stream] else 1
        if time_a != time_b and time_a and time_b:
            return -1 if time_a < time_b else 1
        return a - b

    order = sorted(heads, key=functools.cmp_to_key(compare))
    return [*stdin, *(files[index] for index in order)]


def _records(paths: Iterable[str | Path], progress: Progress | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
    for path in paths:
        number = 0
        try:
            for number, record in iter_jsonl(path, reject_duplicate_keys=True, progress=progress):
                yield f"{path}:{number}", record
        except ValueError as exc:  # JsonlError: names the file and line; the rest of the file is not read
            where = f"{path}:{getattr(exc, 'line', number + 1)}"
            if getattr(exc, "torn", False):
                yield where, _Unreadable(f"the last line ends without a newline and is cut short "
                                         f"({getattr(exc, 'reason', exc)}): the write was cut; the records "
                                         "before it were verified", torn=True)
            else:
                yield where, _Unreadable(f"{getattr(exc, 'reason', exc)} (the rest of the file was not read)")
        except OSError as exc:
            yield str(path), _Unreadable(f"cannot read the file: {exc.strerror or exc}")


def verify(paths: Iterable[str | Path], *, key: bytes | None = None,
           public_key: Ed25519PublicKey | None = None, allow_open: bool = False,
           expect_streams: int | None = None, from_checkpoint: bool = False,
           progress: Progress | None = None, ordered: bool = True) -> list[StreamReport]:
    """Verify the streams in these JSONL files; one report per stream, and one for the input
    (`<input>`) when it is unreadable, empty, torn, or has another number of streams than
    `expect_streams`.

    The files are read one line at a time (memory does not grow with their size), a
    rotated set in the order it was written (`order_files`; `ordered=False` keeps the
    order given). `from_checkpoint`: a stream that starts after seq 1 (a file of a rotated
    set whose earlier files are gone) is verified from its first checkpoint on, which
    states the chain head it continues; the records before it are counted, not verified.
    A cut last line (no newline) is a `truncated` finding; the lines before it are verified."""
    files = order_files(paths) if ordered else list(paths)
    return verify_records(_records(files, progress), key=key, public_key=public_key, allow_open=allow_open,
                          expect_streams=expect_streams, from_checkpoint=from_checkpoint)


def verify_records(records: Iterable[tuple[str, dict[str, Any]]], *, key: bytes | None = None,
                   public_key: Ed25519PublicKey | None = None, allow_open: bool = False,
                   memo: dict[int, Any] | None = None, expect_streams: int | None = None,
                   from_checkpoint: bool = False) -> list[StreamReport]:
    """Verify parsed lines (as written: otel, ECS or OCSF), each with its position (`file:line`),
    in one pass: each stream keeps a constant amount of state.

    `memo` keeps each line's reading by record object across calls: for verifying many
    variants of one stream (mutation testing) without re-reading unchanged records.
    """
    streams: dict[str, _StreamVerifier] = {}
    unchained = 0
    problems = StreamReport("<input>")
    our_key = key_id(key) if key is not None else None
    our_signer = signer_id(public_key) if public_key is not None else None
    for where, record in records:
        if isinstance(record, _Unreadable):
            kind = "truncated" if record.torn else "unreadable"
            problems.findings.append(Finding(kind, where, record.reason))
            continue
        if not isinstance(record, dict):
            problems.findings.append(Finding("unreadable", where, "not a JSON object"))
            continue
        prepared = _prepare(record, memo)
        if prepared.stream is None:
            unchained += 1
            continue
        verifier = streams.get(prepared.stream)
        if verifier is None:
            verifier = streams[prepared.stream] = _StreamVerifier(prepared.stream, key, public_key, our_key,
                                                                  our_signer, from_checkpoint)
        verifier.add(where, prepared)
    reports = [verifier.finish(allow_open) for verifier in streams.values()]
    if unchained:
        report = StreamReport("<no stream>", records=unchained)
        report.findings.append(Finding("unchained", "input", f"{unchained} records carry no chain"))
        reports.append(report)
    if not streams:
        problems.findings.append(Finding("empty", "input", "no chained records: the input is empty, "
                                                            "or every record was removed"))
    if expect_streams is not None and len(streams) != expect_streams:
        problems.findings.append(Finding("streams", "input",
                                         f"{len(streams)} stream(s) found, {expect_streams} expected"))
    return [problems, *reports] if problems.findings else reports


def _prepare(record: dict[str, Any], memo: dict[int, Any] | None) -> _Prepared:
    if memo is None:
        return _Prepared(record)
    entry = memo.get(id(record))
    if entry is not None and entry[0] is record:  # the record itself is kept: its id cannot be reused
        prepared: _Prepared = entry[1]
        return prepared
    prepared = _Prepared(record)
    memo[id(record)] = (record, prepared)
    return prepared


class _StreamVerifier:
    """One stream, verified record by record in constant memory.

    The first broken position ends the stream's verification. A seq out of place is judged
    when the stream ends: `inserted_or_reordered` if the missing seq comes later, `deleted`
    if it never does."""

    def __init__(self, stream: str, key: bytes | None, public_key: Ed25519PublicKey | None,
                 our_key: str | None, our_signer: str | None, from_checkpoint: bool) -> None:
        self.report = StreamReport(stream)
        self.key, self.public_key = key, public_key
        self.our_key, self.our_signer = our_key, our_signer
        self.from_checkpoint = from_checkpoint
        self.expected_seq, self.head = 0, GENESIS
        self.failed = False
        self.started = False  # with from_checkpoint: verifying (seq 1 seen, or a checkpoint to start from)
        self.first_seq: int | None = None
        self.pending: tuple[str, int, int] | None = None  # where, seq, the seq expected there

    def _fail(self, kind: str, where: str, detail: str) -> None:
        self.report.findings.append(Finding(kind, where, detail))
        self.failed = True

    def add(self, where: str, prepared: _Prepared) -> None:
        report = self.report
        report.records += 1
        seq = prepared.seq
        pending = self.pending
        if pending is not None:
            if seq == pending[2]:  # the seq that was missing comes later: moved or inserted
                self.pending = None
                self._fail("inserted_or_reordered", pending[0],
                           f"seq {pending[1]} stands where seq {pending[2]} belongs; seq {pending[2]} comes later")
            return
        if self.failed:
            return
        if self.first_seq is None:
            self.first_seq = seq if isinstance(seq, int) and not isinstance(seq, bool) else 0
        if not self.started:
            if self.from_checkpoint and self.first_seq > 1:
                if prepared.event_name != CHECKPOINT_EVENT or not isinstance(seq, int) or isinstance(seq, bool):
                    report.skipped += 1
                    return
                head = prepared.attributes.get(HEAD)
                if not isinstance(head, str):
                    self._fail("forged_checkpoint", where, f"the checkpoint at seq {seq} states no chain head")
                    return
                self.expected_seq, self.head = seq - 1, head
                report.from_seq = seq
            self.started = True
        self._check(where, prepared, seq)

    def _check(self, where: str, prepared: _Prepared, seq: Any) -> None:
        report = self.report
        if report.closed:
            self._fail("after_final", where,
                       f"a record of the stream after its final checkpoint (seq {report.last_checkpoint_seq})")
            return
        attributes = prepared.attributes
        self.expected_seq += 1
        expected_seq = self.expected_seq
        if not isinstance(seq, int) or isinstance(seq, bool):
            self._fail("modified", where, "the record's seq is missing or not a number")
            return
        if seq != expected_seq:
            if seq > expected_seq:
                self.pending = (where, seq, expected_seq)  # deleted, unless seq `expected_seq` comes later
                self.failed = True
                return
            self._fail("inserted_or_reordered", where, f"seq {seq} again after seq {expected_seq - 1}")
            return
        if prepared.problem is not None:
            self._fail("modified", where, f"at seq {seq}: {prepared.problem}")
            return
        checkpoint = prepared.event_name == CHECKPOINT_EVENT
        key = self.key
        if key is not None:
            stated = attributes.get(KEY_ID)
            if (seq == 1 or checkpoint) and stated is not None and stated != self.our_key:
                self._fail("wrong_key", where,
                           f"the stream was sealed with the key whose id is {str(stated)[:32]!r}; the key given "
                           f"has id {self.our_key!r}: wrong key (the records were not necessarily changed)")
                return
            if seq == 1 and CHAIN not in attributes and stated is None:
                self._fail("unchained", where,
                           "the stream has sequence numbers but no chain: it was written without an integrity key")
                return
            if attributes.get(CHAIN) != link(key, self.head, prepared.encoded()):
                self._fail("modified", where, f"the chain does not verify at seq {seq}")
                return
        if checkpoint:
            report.checkpoints += 1
            if attributes.get(HEAD) != self.head:
                self._fail("forged_checkpoint", where, f"checkpoint head is not the chain head at seq {seq - 1}")
                return
            if attributes.get(COVERS) != seq - 1:
                self._fail("forged_checkpoint", where,
                           f"the checkpoint at seq {seq} does not state that it covers seq 1..{seq - 1}")
                return
            if self.public_key is not None:
                found = _check_signature(prepared, self.public_key, self.our_signer, key is not None, seq, where)
                if found is not None:
                    report.findings.append(found)
                    self.failed = True
                    return
            report.last_checkpoint_seq = seq
            report.closed = attributes.get(FINAL) is True
        self.head = str(attributes.get(CHAIN, ""))

    def finish(self, allow_open: bool) -> StreamReport:
        report = self.report
        if self.pending is not None:
            where, seq, expected = self.pending
            self._fail("deleted", where, f"records seq {expected}..{seq - 1} are missing before this one")
            return report
        if self.failed:
            return report
        if not self.started:  # from_checkpoint, and no checkpoint to start from
            self._fail("deleted", f"stream {report.stream}",
                       f"the stream starts at seq {self.first_seq} and has no checkpoint to verify from: "
                       f"records seq 1..{(self.first_seq or 1) - 1} are not in the input")
            return report
        if not report.closed and not allow_open:
            after = self.expected_seq - report.last_checkpoint_seq
            report.findings.append(Finding(
                "truncated", f"stream {report.stream}",
                f"no final checkpoint: {after} records after the last checkpoint (seq {report.last_checkpoint_seq}); "
                "the tail may have been cut (or the stream is still open: --allow-open)"))
        return report


def _check_signature(prepared: _Prepared, public_key: Ed25519PublicKey, our_signer: str | None, keyed: bool,
                     seq: int, where: str) -> Finding | None:
    attributes = prepared.attributes
    signature = attributes.get(SIGNATURE)
    if signature is None:
        if keyed:  # an HMAC-only stream's checkpoint: the chain, verified above, authenticates it
            return None
        return Finding("forged_checkpoint", where, f"the checkpoint at seq {seq} is not signed; only the "
                                                   "integrity key could authenticate it")
    stated = attributes.get(SIGNER)
    if stated is not None and stated != our_signer:
        return Finding("wrong_key", where, f"the checkpoint at seq {seq} was signed by the key whose id is "
                                           f"{str(stated)[:32]!r}; the public key given has id {our_signer!r}: "
                                           "wrong public key")
    try:
        public_key.verify(base64.b64decode(str(signature), validate=True),
                          checkpoint_message(prepared.encoded(without=SIGNATURE)))
    except (InvalidSignature, ValueError):
        return Finding("forged_checkpoint", where, f"bad signature on the checkpoint at seq {seq}")
    return None
