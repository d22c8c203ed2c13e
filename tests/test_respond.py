"""Automated response: webhooks to a real local HTTP server, blocks on Milvus Lite, revocation on the server."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import pymilvus
import pytest

import milvus_audit
from milvus_audit import AccessBlocked
from milvus_audit.respond import Block, Callback, Playbook, Revoke, Webhook, verify
from milvus_audit.wiring import runtime_for
from tests.conftest import Telemetry
from tests.server import MilvusServer
from tests.test_detect import DIM, FakeClock, rules_only, seeded
from tests.test_server_auth import root_client, unique

SECRET = "whsec-Pl4nted-0123"


class Receiver:
    """A real HTTP endpoint on 127.0.0.1 that records requests; the first `fail_first` answer 500."""

    def __init__(self, fail_first: int = 0, delay_s: float = 0.0) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.fail_first = fail_first
        self.delay_s = delay_s
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                time.sleep(receiver.delay_s)
                receiver.requests.append(({k: v for k, v in self.headers.items()}, body))
                status = 500 if len(receiver.requests) <= receiver.fail_first else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook() -> Iterator[Receiver]:
    receiver = Receiver(fail_first=1)
    yield receiver
    receiver.stop()


def responses(telemetry: Telemetry) -> list[dict[str, Any]]:
    return telemetry.records("milvus.response")


def responder_of(client: Any) -> Any:
    return client.audit_auditor.runtime.responder


def test_webhook_signed_retried_and_audited(lite_uri: str, telemetry: Telemetry, hook: Receiver) -> None:
    playbook = Playbook(rules=["destructive_operation"], actions=[Webhook(hook.url, secret=SECRET, backoff_s=0.05)])
    config = telemetry.config(detection=rules_only("destructive_operation"), playbooks=[playbook])
    client = milvus_audit.MilvusClient(lite_uri, audit=config)
    seeded(client, "doomed", rows=5)
    client.drop_collection("doomed")
    assert responder_of(client).worker.join()
    assert len(hook.requests) == 2  # a 500, then the retry
    headers, body = hook.requests[-1]
    assert verify(SECRET, headers["X-Milvus-Audit-Timestamp"], body, headers["X-Milvus-Audit-Signature"])
    assert not verify("wrong-secret", headers["X-Milvus-Audit-Timestamp"], body, headers["X-Milvus-Audit-Signature"])
    assert not verify(SECRET, str(int(headers["X-Milvus-Audit-Timestamp"]) - 3600), body,
                      headers["X-Milvus-Audit-Signature"])  # a replay, an hour later
    alert = json.loads(body)
    assert alert["milvus_audit.alert.rule"] == "destructive_operation"
    (record,) = responses(telemetry)
    assert record["milvus_audit.response.action"] == "webhook"
    assert record["milvus_audit.response.outcome"] == "success"
    assert record["milvus_audit.response.attempts"] == 2
    assert record["milvus_audit.alert.id"] == alert["milvus_audit.alert.id"]
    assert SECRET.encode() not in telemetry.exported_bytes()


def test_slack_payload(lite_uri: str, telemetry: Telemetry, hook: Receiver) -> None:
    hook.fail_first = 0
    playbook = Playbook(actions=[Webhook(hook.url, format="slack")])
    client = milvus_audit.MilvusClient(lite_uri, audit=telemetry.config(
        detection=rules_only("destructive_operation"), playbooks=[playbook]))
    seeded(client, "doomed", rows=5)
    client.drop_collection("doomed")
    assert responder_of(client).worker.join()
    payload = json.loads(hook.requests[0][1])
    assert payload["text"].startswith(":rotating_light: [high] destructive_operation")


def test_dead_webhook_never_blocks_or_fails_calls(lite_uri: str, telemetry: Telemetry) -> None:
    slow = Receiver(delay_s=2.0)
    playbook = Playbook(actions=[Webhook(slow.url, timeout_s=0.5, retries=0)])
    client = milvus_audit.MilvusClient(lite_uri, audit=telemetry.config(
        detection=rules_only("destructive_operation", destructive_operation={"cooldown_s": 0}),
        playbooks=[playbook]))
    for i in range(20):
        client.create_collection(f"c{i}", dimension=DIM)
        client.drop_collection(f"c{i}")  # each drop alerts and queues a delivery to a dead-slow endpoint
    assert len(telemetry.records("milvus.alert")) == 20
    assert len(telemetry.ops("drop_collection")) == 20
    assert all(r["milvus_audit.outcome"] == "success" for r in telemetry.ops("drop_collection"))
    slow.stop()


def test_block_refuses_the_principal_until_the_ttl(lite_uri: str, telemetry: Telemetry) -> None:
    clock = FakeClock()
    seen: list[Any] = []
    playbook = Playbook(rules=["data_exfiltration"], min_severity="high",
                        actions=[Block(ttl_s=600, scope="enduser"), Callback(seen.append)])
    config = telemetry.config(detection=rules_only("data_exfiltration", data_exfiltration={"rows": 100}),
                              playbooks=[playbook], clock=clock)
    client = milvus_audit.MilvusClient(lite_uri, audit=config)
    seeded(client, rows=300)
    with milvus_audit.enduser("mallory"):
        client.query("docs", filter="id >= 0", limit=150)  # fires, and blocks mallory
        with pytest.raises(AccessBlocked) as blocked:
            client.delete("docs", ids=list(range(300)))
        assert blocked.value.principal == "mallory"
    with milvus_audit.enduser("alice"):  # others unaffected
        assert len(client.get("docs", ids=[0, 150, 299])) == 3  # the delete never ran
    refused = [r for r in telemetry.ops("delete")]
    assert [r["milvus_audit.failure_reason"] for r in refused] == ["blocked"]
    assert refused[0]["enduser.id"] == "mallory"
    blocks = client.audit_auditor.blocks
    assert [(b.scope, b.principal) for b in blocks.list()] == [("enduser", "mallory")]
    actions = [(r["milvus_audit.response.action"], r["milvus_audit.response.outcome"]) for r in responses(telemetry)]
    assert actions == [("block", "success"), ("callback", "success")]
    assert [a.rule for a in seen] == ["data_exfiltration"]

    clock.advance(601)  # the block expires
    with milvus_audit.enduser("mallory"):
        client.get("docs", ids=[1])
    assert blocks.list() == []

    blocks.block("enduser", "mallory", 60)
    assert blocks.lift("enduser", "mallory")
    with milvus_audit.enduser("mallory"):
        client.get("docs", ids=[1])


def test_failing_callback_is_contained_and_audited(lite_uri: str, telemetry: Telemetry) -> None:
    def explode(alert: Any) -> None:
        raise RuntimeError("pager is down")

    client = milvus_audit.MilvusClient(lite_uri, audit=telemetry.config(
        detection=rules_only("destructive_operation"), playbooks=[Playbook(actions=[Callback(explode)])]))
    seeded(client, "doomed", rows=3)
    client.drop_collection("doomed")
    (record,) = responses(telemetry)
    assert record["milvus_audit.response.outcome"] == "failure"
    assert "pager is down" in record["milvus_audit.response.error"]


def test_playbooks_from_the_rules_file(lite_uri: str, telemetry: Telemetry, tmp_path: Path, hook: Receiver) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(f"""
rules:
  destructive_operation: {{cooldown_s: 0}}
playbooks:
  - rules: [destructive_operation]
    actions:
      - block: {{ttl_s: 60, scope: client}}
      - webhook: {{url: "{hook.url}", retries: 2, backoff_s: 0.01}}
""")
    client = milvus_audit.MilvusClient(lite_uri, audit=telemetry.config(detection=str(rules)))
    seeded(client, "doomed", rows=3)
    client.drop_collection("doomed")
    with pytest.raises(AccessBlocked):
        client.list_collections()
    assert responder_of(client).worker.join()
    assert len(hook.requests) == 2


@pytest.mark.server
def test_revoke_roles_and_restore(milvus_server: MilvusServer, telemetry: Telemetry) -> None:
    admin = pymilvus.MilvusClient(milvus_server.uri, user="root", password="Milvus")
    root = root_client(milvus_server, telemetry.config())
    user, password, role, collection = unique("rogue"), "Rogue-Passw0rd", unique("writer"), unique("locked")
    root.create_collection(collection, dimension=4)
    root.create_user(user, password)
    root.create_role(role)
    root.grant_role(user, role)

    dry = Revoke(admin)  # dry-run by default
    live = Revoke(admin, dry_run=False)
    protected = Revoke(admin, dry_run=False, allowlist=[user])
    for action, expect_roles in ((dry, [role]), (protected, [role]), (live, [])):
        config = telemetry.config(detection=rules_only("unauthorized_access"),
                                  playbooks=[Playbook(rules=["unauthorized_access"], actions=[action])])
        rogue = milvus_audit.MilvusClient(milvus_server.uri, user=user, password=password, audit=config)
        for _ in range(3):
            with pytest.raises(grpc.RpcError):
                rogue.query(collection, filter="id > 0")
        responder = runtime_for(config).responder
        assert responder.worker.join()
        assert admin.describe_user(user)["roles"] == tuple(expect_roles) or \
            list(admin.describe_user(user)["roles"]) == expect_roles
    assert live.revoked == {user: [role]}
    assert live.restore(user) == [role]
    assert list(admin.describe_user(user)["roles"]) == [role]
    outcomes = [(r["milvus_audit.response.outcome"], r["milvus_audit.response.dry_run"])
                for r in responses(telemetry)]
    assert outcomes == [("success", True), ("refused", False), ("success", False)]
    assert list(responses(telemetry)[2]["milvus_audit.response.roles"]) == [role]
    root.revoke_role(user, role)
    root.drop_role(role)
    root.drop_user(user)
    root.drop_collection(collection)


def test_incident_response_example_runs(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[1] / "examples" / "incident_response.py"
    run = subprocess.run([sys.executable, str(example), "--db", str(tmp_path / "ir.db")], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "milvus.alert" in run.stdout and "milvus.response" in run.stdout
    assert "AccessBlocked" in run.stdout
    assert "signature verified" in run.stdout


class AnyMethod:
    """A real HTTP endpoint that records every request of any method (it must receive nothing),
    or, with `redirect_to`, answers each with a 302 there."""

    def __init__(self, redirect_to: str | None = None) -> None:
        self.requests: list[tuple[str, dict[str, str]]] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                endpoint.requests.append((self.command, {k: v for k, v in self.headers.items()}))
                self.send_response(302 if redirect_to else 200)
                if redirect_to:
                    self.send_header("Location", redirect_to)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST = do_PUT = do_HEAD = _any

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def drop_to_alert(lite_uri: str, telemetry: Telemetry, action: Any, enduser: str = "ops") -> Any:
    client = milvus_audit.MilvusClient(lite_uri, audit=telemetry.config(
        detection=rules_only("destructive_operation"), playbooks=[Playbook(actions=[action])]))
    seeded(client, "doomed", rows=3)
    with milvus_audit.enduser(enduser):
        client.drop_collection("doomed")
    assert responder_of(client).worker.join()
    return client


def test_promise_webhook_url_is_a_credential_never_exported(lite_uri: str, telemetry: Telemetry,
                                                           hook: Receiver) -> None:
    import re

    token = "T0123/B0456/xoxbS3cretHookToken"
    hook.fail_first = 0
    delivered = Webhook(f"{hook.url}/services/{token}?code=Sig-Qu3ry-Secret", backoff_s=0.01)
    dead = AnyMethod()
    dead.stop()  # nothing listens there any more
    refused = Webhook(f"http://127.0.0.1:{dead.port}/services/{token}", retries=0)
    bad_scheme = Webhook(f"hxxps://hooks.slack.com/services/{token}", retries=0)  # urllib repeats the URL
    bad_port = Webhook(f"http://hooks.slack.com:{token}/x", retries=0)
    for action in (delivered, refused, bad_scheme, bad_port):
        telemetry.clear()
        drop_to_alert(lite_uri, telemetry, action)
        (record,) = responses(telemetry)
        target = record["milvus_audit.response.target"]
        assert re.fullmatch(r"[a-z]+://[^/#?@]*#fp=[0-9a-f]{16}", target), target
        assert token not in str(record) and "Qu3ry" not in str(record) and "S3cret" not in str(record)
        exported = telemetry.exported_bytes()
        assert b"S3cretHookToken" not in exported and b"Qu3ry" not in exported
        if action is not delivered:
            assert record["milvus_audit.response.outcome"] == "failure"
            assert record["milvus_audit.response.error"]
    assert len(hook.requests) == 1
    assert "S3cret" not in repr(delivered)  # nor in a repr that lands in a log
    # the same URL has the same fingerprint within the process, another URL another one
    assert Webhook(delivered.url).target == delivered.target != Webhook(delivered.url + "x").target
    assert delivered.target.startswith(f"http://127.0.0.1:{hook.url.split(':')[2].split('/')[0]}#fp=")


def test_promise_webhook_redirect_is_a_failed_delivery(lite_uri: str, telemetry: Telemetry) -> None:
    elsewhere = AnyMethod()
    redirector = AnyMethod(redirect_to=elsewhere.url)
    try:
        drop_to_alert(lite_uri, telemetry, Webhook(redirector.url, secret=SECRET, backoff_s=0.01))
        assert [method for method, _ in redirector.requests] == ["POST"]  # a 3xx is not retried
        assert elsewhere.requests == []  # the signed request never went on to another host
        (record,) = responses(telemetry)
        assert record["milvus_audit.response.outcome"] == "failure"
        assert "302" in record["milvus_audit.response.error"]
    finally:
        elsewhere.stop()
        redirector.stop()


def test_promise_slack_markup_cannot_be_injected(lite_uri: str, telemetry: Telemetry, hook: Receiver) -> None:
    hook.fail_first = 0
    hostile = "<!channel> <https://evil.example|Alert resolved> & <@U024BE7LH>"
    drop_to_alert(lite_uri, telemetry, Webhook(hook.url, format="slack"), enduser=hostile)
    payload = json.loads(hook.requests[0][1])
    texts = [payload["text"]] + [part for attachment in payload["attachments"] for field in attachment["fields"]
                                 for part in (field["title"], field["value"])]
    assert "&lt;!channel&gt; &lt;https://evil.example|Alert resolved&gt; &amp; &lt;@U024BE7LH&gt;" in payload["text"]
    assert not any("<" in text or ">" in text for text in texts)
    assert any("&lt;!channel&gt;" in field["value"] for field in payload["attachments"][0]["fields"])
    assert all("&amp;amp;" not in text for text in texts)  # escaped once
    assert payload["text"].startswith(":rotating_light: [high] destructive_operation")
