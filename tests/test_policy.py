"""The audit policy: selection, sampling, never-excluded events, detection, chain, reload."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pymilvus
import pytest

import milvus_audit
from milvus_audit import AuditConfig
from milvus_audit.auditing import policy as policy_runtime
from milvus_audit.exceptions import ConfigError
from milvus_audit.integrity.verify import verify
from milvus_audit.model.catalog import lookup
from milvus_audit.model.policy import PolicyError, parse_policy, parse_policy_yaml
from milvus_audit.otel.setup import configure
from tests.conftest import Telemetry

PINNED = """policy:
  - match: {category: data_read, outcome: success}
    sample: 0.01
  - match: {collection: "scratch_*"}
    action: exclude
  - match: {operation: query, collection: "pii_*"}
    drop_attributes: [db.query.text]
  - match: {}
    action: record
"""


class Denied(Exception):
    pass


class Stub(pymilvus.MilvusClient):
    """Answers at once; `fail` makes the next calls raise the given exception."""

    def __init__(self) -> None:  # no connection
        self.fail: BaseException | None = None

    def _maybe(self, value: Any) -> Any:
        if self.fail is not None:
            raise self.fail
        return value

    def search(self, collection_name: str, data: Any = None, filter: str = "", limit: int = 10,
               **kwargs: Any) -> Any:
        return self._maybe([[{"id": 1}] * 3])

    def query(self, collection_name: str, filter: str = "", output_fields: Any = None, **kwargs: Any) -> Any:
        return self._maybe([{"id": 1}])

    def insert(self, collection_name: str, data: Any = None, **kwargs: Any) -> Any:
        return self._maybe({"insert_count": 1})

    def drop_collection(self, collection_name: str, **kwargs: Any) -> Any:
        return self._maybe(None)

    def create_user(self, user_name: str, password: str, **kwargs: Any) -> Any:
        return self._maybe(None)

    def list_collections(self, **kwargs: Any) -> Any:
        return self._maybe(["a"])


def permission_denied() -> Exception:
    return pymilvus.MilvusException(code=65535, message="PrivilegeDenied: permission deny to alice")


def client(telemetry: Telemetry, **config: Any) -> Any:
    return milvus_audit.instrument(Stub(), telemetry.config(**config))


def test_pinned_form_loads_from_yaml_and_dicts_alike(tmp_path: Path) -> None:
    from_yaml = parse_policy_yaml(PINNED, "p.yaml")
    as_dicts = parse_policy([{"match": {"category": "data_read", "outcome": "success"}, "sample": 0.01},
                             {"match": {"collection": "scratch_*"}, "action": "exclude"},
                             {"match": {"operation": "query", "collection": "pii_*"},
                              "drop_attributes": ["db.query.text"]},
                             {"match": {}, "action": "record"}])
    assert from_yaml.hash == as_dicts.hash and len(from_yaml.rules) == 4
    path = tmp_path / "policy.yaml"
    path.write_text(PINNED)
    loaded, watched = policy_runtime.load_policy(str(path))
    assert loaded.hash == from_yaml.hash and watched == path


@pytest.mark.parametrize("selector,value,hit,miss", [
    ("category", "data_read", "search", "insert"),
    ("operation", "sea*", "search", "query"),
    ("collection", "scratch_*", "scratch_1", "docs"),
    ("collection", ["a", "b*"], "b9", "c"),
])
def test_every_selector_and_first_match_wins(telemetry: Telemetry, selector: str, value: Any, hit: str,
                                             miss: str) -> None:
    rules = [{"match": {selector: value}, "action": "exclude"}, {"match": {}, "action": "record"}]
    audited = client(telemetry, policy=rules)
    if selector in ("category", "operation"):
        getattr(audited, hit)("docs")
        getattr(audited, miss)("docs")
        assert not telemetry.ops(hit) and telemetry.ops(miss)
    else:
        audited.search(hit)
        audited.search(miss)
        assert [r["db.collection.name"] for r in telemetry.ops("search")] == [miss]


def test_user_enduser_database_outcome_and_mutating_selectors(telemetry: Telemetry) -> None:
    audited = client(telemetry, policy=[
        {"match": {"enduser": "bot-*"}, "action": "exclude"},
        {"match": {"database": "analytics"}, "action": "exclude"},
        {"match": {"mutating": False, "outcome": "success", "category": "schema"}, "action": "exclude"},
    ])
    with milvus_audit.enduser("bot-7"):
        audited.search("docs")
    with milvus_audit.enduser("alice"):
        audited.search("docs")
    audited.search("docs", db_name="analytics")
    audited.list_collections()
    audited.insert("docs", [{"id": 1}])
    assert [r.get("enduser.id") for r in telemetry.ops("search")] == ["alice"]
    assert not telemetry.ops("list_collections") and telemetry.ops("insert")
    telemetry.clear()
    user = client(telemetry, policy=[{"match": {"user": "anonymous"}, "action": "exclude"}])
    user.search("docs")
    assert len(telemetry.ops("search")) == 1  # the stub's user is not "anonymous": recorded


def test_first_match_wins_and_drop_attributes(telemetry: Telemetry) -> None:
    audited = client(telemetry, policy=[
        {"match": {"operation": "query", "collection": "pii_*"}, "drop_attributes": ["db.query.text"]},
        {"match": {"category": "data_read"}, "action": "record"},
        {"match": {"collection": "scratch_*"}, "action": "exclude"}])
    audited.query("pii_users", filter="ssn == '1'")
    audited.query("docs", filter="id > 1")
    audited.search("scratch_9")  # rule 2 (record) wins over rule 3 (exclude)
    audited.insert("scratch_9", [{"id": 1}])
    records = telemetry.ops("query")
    assert "db.query.text" not in records[0] and "db.query.text" in records[1]
    assert telemetry.ops("search") and not telemetry.ops("insert")


def test_never_excluded_list_holds_against_a_hostile_policy(telemetry: Telemetry) -> None:
    hostile = [{"match": {"collection": "*"}, "action": "exclude"},
               {"match": {"user": "*"}, "action": "exclude"}]
    stub = Stub()
    audited = milvus_audit.instrument(stub, telemetry.config(policy=hostile))
    audited.drop_collection("docs")
    audited.create_user("mallory", "secret")
    audited.search("docs")
    stub.fail = permission_denied()
    with pytest.raises(pymilvus.MilvusException):
        audited.search("docs")
    stub.fail = Denied("ordinary failure")
    with pytest.raises(Denied):
        audited.search("docs")
    assert telemetry.ops("drop_collection") and telemetry.ops("create_user")
    searches = telemetry.ops("search")
    assert [r["milvus_audit.failure_reason"] for r in searches] == ["permission_denied"]


@pytest.mark.parametrize("rule,reason", [
    ({"match": {}, "action": "exclude"}, "every call"),
    ({"match": {"outcome": "success"}, "action": "exclude"}, "every call"),
    ({"match": {"operation": "drop_*"}, "action": "exclude"}, "destructive"),
    ({"match": {"category": "rbac"}, "sample": 0.5}, "RBAC"),
    ({"match": {"category": "connection"}, "action": "exclude"}, "connects"),
    ({"match": {"operation": "delete"}, "action": "exclude"}, "destructive"),
    ({"match": {"collection": "x", "outcome": "failure"}, "action": "exclude"}, "failures"),
    ({"match": {"category": "data_read", "outcome": "failure"}, "sample": 0.5}, "successful calls only"),
])
def test_policy_that_tries_to_exclude_protected_events_is_rejected(rule: dict[str, Any], reason: str) -> None:
    with pytest.raises(PolicyError, match=reason):
        parse_policy([{"match": {}, "action": "record"}, rule])


def test_rejection_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("policy:\n  - match: {category: data_read}\n    sample: 0.1\n"
                    "  - match: {operation: drop_collection}\n    action: exclude\n")
    with pytest.raises(PolicyError) as error:
        policy_runtime.load_policy(str(path))
    assert str(error.value).startswith(f"{path}:4: rule 2: cannot exclude drop_collection")
    assert error.value.line == 4


@pytest.mark.parametrize("rule", [
    {"match": {"colection": "x"}}, {"match": {}, "action": "drop"}, {"match": {}, "sample": 0},
    {"match": {}, "sample": 1.5}, {"match": {"category": "nope"}}, {"match": {}, "action": "record", "sample": 0.5},
    {"match": {}, "drop_attributes": ["user.name"]}, {"match": {"mutating": "yes"}}, {"action": "record"},
])
def test_malformed_rules_are_rejected(rule: dict[str, Any]) -> None:
    with pytest.raises(PolicyError):
        parse_policy([rule])


def test_config_checks_policy_type() -> None:
    with pytest.raises(ConfigError):
        AuditConfig(policy=42)
    with pytest.raises(ConfigError):
        AuditConfig(policy="/no/such/policy.yaml")
    with pytest.raises(ConfigError):
        AuditConfig(policy_spans="some")  # type: ignore[arg-type]


def test_sampling_rate_within_bounds_and_failures_always_kept(telemetry: Telemetry) -> None:
    stub = Stub()
    audited = milvus_audit.instrument(stub, telemetry.config(
        policy=[{"match": {"category": "data_read", "outcome": "success"}, "sample": 0.05}]))
    calls = 100_000
    for _ in range(calls):
        audited.search("docs")
    kept = telemetry.ops("search")
    expected, sd = calls * 0.05, (calls * 0.05 * 0.95) ** 0.5
    assert abs(len(kept) - expected) < 5 * sd
    assert all(r["milvus_audit.sample_rate"] == 0.05 for r in kept)
    telemetry.clear()
    stub.fail = Denied("boom")
    for _ in range(200):
        with pytest.raises(Denied):
            audited.search("docs")
    failed = telemetry.ops("search")
    assert len(failed) == 200 and all("milvus_audit.sample_rate" not in r for r in failed)
    assert all(r["milvus_audit.outcome"] == "failure" for r in failed)


def test_excluded_calls_build_no_span_unless_asked(telemetry: Telemetry) -> None:
    rules = [{"match": {"category": "data_read"}, "action": "exclude"}]
    client(telemetry, policy=rules).search("docs")
    assert not [s for s in telemetry.spans.get_finished_spans() if s.name.startswith("search")]
    client(telemetry, policy=rules, policy_spans="all").search("docs")
    assert [s for s in telemetry.spans.get_finished_spans() if s.name.startswith("search")]
    assert not telemetry.ops("search")


def test_detection_sees_unrecorded_events(telemetry: Telemetry) -> None:
    from milvus_audit.detect import Rules

    alerts: list[Any] = []
    rules = Rules().configure("slow_query", absolute_ms=0, cooldown_s=0)
    audited = client(telemetry, policy=[{"match": {"category": "data_read"}, "action": "exclude"}],
                     detection=rules, on_alert=alerts.append)
    for _ in range(3):
        audited.search("docs")
    milvus_audit.flush()
    assert not telemetry.ops("search")
    assert len([a for a in alerts if a.rule == "slow_query"]) == 3


def test_brute_force_alert_is_the_same_with_a_one_percent_policy(telemetry: Telemetry) -> None:
    """The attack scenario (failed logins then a success, reads in between) alerts alike."""
    from milvus_audit.detect import Rules

    def scenario(policy: Any) -> list[str]:
        alerts: list[Any] = []
        stub = Stub()
        audited = milvus_audit.instrument(stub, telemetry.config(
            policy=policy, detection=Rules().configure("error_spike", cooldown_s=0), on_alert=alerts.append))
        stub.fail = Denied("boom")
        for _ in range(60):
            with pytest.raises(Denied):
                audited.search("docs")
        stub.fail = None
        for _ in range(500):
            audited.search("docs")
        milvus_audit.flush()
        return sorted(a.rule for a in alerts)

    baseline = scenario(None)
    sampled = scenario([{"match": {"category": "data_read", "outcome": "success"}, "sample": 0.01}])
    assert baseline == sampled


def test_chain_covers_recorded_records_only_and_verifies(tmp_path: Path) -> None:
    key = os.urandom(32)
    path = tmp_path / "audit.jsonl"
    pipeline = configure(jsonl_path=path, set_global=False)
    audited = milvus_audit.instrument(Stub(), pipeline.audit_config(
        integrity_key=key, policy=[{"match": {"category": "data_read", "outcome": "success"}, "sample": 0.1}]))
    for _ in range(500):
        audited.search("docs")
    audited.drop_collection("docs")
    pipeline.shutdown()
    reports = verify([path], key=key)
    assert [str(f) for r in reports for f in r.findings] == []
    assert sum(r.records for r in reports) >= 3


def test_set_policy_records_the_change_with_hash_and_who(telemetry: Telemetry) -> None:
    config = telemetry.config()
    audited = milvus_audit.instrument(Stub(), config)
    loaded = milvus_audit.set_policy([{"match": {"category": "data_read"}, "action": "exclude"}], config,
                                     changed_by="ops ticket 42")
    audited.search("docs")
    changes = telemetry.records("milvus.audit.policy")
    assert changes[-1]["milvus_audit.policy.hash"] == loaded.hash
    assert changes[-1]["milvus_audit.policy.changed_by"] == "ops ticket 42"
    assert changes[-1]["milvus_audit.policy.trigger"] == "set_policy"
    assert not telemetry.ops("search")
    milvus_audit.set_policy(None, config)
    audited.search("docs")
    assert telemetry.ops("search")


def test_reload_on_file_change_and_sighup_under_load(telemetry: Telemetry, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("policy:\n  - match: {category: data_read}\n    action: exclude\n")
    monkeypatch.setenv("MILVUS_AUDIT_POLICY_FILE", str(path))
    audited = client(telemetry)
    errors: list[BaseException] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            try:
                audited.search("docs")
            except BaseException as exc:  # pragma: no cover - the assertion says what
                errors.append(exc)
            time.sleep(0.0002)  # load, not a GIL monopoly: the watcher thread must run too

    workers = [threading.Thread(target=load) for _ in range(2)]
    for worker in workers:
        worker.start()
    try:
        time.sleep(0.1)
        assert not telemetry.ops("search")
        path.write_text("policy:\n  - match: {category: data_read}\n    action: record\n")
        os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
        policy_runtime.check_now()
        deadline = time.monotonic() + 20
        while not telemetry.ops("search") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert telemetry.ops("search")
        changes = telemetry.records("milvus.audit.policy")
        assert changes and changes[-1]["milvus_audit.policy.trigger"] == "file_change"
        if hasattr(signal, "SIGHUP") and signal.getsignal(signal.SIGHUP) is policy_runtime._sighup:
            path.write_text("policy:\n  - match: {category: data_read, outcome: success}\n    sample: 0.5\n")
            os.kill(os.getpid(), signal.SIGHUP)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not any(
                    c["milvus_audit.policy.trigger"] == "sighup" for c in telemetry.records("milvus.audit.policy")):
                time.sleep(0.05)
            assert any(c["milvus_audit.policy.trigger"] == "sighup" for c in telemetry.records("milvus.audit.policy"))
    finally:
        stop.set()
        for worker in workers:
            worker.join()
    assert not errors


def test_bad_reload_keeps_the_policy_and_says_so(telemetry: Telemetry, tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("- match: {category: data_read}\n  action: exclude\n")
    audited = client(telemetry, policy=str(path))
    holder = audited.audit_auditor.policy
    path.write_text("- match: {}\n  action: exclude\n")
    assert holder.reload("file_change") is False
    audited.search("docs")
    assert not telemetry.ops("search")
    refused = telemetry.records("milvus.audit.policy")[-1]
    assert refused["milvus_audit.policy.outcome"] == "rejected" and "every call" in refused["milvus_audit.policy.error"]


def test_rules_file_policy_section(telemetry: Telemetry, tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  brute_force:\n    threshold: 5\n" + PINNED.replace("sample: 0.01", "action: exclude"))
    audited = client(telemetry, detection=str(rules))
    audited.search("docs")
    audited.insert("docs", [{"id": 1}])
    assert not telemetry.ops("search") and telemetry.ops("insert")


def test_lifecycle_records_start_and_stop(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    pipeline = configure(jsonl_path=path, set_global=False)
    audited = milvus_audit.instrument(Stub(), pipeline.audit_config(policy=[
        {"match": {"category": "data_read"}, "action": "exclude"}]))
    audited.insert("docs", [{"id": 1}])
    pipeline.shutdown()
    from milvus_audit.export.jsonl import read_jsonl

    lines = [r for r in read_jsonl(path) if r["event_name"] == "milvus.audit.lifecycle"]
    assert [r["attributes"]["milvus_audit.lifecycle.state"] for r in lines] == ["start", "stop"]
    start = lines[0]["attributes"]
    assert start["milvus_audit.lifecycle.version"] == milvus_audit.__version__
    assert start["milvus_audit.policy.hash"] == audited.audit_auditor.policy.hash
    assert any("JsonlExporter" in sink for sink in start["milvus_audit.lifecycle.sinks"])


def test_protected_operations_come_from_the_catalog() -> None:
    from milvus_audit.model.policy import protected_operation

    assert protected_operation(lookup("drop_collection")) and protected_operation(lookup("truncate_collection"))
    assert protected_operation(lookup("delete")) and protected_operation(lookup("grant_role"))
    assert protected_operation(lookup("connect")) and protected_operation(lookup("update_password"))
    assert protected_operation(lookup("search")) is None and protected_operation(lookup("list_users")) is None
