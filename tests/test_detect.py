"""Detection on Milvus Lite through the audited client: each rule's attack fires, its near miss does not."""

from __future__ import annotations

import random
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

import grpc
import pymilvus
import pytest

import milvus_audit
from milvus_audit.detect import DetectionEngine, Observation, Rules, RulesError
from milvus_audit.detect.replay import replay
from milvus_audit.export.jsonl import read_jsonl
from tests.conftest import Alerts, Telemetry

DIM = 8


class FakeClock:
    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def vec(i: int) -> list[float]:
    return [float((i * 7 + k) % 11) / 11.0 for k in range(DIM)]


def make_client(lite_uri: str, telemetry: Telemetry, rules: Rules, clock: FakeClock,
                **kwargs: Any) -> tuple[Any, Alerts]:
    seen = Alerts()
    config = telemetry.config(detection=rules, clock=clock, on_alert=[seen.append], **kwargs)
    client = milvus_audit.MilvusClient(lite_uri, audit=config)
    return client, seen


def seeded(client: Any, name: str = "docs", rows: int = 300) -> None:
    client.create_collection(name, dimension=DIM)
    client.insert(name, [{"id": i, "vector": vec(i), "tag": i % 5} for i in range(rows)])


def rules_only(*enabled: str, **changes: dict[str, Any]) -> Rules:
    rules = Rules()
    for rule_id, settings in rules.settings.items():
        settings.enabled = rule_id in enabled
    for rule_id, values in changes.items():
        rules.configure(rule_id, **values)
    return rules


def fired(alerts: list[Any], rule: str) -> list[Any]:
    return [a for a in alerts if a.rule == rule]


# -- rules on Milvus Lite --------------------------------------------------------------
def test_destructive_operation(lite_uri: str, telemetry: Telemetry) -> None:
    clock = FakeClock()
    client, alerts = make_client(lite_uri, telemetry, rules_only("destructive_operation",
                                                                 destructive_operation={"delete_rows": 20}), clock)
    seeded(client)
    client.delete("docs", ids=list(range(10)))  # near miss: few rows
    client.create_collection("scratch", dimension=DIM)
    assert alerts == []
    client.delete("docs", ids=list(range(10, 60)))  # 50 rows > 20
    client.drop_collection("scratch")
    rules = [(a.rule, a.collection) for a in alerts]
    assert rules == [("destructive_operation", "docs"), ("destructive_operation", "scratch")]
    records = telemetry.records("milvus.alert")
    assert [r["milvus_audit.alert.rule"] for r in records] == ["destructive_operation"] * 2
    assert records[1]["milvus_audit.alert.severity"] == "high"
    assert list(records[1]["milvus_audit.alert.attack"]) == ["T1485"]
    assert "drop_collection" in records[1]["milvus_audit.alert.summary"]
    log = next(r for r in telemetry.log_records() if r.log_record.event_name == "milvus.alert")
    assert log.log_record.severity_text == "ERROR"


def test_data_exfiltration_by_iterator(lite_uri: str, telemetry: Telemetry) -> None:
    clock = FakeClock()
    rules = rules_only("data_exfiltration", data_exfiltration={"rows": 250})
    client, alerts = make_client(lite_uri, telemetry, rules, clock)
    seeded(client)
    with milvus_audit.enduser("careful"):
        client.query("docs", filter="id < 200", limit=200)  # near miss: 200 rows
    assert alerts == []
    with milvus_audit.enduser("thief"):
        iterator = client.query_iterator("docs", batch_size=50, filter="id >= 0")
        while iterator.next():
            clock.advance(1)
    (alert,) = fired(alerts, "data_exfiltration")
    assert alert.principal == "thief"
    assert alert.count >= 250 and alert.threshold == 250
    assert len(alert.events) <= 10 and all(":" in e for e in alert.events)
    record = telemetry.records("milvus.alert")[0]
    assert record["enduser.id"] == "thief" and record["milvus_audit.alert.window_s"] == 300


def test_exfiltration_allowlist_and_collection_override(lite_uri: str, telemetry: Telemetry) -> None:
    rules = Rules.from_yaml_text("""
rules:
  data_exfiltration:
    rows: 100
    allowlist: [backup-job]
    collections:
      public: {rows: 100000}
""")
    for rule_id, settings in rules.settings.items():
        settings.enabled = rule_id == "data_exfiltration"
    client, alerts = make_client(lite_uri, telemetry, rules, FakeClock())
    seeded(client)
    seeded(client, "public")
    with milvus_audit.enduser("backup-job"):
        client.query("docs", filter="id >= 0", limit=300)
    with milvus_audit.enduser("reader"):
        client.query("public", filter="id >= 0", limit=300)
    assert alerts == []


def test_error_spike(lite_uri: str, telemetry: Telemetry) -> None:
    clock = FakeClock(1_800_000_000.0)
    client, alerts = make_client(lite_uri, telemetry, rules_only("error_spike"), clock)
    seeded(client, rows=10)

    def fail(times: int) -> None:
        for _ in range(times):
            with pytest.raises(pymilvus.MilvusException):
                client.describe_collection("missing")

    for _ in range(5):  # near miss: a steady 9 failures a minute is this app's baseline
        fail(9)
        clock.advance(60)
    fail(12)  # 12 < 3 x ~9
    assert alerts == []
    clock.advance(600)  # quiet: the baseline decays
    fail(10)
    (alert,) = fired(alerts, "error_spike")
    assert alert.count == 10


def test_slow_query_absolute_threshold(lite_uri: str, telemetry: Telemetry) -> None:
    rules = rules_only("slow_query", slow_query={"collections": {"docs": {"absolute_ms": 0.001}}})
    client, alerts = make_client(lite_uri, telemetry, rules, FakeClock())
    seeded(client)
    seeded(client, "fast")
    client.search("fast", [vec(1)], limit=3)  # near miss: default 2 s
    assert alerts == []
    client.search("docs", [vec(1)], limit=3)
    (alert,) = fired(alerts, "slow_query")
    assert alert.collection == "docs" and alert.severity == "low"


def test_unusual_query_shape_and_new_collection(lite_uri: str, telemetry: Telemetry) -> None:
    clock = FakeClock()
    rules = rules_only("unusual_query", unusual_query={"min_samples": 5, "learning_s": 100, "learning_events": 5})
    client, alerts = make_client(lite_uri, telemetry, rules, clock)
    seeded(client, rows=1200)
    seeded(client, "secrets_vault", rows=5)
    with milvus_audit.enduser("app"):
        for _ in range(6):
            client.search("docs", [vec(2)], limit=10)
            clock.advance(30)
        client.search("docs", [vec(2)], limit=500)  # near miss: below the 1000 floor
        assert alerts == []
        client.search("docs", [vec(2)], limit=1100)
        (shape,) = fired(alerts, "unusual_query")
        assert shape.summary.startswith("app asked db.milvus.limit=1100 on docs, usually")
        client.query("secrets_vault", filter="id >= 0")
    new_collection = fired(alerts, "unusual_query")[-1]
    assert "never touched" in new_collection.summary and new_collection.collection == "secrets_vault"


def test_resource_exhaustion(lite_uri: str, telemetry: Telemetry) -> None:
    """Milvus Lite cannot be driven out of quota, so a subclass's call fails the way a rate-limited server does."""

    class RateLimited(grpc.RpcError):
        def code(self) -> grpc.StatusCode:
            return grpc.StatusCode.RESOURCE_EXHAUSTED

        def details(self) -> str:
            return "rate limit exceeded"

    class LimitedClient(pymilvus.MilvusClient):
        def insert(self, *args: Any, **kwargs: Any) -> Any:
            raise RateLimited()

    clock = FakeClock()
    seen = Alerts()
    config = telemetry.config(detection=rules_only("resource_exhaustion"), clock=clock, on_alert=[seen.append])
    client = milvus_audit.instrument(LimitedClient(lite_uri), config)
    for _ in range(2):
        with pytest.raises(RateLimited):
            client.insert("docs", [{"id": 1}])
    clock.advance(61)
    assert seen == []
    for _ in range(3):
        with pytest.raises(RateLimited):
            client.insert("docs", [{"id": 1}])
    assert [a.rule for a in seen] == ["resource_exhaustion"]


# -- false positives, replay, cooldown, memory -----------------------------------------
def normal_workload(lite_uri: str, telemetry: Telemetry, clock: FakeClock) -> Any:
    # Durations are real, not the fake clock's: on a loaded machine a Milvus Lite query now and
    # then takes over 100 ms (slow_query's floor), and the rule rightly reports it. This workload
    # is about the rules that judge behaviour, so slow_query only fires here above a second.
    rules = Rules().configure("slow_query", min_ms=1000)
    client, alerts = make_client(lite_uri, telemetry, rules, clock)
    seeded(client, "articles", rows=500)
    rng = random.Random(3)
    for minute in range(30):
        for user in ("alice", "bob", "carol", "dave"):
            with milvus_audit.enduser(user):
                client.search("articles", [vec(rng.randrange(100))], limit=10, output_fields=["tag"])
                client.query("articles", filter=f"tag == {rng.randrange(5)} and id < 100", limit=20)
                if minute % 5 == 0:
                    client.insert("articles", [{"id": 10_000 + minute * 10 + k, "vector": vec(k), "tag": 1}
                                               for k in range(5)])
            clock.advance(15)
        if minute % 10 == 0:
            try:
                client.describe_collection("typo")
            except pymilvus.MilvusException:
                pass
    client.delete("articles", ids=[10_000, 10_001])
    return alerts


def test_alerts_come_from_the_background_thread_unless_a_playbook_can_block(lite_uri: str,
                                                                          telemetry: Telemetry) -> None:
    from milvus_audit.respond import Block, Playbook

    def drop_and_watch(**config: Any) -> list[str]:
        threads: list[str] = []
        client = milvus_audit.MilvusClient(lite_uri, audit=telemetry.config(
            detection=rules_only("destructive_operation"),
            on_alert=[lambda alert: threads.append(threading.current_thread().name)], **config))
        client.create_collection("doomed", dimension=DIM)
        client.drop_collection("doomed")
        return threads

    background = drop_and_watch()
    deadline = time.monotonic() + 5
    while not background and time.monotonic() < deadline:  # no flush: the thread gets to it
        time.sleep(0.01)
    assert background == ["milvus-audit-background"]
    inline = drop_and_watch(playbooks=[Playbook(actions=[Block(ttl_s=60)])])
    assert inline == [threading.current_thread().name]  # before drop_collection returned


def test_normal_workload_raises_no_alert(lite_uri: str, telemetry: Telemetry) -> None:
    alerts = normal_workload(lite_uri, telemetry, FakeClock())
    assert alerts == [], [a.summary for a in alerts]


def test_replay_reproduces_in_process_alerts(lite_uri: str, tmp_path: Path) -> None:
    jsonl = tmp_path / "audit.jsonl"
    pipeline = milvus_audit.configure(jsonl_path=jsonl, set_global=False)
    clock = FakeClock()
    alerts = Alerts()
    rules = Rules().configure("data_exfiltration", rows=300).configure("destructive_operation", delete_rows=5)
    client = milvus_audit.MilvusClient(lite_uri, audit=pipeline.audit_config(detection=rules, clock=clock,
                                                                             on_alert=[alerts.append]))
    seeded(client)
    for user in ("u1", "u2"):
        with milvus_audit.enduser(user):
            for _ in range(3):
                client.query("docs", filter="id >= 0", limit=150)
                clock.advance(5)
    client.delete("docs", ids=list(range(10)))
    client.drop_collection("docs")
    pipeline.force_flush()
    pipeline.shutdown()
    assert {a.rule for a in alerts} == {"data_exfiltration", "destructive_operation"}

    replayed = replay(read_jsonl(jsonl), rules)
    key = [(a.rule, a.principal, a.count, a.timestamp_ns // 1000, tuple(a.events)) for a in alerts]
    assert [(a.rule, a.principal, a.count, a.timestamp_ns // 1000, tuple(a.events)) for a in replayed.alerts] == key
    alert_lines = [r for r in read_jsonl(jsonl) if r["event_name"] == "milvus.alert"]
    assert len(alert_lines) == len(alerts)

    from milvus_audit.cli import main

    assert main(["replay", str(jsonl), "--json"]) == 0


def test_cooldown_suppresses_repeats() -> None:
    engine = DetectionEngine(rules_only("brute_force"))
    alerts = []
    for i in range(10_000):
        observation = Observation(1_800_000_000 + i * 0.05, {
            "db.operation.name": "connect", "user.name": "root", "milvus_audit.outcome": "failure",
            "milvus_audit.failure_reason": "authentication"}, f"{i:032x}:{i:016x}")
        alerts.extend(engine.observe(observation))
    assert 1 <= len(alerts) <= 5  # 500 s of attack, 300 s cooldown
    assert alerts[1].suppressed > 0


def test_memory_bounded_under_random_principals() -> None:
    engine = DetectionEngine(Rules(max_principals=1000))
    rng = random.Random(5)
    tracemalloc.start()
    baseline = None
    for i in range(100_000):
        user = f"spray-{rng.getrandbits(64):x}"
        engine.observe(Observation(1_800_000_000 + i * 0.01, {
            "db.operation.name": "connect", "user.name": user, "milvus_audit.outcome": "failure",
            "milvus_audit.failure_reason": "authentication"}, ""))
        if i == 20_000:
            baseline = tracemalloc.get_traced_memory()[0]
    grown = tracemalloc.get_traced_memory()[0] - (baseline or 0)
    tracemalloc.stop()
    assert engine.tracked_principals <= 1000
    assert engine.evictions > 90_000
    assert grown < 2 * 1024 * 1024


def test_rules_file_errors_name_file_line_and_key(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("rules:\n  brute_force:\n    threshold: 5\n    windw_s: 60\n")
    with pytest.raises(RulesError, match=r"rules.yaml:4: rule 'brute_force', key 'windw_s'"):
        Rules.from_yaml(path)
    path.write_text("rules:\n  brute_forse:\n    threshold: 5\n")
    with pytest.raises(RulesError, match=r"rules.yaml:2: unknown rule 'brute_forse'"):
        Rules.from_yaml(path)
    path.write_text("rules:\n  slow_query:\n    absolute_ms: fast\n")
    with pytest.raises(RulesError, match=r"rules.yaml:3: .*expected a number"):
        Rules.from_yaml(path)
    example = Path(__file__).resolve().parents[1] / "rules.example.yaml"
    assert Rules.from_yaml(example).rule("brute_force").params["threshold"] == 5


# -- rules as modules ------------------------------------------------------------------------
def test_parameters_are_validated_by_their_rule(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match=r"rule 'brute_force', key 'window_s': must be greater than 0"):
        Rules().configure("brute_force", window_s=0)
    with pytest.raises(RulesError, match=r"key 'alpha': must be at most 1"):
        Rules().configure("error_spike", alpha=1.5)
    path = tmp_path / "rules.yaml"
    path.write_text("rules:\n  data_exfiltration:\n    collections:\n      docs: {rows: 0}\n")
    with pytest.raises(RulesError, match=r"rules.yaml:3: rule 'data_exfiltration', key 'collections': must be gre"):
        Rules.from_yaml(path)
    assert Rules().configure("slow_query", absolute_ms=0).rule("slow_query").params["absolute_ms"] == 0


def test_each_rule_module_declares_its_parts() -> None:
    from milvus_audit.detect import BUILTIN_RULES
    from milvus_audit.detect.rules import RULES, Rule

    assert [rule.id for rule in RULES] == list(BUILTIN_RULES)
    for rule in RULES:
        assert issubclass(rule, Rule) and rule.__module__.endswith(f".rules.{rule.id}")
        assert BUILTIN_RULES[rule.id] == rule.info and set(rule.info.params) == set(rule.params)
        assert rule.failures or rule.every_event or rule.observes_success is not Rule.observes_success
        forms = rule.sigma(rule.info.params)
        assert forms and all(form["custom_attributes"]["milvus_audit_rule"] == rule.id for form in forms)


def test_explain_peaks_through_the_rule_modules() -> None:
    engine = DetectionEngine(rules_only("brute_force", "data_exfiltration"), explain=True)
    for i in range(3):
        engine.observe(Observation(1_800_000_000 + i, {
            "db.operation.name": "connect", "user.name": "root", "milvus_audit.outcome": "failure",
            "milvus_audit.failure_reason": "authentication"}, f"e{i}"))
    engine.observe(Observation(1_800_000_010, {"db.operation.name": "query", "user.name": "bob",
                                               "milvus_audit.outcome": "success", "db.collection.name": "docs",
                                               "db.response.returned_rows": 2500}, "r"))
    assert engine.peaks() == {("brute_force", "root"): 3 / 5, ("data_exfiltration", "bob"): 0.25}
    assert engine.alerts_raised == 0 and engine.tracked_principals >= 1
