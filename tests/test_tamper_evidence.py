"""Tamper evidence under attack (issue 14, items 6 and 8-15): every promise, as a test.

Streams are written through the real pipeline (`configure()`, the emitter, the JSONL
writer in each format) and then attacked the way a reader of the file could be fooled.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.trace import TracerProvider

import milvus_audit
from milvus_audit.config import AuditConfig
from milvus_audit.export.spool import Spool, SpoolProcessor
from milvus_audit.integrity.chain import CHECKPOINT_EVENT, FINAL, KEY_ID, SEQ, STREAM, key_id
from milvus_audit.integrity.verify import Finding, verify, verify_records
from milvus_audit.otel.emitter import OTelEmitter

KEY = bytes(range(32))
SIGNING = Ed25519PrivateKey.generate()
FORMATS = ("otel", "ecs", "ocsf")


def _drop(user: str = "mallory") -> dict[str, Any]:
    return {"db.system.name": "milvus", "db.operation.name": "drop_collection", "db.collection.name": "docs",
            "user.name": user, "enduser.id": "eve", "server.address": "db.internal", "server.port": 19530,
            "milvus_audit.outcome": "failure", "milvus_audit.failure_reason": "permission_denied",
            "milvus_audit.category": "schema", "milvus_audit.duration_ms": 2.5, "error.type": "MilvusException",
            "db.response.status_code": "65535", "db.milvus.output_fields": ["id", "text"]}


def write_stream(path: Path, fmt: str = "otel", *, key: bytes | None = KEY, signing: Ed25519PrivateKey | None = SIGNING,
                 records: int = 12, checkpoint_every: int = 4, extra: dict[str, Any] | None = None) -> Path:
    """A stream of `records` calls (inside a span, so with trace ids) and its checkpoints."""
    pipeline = milvus_audit.configure(jsonl_path=path, jsonl_format=fmt, service_name="billing",  # type: ignore[arg-type]
                                      set_global=False)
    config = pipeline.audit_config(integrity_key=key, signing_key=signing, checkpoint_every=checkpoint_every)
    emitter = OTelEmitter(config)
    tracer = pipeline.tracer_provider.get_tracer("test")  # type: ignore[union-attr]
    for i in range(records):
        with tracer.start_as_current_span(f"call {i}"):
            attributes = _drop()
            attributes.update(extra or {})
            emitter.emit_record("milvus.audit", "WARN", attributes)
    pipeline.shutdown()
    return path


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_lines(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def findings(path: Path, key: bytes | None = KEY, signing: Ed25519PrivateKey | None = SIGNING,
             **options: Any) -> list[Finding]:
    public = signing.public_key() if signing is not None else None
    return [f for report in verify([path], key=key, public_key=public, **options) for f in report.findings]


@pytest.fixture(scope="module")
def streams(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("tamper")
    return {fmt: write_stream(tmp / f"audit.{fmt}.jsonl", fmt) for fmt in FORMATS}


def test_the_streams_verify_in_every_format(streams: dict[str, Path]) -> None:
    for fmt, path in streams.items():
        reports = verify([path], key=KEY, public_key=SIGNING.public_key())
        assert [(r.closed, r.findings) for r in reports] == [(True, [])], fmt
        assert [(r.closed, r.findings) for r in verify([path], public_key=SIGNING.public_key())] == [(True, [])]


# -- 8: every field of the line as written is authenticated ---------------------------------
def _set(record: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split("/")
    for name in parents:
        record = record.setdefault(name, {})
    record[last] = value


ATTACKS: dict[str, list[tuple[str, Any]]] = {
    "otel": [("severity_text", "INFO"), ("trace_id", "0" * 31 + "1"), ("span_id", "0" * 15 + "1"),
             ("resource/service.name", "payments"), ("resource/host.name", "elsewhere"), ("comment", "benign"),
             ("attributes/user.name", "alice")],
    "ecs": [("user/name", "alice"), ("event/outcome", "success"), ("event/action", "describe_collection"),
            ("log/level", "info"), ("service/name", "payments"), ("trace/id", "0" * 31 + "1"),
            ("otel/resource/service.name", "payments"), ("otel/severity_text", "INFO"), ("extra", 1),
            ("milvus/user.name", "alice"), ("event/kind", "alert")],
    "ocsf": [("actor/user/name", "alice"), ("status", "Success"), ("status_id", 1),
             ("api/operation", "describe_collection"), ("severity_id", 1), ("metadata/correlation_uid", "x"),
             ("unmapped/otel/span_id", "0" * 15 + "1"), ("unmapped/otel/resource/service.name", "payments"),
             ("src_endpoint/name", "x"),
             ("unmapped/user.name", "alice"), ("extra", True)],
}


@pytest.mark.parametrize("fmt", FORMATS)
def test_promise_verify_authenticates_every_field(streams: dict[str, Path], fmt: str, tmp_path: Path) -> None:
    original = lines(streams[fmt])
    target = 5  # an audit record in the middle of the stream
    envelope = {"otel": ("resource",), "ecs": ("otel", "resource"), "ocsf": ("unmapped", "otel", "resource")}[fmt]
    value: Any = original[target]
    for name in envelope:
        value = value[name]
    assert value["service.name"] == "billing"
    core = ("severity_text", "trace_id", "span_id", "resource/", "attributes/", "otel/", "milvus/", "unmapped/")
    for field, value in ATTACKS[fmt]:
        # with only the public key, record content is not authenticated, but a field that is
        # not the core's (derived from it, or added) is still checked against the core
        keys = [(KEY, SIGNING), (KEY, None)] + ([] if field.startswith(core) else [(None, SIGNING)])
        for key, signing in keys:
            changed = copy.deepcopy(original)
            _set(changed[target], field, value)
            assert changed != original, field
            found = findings(write_lines(tmp_path / "t.jsonl", changed), key=key, signing=signing)
            assert found and found[0].kind == "modified" and found[0].where.endswith(f":{target + 1}"), \
                (fmt, field, key is not None, found)


@pytest.mark.parametrize("fmt", FORMATS)
def test_promise_duplicate_keys_fail_verify(streams: dict[str, Path], fmt: str, tmp_path: Path) -> None:
    text = streams[fmt].read_text().splitlines()
    # a JSON reader that keeps the first `user.name` sees "alice"; Python keeps the last
    forged = text[5].replace('"user.name":"mallory"', '"user.name":"alice","user.name":"mallory"', 1)
    assert forged != text[5]
    text[5] = forged
    path = tmp_path / "dup.jsonl"
    path.write_text("\n".join(text) + "\n")
    found = findings(path)
    assert found[0].kind == "unreadable" and found[0].where == f"{path}:6" and "duplicate" in found[0].detail


# -- 9: emptiness fails ----------------------------------------------------------------
def test_promise_verify_fails_without_chained_records(streams: dict[str, Path], tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert [f.kind for f in findings(empty)] == ["empty"]
    blank = tmp_path / "blank.jsonl"
    blank.write_text("\n\n")
    assert [f.kind for f in findings(blank)] == ["empty"]
    unchained = [r for r in lines(streams["otel"])]
    for record in unchained:
        record["attributes"] = {k: v for k, v in record["attributes"].items() if not k.startswith("milvus_audit.")}
    kinds = [f.kind for f in findings(write_lines(tmp_path / "stripped.jsonl", unchained))]
    assert "empty" in kinds and "unchained" in kinds
    assert findings(streams["otel"], expect_streams=1) == []
    assert [f.kind for f in findings(streams["otel"], expect_streams=2)] == ["streams"]


# -- 10: a checkpoint's signature covers all it asserts --------------------------------------
def test_promise_checkpoints_sign_everything_they_assert(streams: dict[str, Path], tmp_path: Path) -> None:
    records = lines(streams["otel"])
    checkpoints = [i for i, r in enumerate(records) if r["event_name"] == CHECKPOINT_EVENT]
    assert len(checkpoints) >= 3
    middle = checkpoints[0]
    cut = copy.deepcopy(records[: middle + 1])
    cut[-1]["attributes"][FINAL] = True  # hide the cut tail
    found = findings(write_lines(tmp_path / "cut.jsonl", cut), key=None)  # holding only the public key
    assert found and found[0].kind == "forged_checkpoint" and found[0].where.endswith(f":{middle + 1}")
    for name, value in (("milvus_audit.checkpoint.covers", 1), ("milvus_audit.stream", "0" * 16)):
        forged = copy.deepcopy(records)
        forged[middle]["attributes"][name] = value
        assert findings(write_lines(tmp_path / "forged.jsonl", forged), key=None)


# -- 11: the simplest setup (an HMAC key only) closes provably ------------------------------
def test_promise_hmac_only_stream_closes_cleanly(tmp_path: Path) -> None:
    path = write_stream(tmp_path / "hmac.jsonl", signing=None, records=3)
    (report,) = verify([path], key=KEY)
    assert (report.closed, report.findings) == (True, [])
    records = lines(path)
    assert records[-1]["event_name"] == CHECKPOINT_EVENT and records[-1]["attributes"][FINAL] is True
    cut = write_lines(tmp_path / "cut.jsonl", records[:-1])
    assert [f.kind for f in findings(cut, signing=None)] == ["truncated"]
    forged = copy.deepcopy(records[:-2])  # the last record cut, the final checkpoint re-pointed
    forged.append(copy.deepcopy(records[-1]))
    forged[-1]["attributes"][SEQ] -= 1
    assert findings(write_lines(tmp_path / "forged.jsonl", forged), signing=None)
    # with the public key as well, an unsigned checkpoint is still authenticated by the chain
    assert findings(path) == []
    # but a verifier holding only the public key cannot trust an unsigned checkpoint
    assert [f.kind for f in findings(path, key=None)] == ["forged_checkpoint"]


# -- 12: a wrong key says so ------------------------------------------------------------
def test_promise_a_wrong_key_is_named_as_such(streams: dict[str, Path]) -> None:
    first = lines(streams["otel"])[0]["attributes"]
    assert first[KEY_ID] == key_id(KEY) and KEY.hex() not in streams["otel"].read_text()
    for path in streams.values():
        found = findings(path, key=bytes(32), signing=None)
        assert [f.kind for f in found] == ["wrong_key"] and found[0].where.endswith(":1")
        assert "wrong key" in found[0].detail
        found = findings(path, key=None, signing=Ed25519PrivateKey.generate())
        assert [f.kind for f in found] == ["wrong_key"] and "wrong public key" in found[0].detail


# -- 13: spooled records carry stream and seq, key or no key -----------------------------
def test_promise_spooled_records_carry_stream_and_seq(tmp_path: Path) -> None:
    memory = InMemoryLogRecordExporter()  # type: ignore[no-untyped-call]
    spooled = LoggerProvider()
    processor = SpoolProcessor(Spool(tmp_path / "spool"), memory)
    spooled.add_log_record_processor(processor)
    plain = LoggerProvider()
    plain.add_log_record_processor(SimpleLogRecordProcessor(memory))
    try:
        emitter = OTelEmitter(AuditConfig(logger_provider=spooled, tracer_provider=TracerProvider()))
        numbered = [_drop() for _ in range(3)]
        for attributes in numbered:
            emitter.emit_record("milvus.audit", "INFO", attributes)
        assert [a[SEQ] for a in numbered] == [1, 2, 3]
        assert len({a[STREAM] for a in numbered}) == 1
        assert all("milvus_audit.chain" not in a for a in numbered)
        unspooled = OTelEmitter(AuditConfig(logger_provider=plain, tracer_provider=TracerProvider()))
        attributes = _drop()
        unspooled.emit_record("milvus.audit", "INFO", attributes)
        assert STREAM not in attributes and SEQ not in attributes
    finally:
        processor.shutdown()


# -- 14: bytes values are chained as the writer writes them -------------------------------
def test_promise_bytes_attributes_verify(tmp_path: Path) -> None:
    for fmt in FORMATS:
        path = write_stream(tmp_path / f"bytes.{fmt}.jsonl", fmt, records=2,
                            extra={"db.milvus.ids": [b"\x00\xff", b"a"], "milvus_audit.object_name": b"\x01\x02"})
        assert lines(path)[0]["attributes" if fmt == "otel" else "milvus" if fmt == "ecs" else "unmapped"][
            "milvus_audit.object_name"] == "0102"
        assert findings(path) == [], fmt


# -- 15: nothing of a stream after its final checkpoint -------------------------------------
def test_promise_nothing_after_the_final_checkpoint(streams: dict[str, Path], tmp_path: Path) -> None:
    for fmt, path in streams.items():
        records = lines(path)
        appended = copy.deepcopy(records[0])
        _set(appended, {"otel": "attributes", "ecs": "milvus", "ocsf": "unmapped"}[fmt] + "/" + SEQ, len(records) + 1)
        for key, signing in ((KEY, SIGNING), (None, SIGNING), (KEY, None)):
            found = findings(write_lines(tmp_path / "appended.jsonl", [*records, appended]), key=key, signing=signing)
            assert [f.kind for f in found] == ["after_final"], (fmt, found)
            assert found[0].where.endswith(f":{len(records) + 1}")


# -- 6: one valid UTF-8 value for every sink ---------------------------------------------
def test_promise_every_sink_sees_the_same_valid_utf8(tmp_path: Path) -> None:
    memory = InMemoryLogRecordExporter()  # type: ignore[no-untyped-call]
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(memory))
    emitter = OTelEmitter(AuditConfig(logger_provider=provider, tracer_provider=TracerProvider()))
    attributes = _drop()
    attributes["enduser.id"] = "bob\ud800"
    attributes["db.milvus.output_fields"] = ["ok", "x\udfffy", 3]
    attributes["db.milvus.partition_names"] = ("p\ud83d",)
    emitter.emit_record("milvus.audit", "INFO", attributes)
    # the very dict detection receives is cleaned in place
    assert attributes["enduser.id"] == "bob\ufffd"
    assert attributes["db.milvus.output_fields"] == ["ok", "x\ufffdy", 3]
    assert attributes["db.milvus.partition_names"] == ("p\ufffd",)
    encoded = encode_logs(memory.get_finished_logs())  # what the OTLP exporter sends
    sent = {kv.key: kv.value for kv in encoded.resource_logs[0].scope_logs[0].log_records[0].attributes}
    assert sent["enduser.id"].string_value == "bob\ufffd"
    assert [v.string_value for v in sent["db.milvus.output_fields"].array_value.values][:2] == ["ok", "x\ufffdy"]
    encoded.SerializeToString()
    ascii_only = _drop()
    same = {k: v for k, v in ascii_only.items()}
    emitter.emit_record("milvus.audit", "INFO", ascii_only)
    assert all(ascii_only[k] is v for k, v in same.items())  # the fast path leaves values alone


def test_promise_a_calls_span_and_record_are_valid_utf8(lite_uri: str) -> None:
    """Through an audited client: a collection name no UTF-8 can carry reaches the span's name,
    the span's attributes and the record as U+FFFD, and both encode."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    logs, spans = InMemoryLogRecordExporter(), InMemorySpanExporter()  # type: ignore[no-untyped-call]
    logger_provider, tracer_provider = LoggerProvider(), TracerProvider()
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(logs))
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    client = milvus_audit.MilvusClient(lite_uri, audit=AuditConfig(logger_provider=logger_provider,
                                                                    tracer_provider=tracer_provider))
    with pytest.raises(Exception):  # whatever pymilvus raises, the audit must encode
        client.describe_collection("docs\ud800")
    client.close()
    (span,) = [s for s in spans.get_finished_spans() if s.name.startswith("describe_collection")]
    assert span.name == "describe_collection docs\ufffd" and span.attributes["db.collection.name"] == "docs\ufffd"
    encode_spans([span]).SerializeToString()
    (record,) = [r for r in logs.get_finished_logs()
                 if r.log_record.attributes["db.operation.name"] == "describe_collection"]
    assert record.log_record.attributes["db.collection.name"] == "docs\ufffd"
    encode_logs([record]).SerializeToString()


# -- hostile input: findings naming file:line, never a traceback -----------------------------
def test_promise_verify_reports_hostile_lines(streams: dict[str, Path], tmp_path: Path) -> None:
    good = streams["otel"].read_text().splitlines()
    for bad in ("[1,2,3]", "not json", '{"timestamp": 3}', '"x"', '{"attributes": []}'):
        path = tmp_path / "hostile.jsonl"
        path.write_text("\n".join([*good[:3], bad, *good[3:]]) + "\n")
        found = findings(path)
        assert found and any(f.where == f"{path}:4" for f in found), (bad, found)
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(b"\x00\xff\xfe garbage\n")
    assert next(f.kind for f in findings(binary)) == "unreadable"
    weird = copy.deepcopy(lines(streams["ocsf"]))
    weird[2]["unmapped"]["milvus_audit.duration_ms"] = "x"
    weird[3]["metadata"]["original_time"] = "yesterday"
    weird[4]["unmapped"]["milvus_audit.alert.severity"] = ["unhashable"]
    positioned = [(f"f:{n}", r) for n, r in enumerate(weird, start=1)]
    reports = verify_records(positioned, key=KEY)
    assert reports[0].findings[0].where == "f:3"
