"""SIEM integration: Sigma conversion on every backend, Sigma/engine parity, ECS/OCSF/CEF, collector configs."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pymilvus
import pytest
import yaml

import milvus_audit
from milvus_audit.detect.rules import BUILTIN_RULES
from milvus_audit.export.formats import to_cef, to_ecs, to_ocsf
from milvus_audit.export.jsonl import read_jsonl
from milvus_audit.siem.convert import BACKENDS, _backend, convert
from milvus_audit.siem.sigma import RULES_DIR, build_rules, load_rules_text, rule_fields, rule_files
from tests.test_detect import DIM, FakeClock, rules_only, seeded
from tests.test_serverlog import RECORDED, _ingest_jsonl

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_rules_are_generated_from_the_catalog_and_defaults() -> None:
    shipped = {path.name: path.read_text() for path in RULES_DIR.glob("*.yml")}
    assert shipped == rule_files(), "stale: python -m milvus_audit.siem.sigma --write"
    for rule in build_rules():
        assert rule["id"] and rule["level"] and rule["tags"] and rule["falsepositives"]
        if "detection" in rule:
            assert rule["logsource"] == {"product": "milvus", "service": "audit"}
    covered = {rule["custom_attributes"]["milvus_audit_rule"] for rule in build_rules()}
    assert covered == set(BUILTIN_RULES)


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_rule_converts_on_every_backend(backend: str) -> None:
    results = convert(backend)
    assert len(results) == len(build_rules())
    for result in results:
        if result.kind == "event":
            assert result.query, (backend, result.rule)
        elif backend == "opensearch":  # Lucene: no correlation support in the maintained backend
            assert result.skipped
        else:
            assert result.query, (backend, result.rule)


def test_correlations_match_the_engine_defaults() -> None:
    def seconds(text: str) -> int:
        return int(text[:-1]) * (60 if text.endswith("m") else 1)

    by_name = {rule["name"]: rule for rule in build_rules()}
    expected = {
        "milvus_brute_force": ("event_count", "brute_force", "window_s", "threshold", ["user.name"]),
        "milvus_password_spray": ("value_count", "password_spray", "window_s", "distinct_users", ["host.name"]),
        "milvus_unauthorized_access": ("event_count", "unauthorized_access", "window_s", "threshold", ["user.name"]),
        "milvus_error_spike": ("event_count", "error_spike", "window_s", "min_failures", ["service.name"]),
    }
    for name, (kind, rule_id, window, threshold, group_by) in expected.items():
        correlation = by_name[name]["correlation"]
        params = BUILTIN_RULES[rule_id].params
        assert correlation["type"] == kind
        assert seconds(correlation["timespan"]) == params[window]
        assert correlation["condition"]["gte"] == params[threshold]
        assert correlation["group-by"] == group_by


def test_sigma_cli(tmp_path: Path) -> None:
    listed = subprocess.run([sys.executable, "-m", "milvus_audit", "sigma", "list"], capture_output=True, text=True)
    assert "milvus_brute_force" in listed.stdout and "event_count" in listed.stdout
    run = subprocess.run([sys.executable, "-m", "milvus_audit", "sigma", "export", "--backend", "splunk",
                          "--output", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert 'milvus_audit.failure_reason="authentication"' in (tmp_path / "milvus_brute_force.splunk.txt").read_text()


# -- parity: the Sigma single-event rules match exactly what the engine counted -------
def _sqlite(records: list[dict[str, Any]]) -> sqlite3.Connection:
    columns = sorted({key for r in records for key in r["attributes"]} | {"event_name", "event_id"} | rule_fields())
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE logs (" + ", ".join(f'"{c}"' for c in columns) + ")")
    for record in records:
        row = {key: json.dumps(v) if isinstance(v, (list, dict)) else v for key, v in record["attributes"].items()}
        row["event_name"] = record["event_name"]
        row["event_id"] = f"{record['trace_id']}:{record['span_id']}"
        db.execute(f"INSERT INTO logs ({', '.join(repr(c) for c in row)}) VALUES ({', '.join('?' * len(row))})",
                   list(row.values()))
    return db


def _sigma_matches(db: sqlite3.Connection) -> dict[str, set[str]]:
    from sigma.collection import SigmaCollection
    from sigma.correlations import SigmaCorrelationRule

    backend = _backend("sqlite", "otel", correlation=False)
    collection = SigmaCollection.from_yaml(load_rules_text())
    collection.resolve_rule_references()
    backend.init_processing_pipeline(None)
    matches = {}
    for rule in collection.rules:
        if isinstance(rule, SigmaCorrelationRule):
            continue
        (query,) = backend.convert_rule(rule, backend.default_format)
        sql = query.replace("SELECT * FROM", "SELECT event_id FROM")
        matches[str(rule.name)] = {row[0] for row in db.execute(sql)}
    return matches


def test_sigma_parity_with_the_engine(lite_uri: str, tmp_path: Path) -> None:
    jsonl = tmp_path / "audit.jsonl"
    pipeline = milvus_audit.configure(jsonl_path=jsonl, set_global=False)
    clock = FakeClock()
    alerts: list[Any] = []
    rules = rules_only("destructive_operation", "error_spike")
    rules.configure("destructive_operation", cooldown_s=0)
    client = milvus_audit.MilvusClient(lite_uri, audit=pipeline.audit_config(detection=rules, clock=clock,
                                                                             on_alert=[alerts.append]))
    seeded(client, rows=1500)
    client.delete("docs", ids=list(range(10)))  # small: neither side fires
    client.delete("docs", ids=list(range(100, 1200)))  # 1,100 rows: both fire
    for i in range(3):
        client.create_collection(f"scratch{i}", dimension=DIM)
        client.drop_collection(f"scratch{i}")
    clock.advance(60)
    for _ in range(10):
        with pytest.raises(pymilvus.MilvusException):
            client.describe_collection("missing")
    pipeline.force_flush()
    pipeline.shutdown()

    records = [r for r in read_jsonl(jsonl) if r["event_name"] == "milvus.audit"]
    matches = _sigma_matches(_sqlite(records))
    destructive = {event for a in alerts if a.rule == "destructive_operation" for event in a.events}
    assert len(destructive) == 4
    assert matches["milvus_destructive_operation"] | matches["milvus_mass_delete"] == destructive
    (spike,) = [a for a in alerts if a.rule == "error_spike"]
    assert matches["milvus_failed_call"] == set(spike.events)  # the 10 failures the engine counted
    assert matches["milvus_rbac_permission_denied"] == set()


# -- schemas ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sample_records(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """Real records of every kind: connect, reads, writes, schema, a failure, an alert (Milvus Lite),
    and server records ingested from the real server's access-log lines."""
    tmp = tmp_path_factory.mktemp("formats")
    jsonl = tmp / "audit.jsonl"
    pipeline = milvus_audit.configure(jsonl_path=jsonl, set_global=False)
    client = milvus_audit.MilvusClient(str(tmp / "m.db"), user="alice", password="not-exported",
                                       audit=pipeline.audit_config(detection=rules_only("destructive_operation"),
                                                                   integrity_key=b"k" * 32))
    seeded(client, rows=20)
    client.search("docs", [[0.1] * DIM], limit=3, filter='tag == 1')
    client.query("docs", filter="id < 5")
    client.delete("docs", ids=[1])
    try:
        client.create_role("reader")  # rbac, unimplemented on Lite
    except Exception:
        pass
    try:
        client.create_user("bob", "pw-123456")
    except Exception:
        pass
    client.drop_collection("docs")
    client.close()
    pipeline.shutdown()
    records = read_jsonl(jsonl)
    # RBAC records as the real server produces them (see tests/test_server_auth.py)
    grant = json.loads(json.dumps(records[-1]))
    grant["event_name"] = "milvus.audit"
    grant["attributes"].update({"db.operation.name": "grant_role", "milvus_audit.category": "rbac",
                                "milvus_audit.target.user": "bob", "milvus_audit.target.role": "reader",
                                "milvus_audit.outcome": "success", "milvus_audit.mutating": True})
    # the server's access log, as `milvus-audit ingest` ships it
    access_log, server_jsonl = tmp / "access.log", tmp / "server.jsonl"
    access_log.write_text("\n".join(RECORDED) + "\n")
    _ingest_jsonl([str(access_log)], server_jsonl)
    server = read_jsonl(server_jsonl)
    assert len(server) == len(RECORDED)
    return [*records, grant, *server]


def test_ocsf_output_validates_against_the_schema(sample_records: list[dict[str, Any]]) -> None:
    from ocsf.v1_5_0 import events

    classes = {3002: events.Authentication, 3001: events.AccountChange, 3005: events.UserAccess,
               6003: events.ApiActivity, 6005: events.DatastoreActivity, 2004: events.DetectionFinding}
    seen = set()
    for record in sample_records:
        event = to_ocsf(record)
        model = classes[event["class_uid"]]
        validated = model.model_validate(event)  # required attributes, enums, types: OCSF 1.5.0
        dumped = validated.model_dump(exclude_none=True)
        assert dumped["type_uid"] == event["class_uid"] * 100 + event["activity_id"]
        assert dumped["category_uid"] == event["category_uid"]
        assert event["severity_id"] in range(0, 7)
        unknown = set(event) - set(model.model_fields) - {"unmapped"}
        assert not unknown, (event["class_uid"], unknown)
        if record["event_name"] == "milvus.server.access":  # the address the server saw
            assert dumped["src_endpoint"]["ip"] == "127.0.0.1" and dumped["src_endpoint"]["port"] in (41162, 41168)
        seen.add(event["class_uid"])
    assert seen == {3002, 3001, 3005, 6003, 6005, 2004}


def test_ecs_output_uses_ecs_fields_and_types(sample_records: list[dict[str, Any]]) -> None:
    allowed_categories = {"authentication", "database", "iam", "configuration", "intrusion_detection"}
    allowed_types = {"start", "access", "change", "creation", "deletion", "info", "user", "group", "indicator"}
    for record in sample_records:
        ecs = to_ecs(record)
        event = ecs["event"]
        assert set(event["category"]) <= allowed_categories and set(event["type"]) <= allowed_types
        assert event["kind"] in ("event", "alert")
        assert isinstance(event.get("duration", 0), int)
        assert event.get("outcome", "success") in ("success", "failure", "unknown")
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT[\d:.]+Z", ecs["@timestamp"])
        if record["event_name"] != "milvus.server.access":  # ingested without an integrity key
            assert isinstance(event["sequence"], int) and len(event["hash"]) == 64
    connect = to_ecs(next(r for r in sample_records if r["attributes"].get("db.operation.name") == "connect"))
    assert connect["event"]["category"] == ["authentication"] and connect["user"]["name"] == "alice"
    refused = to_ecs(next(r for r in sample_records if r["event_name"] == "milvus.server.access"))
    assert refused["event"]["category"] == ["authentication"] and refused["event"]["reason"] == "authentication"
    assert refused["user"]["name"] == "root" and refused["source"] == {"address": "127.0.0.1", "port": 41162}
    assert refused["client"] == refused["source"]


def test_cef_escapes_hostile_values(sample_records: list[dict[str, Any]]) -> None:
    record = json.loads(json.dumps(sample_records[2]))
    record["attributes"]["db.collection.name"] = "x|y=z\\\nCEF:0|forged|ext=1"
    record["attributes"]["db.operation.name"] = "search|evil"
    line = to_cef(record)
    assert "\n" not in line and "\r" not in line
    parts = re.split(r"(?<!\\)\|", line, maxsplit=7)  # 7 header fields, then the extension
    assert parts[0] == "CEF:0" and parts[5] == "search\\|evil"
    extension = parts[7]
    assert "cs1=x|y\\=z\\\\\\nCEF:0|forged|ext\\=1 " in extension  # one value, no new field or line
    assert not re.search(r"(?<!\\) ext=", extension)
    for record in sample_records:
        assert to_cef(record).startswith("CEF:0|milvus-audit|milvus-audit|")


def test_jsonl_in_ecs_and_ocsf_verifies(lite_uri: str, tmp_path: Path) -> None:
    from milvus_audit.integrity.verify import verify

    for schema in ("ecs", "ocsf"):
        key = schema.encode() * 16  # a stream of its own per file
        path = tmp_path / f"audit.{schema}.jsonl"
        pipeline = milvus_audit.configure(jsonl_path=path, jsonl_format=schema, set_global=False)  # type: ignore[arg-type]
        client = milvus_audit.MilvusClient(lite_uri, audit=pipeline.audit_config(integrity_key=key))
        client.list_collections()
        pipeline.shutdown()
        (report,) = [r for r in verify([path], key=key, allow_open=True)]
        assert report.records >= 2 and report.findings == []


# -- collector configurations ------------------------------------------------------------
COLLECTOR_VERSION = "v0.115.0"
# Component -> the configuration keys documented for otelcol-contrib v0.115.0 (README of each component).
DOCUMENTED_KEYS = {
    "otlp": {"protocols", "endpoint", "tls", "sending_queue", "retry_on_failure", "timeout", "compression",
             "headers", "auth"},
    "filelog": {"include", "exclude", "start_at", "storage", "operators", "include_file_path", "encoding",
                "poll_interval", "multiline", "retry_on_failure"},
    "memory_limiter": {"check_interval", "limit_mib", "spike_limit_mib", "limit_percentage", "spike_limit_percentage"},
    "batch": {"timeout", "send_batch_size", "send_batch_max_size"},
    "splunk_hec": {"token", "endpoint", "source", "sourcetype", "index", "sending_queue", "retry_on_failure",
                   "tls", "timeout", "max_content_length_logs", "disable_compression"},
    "elasticsearch": {"endpoints", "logs_index", "mapping", "auth", "sending_queue", "retry", "tls", "user",
                      "password", "api_key", "flush"},
    "syslog": {"endpoint", "port", "network", "protocol", "tls", "sending_queue", "retry_on_failure", "timeout"},
    "file_storage": {"directory", "timeout", "compaction", "fsync"},
    "basicauth": {"client_auth", "htpasswd"},
    "transform": {"error_mode", "log_statements", "trace_statements", "metric_statements"},
}


@pytest.mark.parametrize("path", sorted((ROOT / "examples" / "collector").glob("*.yaml")), ids=lambda p: p.name)
def test_collector_configs(path: Path) -> None:
    text = path.read_text()
    assert f"otelcol-contrib {COLLECTOR_VERSION}".lower() in text.lower().replace("(contrib) ", "contrib ") or \
        COLLECTOR_VERSION in text.splitlines()[0]
    config = yaml.safe_load(text)
    sections = ("extensions", "receivers", "processors", "exporters")
    for section in sections:
        for name, settings in (config.get(section) or {}).items():
            component = name.split("/")[0]
            assert component in DOCUMENTED_KEYS, f"{path.name}: unknown component {name}"
            unknown = set(settings or {}) - DOCUMENTED_KEYS[component]
            assert not unknown, f"{path.name}: {name} has undocumented keys {unknown}"
    service = config["service"]
    for extension in service.get("extensions", []):
        assert extension in config["extensions"]
    for pipeline in service["pipelines"].values():
        for kind, section in (("receivers", "receivers"), ("processors", "processors"), ("exporters", "exporters")):
            for name in pipeline.get(kind, []):
                assert name in config[section], f"{path.name}: {name} not defined"
        for name in pipeline["exporters"]:
            queue = config["exporters"][name]["sending_queue"]
            assert queue["enabled"] is True
            assert queue["storage"] in service["extensions"]  # persistent: survives a restart


def test_the_ecs_pipeline_reads_each_rule_field_where_to_ecs_writes_it() -> None:
    """`sigma convert --schema ecs` maps every field a rule reads; the ECS records must have it there,
    for the audited clients' records and the server's (`milvus-audit ingest`) alike."""
    from milvus_audit.siem.convert import ECS_FIELDS

    fields = rule_fields()
    resource = {"host.name": "app-1", "service.name": "search-api"}
    for event_name in ("milvus.audit", "milvus.server.access"):
        attributes = {field: f"v-{field}" for field in fields if field not in resource and field != "event_name"}
        record = {"timestamp": "2026-11-29T00:00:00Z", "event_name": event_name, "trace_id": "ab" * 16,
                  "span_id": "cd" * 8, "attributes": attributes, "resource": resource}
        ecs = to_ecs(record)
        expected = {**attributes, **resource, "event_name": event_name}
        for field in fields:
            path = ECS_FIELDS.get(field, f"milvus.{field}")
            value: Any = ecs
            for part in (path.split(".", 1) if path.startswith("milvus.") else path.split(".")):
                value = value.get(part) if isinstance(value, dict) else None
            assert value == expected[field], (event_name, field, path, value)
