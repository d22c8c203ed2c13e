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
    ({"integrity_key": 1234}, "integrity_key takes bytes or a hex string"),
    ({"clock": 5}, "clock must be a callable"),
])
def test_promise_configuration_mistakes_fail_at_construction(settings: dict[str, Any], message: str | None) -> None:
    if message is None:
        AuditConfig(**settings)
        return
    with pytest.raises(ConfigError, match=message) as raised:
        AuditConfig(**settings)
    assert isinstance(raised.value, MilvusAuditError) and isinstance(raised.value, ValueError)
