"""Detection on the real Milvus server with auth: brute force, spray, unauthorized access, escalation."""

from __future__ import annotations

from typing import Any

import grpc
import pymilvus
import pytest

import milvus_audit
from tests.conftest import Alerts, Telemetry
from tests.server import MilvusServer
from tests.test_detect import FakeClock, rules_only
from tests.test_server_auth import root_client, unique

pytestmark = pytest.mark.server


def attempt(server: MilvusServer, config: milvus_audit.AuditConfig, user: str, password: str) -> None:
    with pytest.raises(pymilvus.MilvusException):
        milvus_audit.MilvusClient(server.uri, user=user, password=password, audit=config)


def test_brute_force(milvus_server: MilvusServer, telemetry: Telemetry) -> None:
    clock, alerts = FakeClock(), Alerts()
    config = telemetry.config(detection=rules_only("brute_force"), clock=clock, on_alert=[alerts.append])
    for _ in range(4):  # near miss: 4 failures in 60 s
        attempt(milvus_server, config, "root", "guess-1")
        clock.advance(5)
    clock.advance(60)
    assert alerts == []
    for _ in range(5):
        attempt(milvus_server, config, "root", "guess-2")
        clock.advance(5)
    (alert,) = alerts
    assert (alert.rule, alert.principal, alert.severity, alert.count) == ("brute_force", "root", "high", 5)
    record = telemetry.records("milvus.alert")[0]
    assert record["user.name"] == "root" and "T1110" in record["milvus_audit.alert.attack"]
    assert len(record["milvus_audit.alert.events"]) == 5


def test_password_spray(milvus_server: MilvusServer, telemetry: Telemetry) -> None:
    clock, alerts = FakeClock(), Alerts()
    config = telemetry.config(detection=rules_only("password_spray"), clock=clock, on_alert=[alerts.append])
    for user in ("admin", "milvus", "svc"):  # near miss: 3 users
        attempt(milvus_server, config, user, "Spring2026!")
        clock.advance(10)
    assert alerts == []
    attempt(milvus_server, config, "backup", "Spring2026!")
    (alert,) = alerts
    assert alert.rule == "password_spray" and alert.count == 4


def test_unauthorized_access(milvus_server: MilvusServer, telemetry: Telemetry) -> None:
    clock, alerts = FakeClock(), Alerts()
    config = telemetry.config(detection=rules_only("unauthorized_access"), clock=clock, on_alert=[alerts.append])
    root = root_client(milvus_server, config)
    user, password, collection = unique("snoop"), "Snoop-Passw0rd", unique("private")
    root.create_user(user, password)
    root.create_collection(collection, dimension=4)
    low = milvus_audit.MilvusClient(milvus_server.uri, user=user, password=password, audit=config)

    def denied(call: Any) -> None:
        with pytest.raises(grpc.RpcError):
            call()

    for _ in range(2):  # near miss
        denied(lambda: low.query(collection, filter="id > 0"))
    clock.advance(120)
    assert alerts == []
    for _ in range(3):
        denied(lambda: low.query(collection, filter="id > 0"))
    denied(lambda: low.create_role(unique("role")))
    assert [(a.rule, a.severity, a.principal) for a in alerts] == [
        ("unauthorized_access", "medium", user), ("unauthorized_access", "high", user)]
    root.drop_collection(collection)
    root.drop_user(user)


def test_privilege_escalation(milvus_server: MilvusServer, telemetry: Telemetry) -> None:
    clock, alerts = FakeClock(), Alerts()
    config = telemetry.config(detection=rules_only("privilege_escalation"), clock=clock, on_alert=[alerts.append])
    root = root_client(milvus_server, config)
    old_user, new_user, role = unique("veteran"), unique("backdoor"), unique("ops")
    root.create_user(old_user, "Veteran-Passw0rd")
    root.create_role(role)
    clock.advance(3600)
    root.grant_role(old_user, role)  # near miss: the user is an hour old
    assert alerts == []
    root.create_user(new_user, "Backdoor-Passw0rd")
    clock.advance(30)
    root.grant_role(new_user, role)
    root.grant_role(old_user, "admin")
    root.update_password(old_user, "Veteran-Passw0rd", "Changed-Passw0rd")
    root.grant_privilege(role, "Global", "All", "*")
    summaries = [a.summary for a in alerts]
    assert all(a.severity == "critical" and a.principal == "root" for a in alerts)
    assert summaries == [
        f"root created {new_user} and granted it role {role} within 30 s",
        f"root granted the admin role to {old_user}",
        f"root changed the password of another user, {old_user}",
        f"root granted global privilege All on Global * to role {role}",
    ]
    assert len(telemetry.records("milvus.alert")) == 4
    root.revoke_role(old_user, "admin")
    for user in (old_user, new_user):
        root.drop_user(user)
    root.revoke_privilege(role, "Global", "All", "*")
    root.drop_role(role)
