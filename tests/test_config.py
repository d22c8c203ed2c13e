"""A configuration mistake fails loudly at construction; what is meant is accepted."""

from __future__ import annotations

from typing import Any

import pytest

import milvus_audit
from milvus_audit import AuditConfig
from milvus_audit.exceptions import ConfigError, MilvusAuditError
from tests.conftest import Telemetry
from tests.test_detect import DIM, rules_only


def test_promise_a_single_on_alert_callable_is_called(lite_uri: str, telemetry: Telemetry) -> None:
    seen: list[Any] = []
    config = telemetry.config(detection=rules_only("destructive_operation"), on_alert=seen.append)
    client = milvus_audit.MilvusClient(lite_uri, audit=config)
    client.create_collection("doomed", dimension=DIM)
    client.drop_collection("doomed")
    milvus_audit.flush()
    assert [alert.rule for alert in seen] == ["destructive_operation"]


@pytest.mark.parametrize(("settings", "message"), [
    ({"on_alert": "print"}, "on_alert takes a callable"),
    ({"on_alert": [print, 42]}, "42 is not callable"),
    ({"detection": 3.5}, "detection takes True"),
    ({"detection": True, "playbooks": ["webhook"]}, "is not a milvus_audit.respond.Playbook"),
    ({"playbooks": []}, None),
    ({"capture_filters": "everything"}, "capture_filters must be one of"),
    ({"checkpoint_every": 0}, "checkpoint_every must be a positive number"),
    ({"checkpoint_interval_s": "60"}, "checkpoint_interval_s must be a positive number"),
    ({"fail_closed": "yes"}, "fail_closed must be True or False"),
    ({"integrity_key": 1234}, "integrity_key takes bytes, a hex string or a key file"),
    ({"clock": 5}, "clock must be a callable"),
])
def test_promise_configuration_mistakes_fail_at_construction(settings: dict[str, Any], message: str | None) -> None:
    if message is None:
        AuditConfig(**settings)
        return
    with pytest.raises(ConfigError, match=message) as raised:
        AuditConfig(**settings)
    assert isinstance(raised.value, MilvusAuditError) and isinstance(raised.value, ValueError)


def test_promise_integrity_key_accepts_a_key_file(tmp_path: Any) -> None:
    """`integrity_key` takes a path, as `signing_key` does, read as `milvus-audit verify --key-file` reads it."""
    import stat

    from milvus_audit.integrity.verify import verify

    key = bytes(range(32))
    key_file = tmp_path / "integrity.key"
    key_file.write_text(key.hex() + "\n")
    jsonl = tmp_path / "audit.jsonl"
    pipeline = milvus_audit.configure(jsonl_path=jsonl, set_global=False)
    client = milvus_audit.MilvusClient(str(tmp_path / "m.db"), audit=pipeline.audit_config(integrity_key=key_file))
    client.list_collections()
    client.close()
    pipeline.shutdown()
    assert [(r.closed, r.findings) for r in verify([jsonl], key=key)] == [(True, [])]
    assert stat.S_IMODE(jsonl.stat().st_mode) == 0o600
    with pytest.raises(ConfigError, match="neither hex nor an existing key file"):
        AuditConfig(integrity_key=str(tmp_path / "missing.key"))
