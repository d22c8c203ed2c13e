"""Compliance packs: shipped, valid, each records every event its mapping requires on a recorded
workload covering every catalog category; the docs table is generated from them."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path
from typing import Any

import pymilvus
import pytest

import milvus_audit
from milvus_audit import semconv
from milvus_audit.auditing.auditor import Auditor
from milvus_audit.auditing.policy_cli import compliance_table, main_table_markers, simulate
from milvus_audit.cli import main as cli_main
from milvus_audit.model.catalog import operations
from milvus_audit.model.identity import ConnectionInfo
from milvus_audit.model.plan import CallPlan
from milvus_audit.model.policy import PACKS, pack, pack_requirements, pack_text
from milvus_audit.wiring import runtime_for
from tests.conftest import Telemetry

ROOT = Path(__file__).resolve().parents[1]
COLLECTIONS = ("cardholder_data", "phi_records", "docs")
FAILURES = {
    "authentication": lambda: pymilvus.MilvusException(code=1800, message="auth check failure"),
    "permission_denied": lambda: pymilvus.MilvusException(code=65535, message="PrivilegeDenied: permission deny"),
    "server_error": lambda: RuntimeError("boom"),
}


def workload(telemetry: Telemetry, policy: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every catalogued operation, on each collection, succeeding and failing each way, through the
    real call path: (every event as detection saw it, the records kept)."""
    seen: list[dict[str, Any]] = []
    config = telemetry.config(policy=policy)
    runtime = runtime_for(config)
    runtime.sinks.append(lambda event: seen.append(dict(event.attributes)))
    info = ConnectionInfo.from_arguments(pymilvus.MilvusClient, (), {"uri": "http://localhost:19530"}, b"k" * 32)
    auditor = Auditor(runtime, info)
    for operation in operations():
        if operation.local:
            continue
        plan = CallPlan.compile(operation, None)
        for collection in COLLECTIONS:
            kwargs = {operation.collection: collection} if operation.collection else {}
            with auditor.call(plan, (), kwargs, None if operation.collection else
                              {semconv.DB_COLLECTION_NAME: collection}) as call:
                call.returned([{"id": 1}])
            for make in FAILURES.values():
                with pytest.raises(Exception), auditor.call(plan, (), kwargs) as call:
                    raise make()
    milvus_audit.flush()
    return seen, telemetry.records()


def _matches(selector: dict[str, Any], attributes: dict[str, Any]) -> bool:
    keys = {"category": semconv.CATEGORY, "operation": semconv.DB_OPERATION_NAME,
            "collection": semconv.DB_COLLECTION_NAME, "outcome": semconv.OUTCOME,
            "failure_reason": semconv.FAILURE_REASON, "mutating": semconv.MUTATING}
    for key, wanted in selector.items():
        value = attributes.get(keys[key])
        if key == "mutating":
            if value is not wanted:
                return False
            continue
        options = wanted if isinstance(wanted, list) else [wanted]
        if value is None or not any(fnmatch.fnmatchcase(str(value), str(o)) for o in options):
            return False
    return True


def _key(attributes: dict[str, Any]) -> tuple[Any, ...]:
    return (attributes.get(semconv.DB_OPERATION_NAME), attributes.get(semconv.DB_COLLECTION_NAME),
            attributes.get(semconv.OUTCOME), attributes.get(semconv.FAILURE_REASON))


@pytest.mark.parametrize("name", PACKS)
def test_each_pack_records_every_event_its_mapping_requires(telemetry: Telemetry, name: str) -> None:
    seen, kept = workload(telemetry, pack(name))
    categories = {a[semconv.CATEGORY] for a in seen}
    assert categories >= {c.value for c in semconv.Category} - {"other"}, "the workload covers every category"
    kept_keys = {_key(a) for a in kept}
    sampled = [a for a in kept if semconv.SAMPLE_RATE in a]
    for requirement in pack_requirements(name):
        for selector in requirement.get("events") or []:
            if "event" in selector:
                continue  # not a call: never passes through a policy
            required = [a for a in seen if _matches(selector, a)]
            assert required, f"{name} {requirement['id']}: the workload has no {selector}"
            missing = [_key(a) for a in required if _key(a) not in kept_keys]
            assert not missing, f"{name} {requirement['id']} {selector}: not recorded: {missing[:5]}"
            assert not [a for a in sampled if _matches(selector, a)], f"{name} {requirement['id']}: sampled"
        for field in requirement.get("fields") or []:
            assert re.fullmatch(r"[a-z_.]+", field), field


def test_minimal_pack_drops_successful_reads_but_detection_sees_them(telemetry: Telemetry) -> None:
    seen, kept = workload(telemetry, pack("minimal"))
    reads = [a for a in seen if a[semconv.CATEGORY] == "data_read" and a[semconv.OUTCOME] == "success"]
    assert reads and not [a for a in kept if a[semconv.CATEGORY] == "data_read" and a[semconv.OUTCOME] == "success"]


def test_docs_table_is_generated_from_the_packs() -> None:
    text = (ROOT / "docs" / "compliance.md").read_text(encoding="utf-8")
    begin, end = main_table_markers()
    current = text.split(begin, 1)[1].split(end, 1)[0].lstrip("\n")
    assert current == compliance_table(), "docs/compliance.md is stale: regenerate it from the packs"
    for requirement in ("10.2.1.1", "10.2.1.7", "10.2.2", "CC6.1", "CC7.2", "CC7.3", "164.312(b)", "A.8.15",
                        "A.8.16", "Art. 12"):
        assert requirement in text


def test_cli_policy_show_and_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name in PACKS:
        assert cli_main(["policy", "show", name]) == 0
        assert capsys.readouterr().out == pack_text(name)
        path = tmp_path / f"{name}.yaml"
        path.write_text(pack_text(name))
        assert cli_main(["policy", "check", str(path)]) == 0
        assert pack(name).hash in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text("policy:\n  - match: {category: rbac}\n    action: exclude\n")
    assert cli_main(["policy", "check", str(bad)]) == 2
    assert f"{bad}:2: rule 1: cannot exclude" in capsys.readouterr().err


def test_cli_policy_check_sample_per_category(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    audit = tmp_path / "audit.jsonl"
    pipeline = milvus_audit.configure(jsonl_path=audit, set_global=False)
    telemetry_config = pipeline.audit_config()
    runtime = runtime_for(telemetry_config)
    info = ConnectionInfo.from_arguments(pymilvus.MilvusClient, (), {"uri": "http://localhost:19530"}, b"k" * 32)
    auditor = Auditor(runtime, info)
    for operation in operations():
        if not operation.local:
            with auditor.call(CallPlan.compile(operation, None), (), {}) as call:
                call.returned(None)
    pipeline.shutdown()
    policy = tmp_path / "minimal.yaml"
    policy.write_text(pack_text("minimal"))
    table = simulate(pack("minimal"), [str(audit)])
    assert table["data_read"]["dropped"] == table["data_read"]["records"] > 0
    assert table["rbac"]["kept"] > 0
    assert cli_main(["policy", "check", str(policy), "--sample", str(audit)]) == 0
    out = capsys.readouterr().out
    assert "data_read" in out and "dropped" in out
