"""Who did what: authentication, authorization and RBAC auditing on a real Milvus server with auth on."""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pymilvus
import pytest

import milvus_audit
from milvus_audit import AuditConfig
from tests.conftest import Telemetry
from tests.server import MilvusServer

pytestmark = pytest.mark.server

_counter = itertools.count()


def unique(prefix: str) -> str:
    return f"{prefix}_{next(_counter)}"


def root_client(server: MilvusServer, config: AuditConfig) -> Any:
    return milvus_audit.MilvusClient(server.uri, user=server.root_user, password=server.root_password,
                                     audit=config)


def only(records: list[dict[str, Any]], **match: Any) -> dict[str, Any]:
    found = [r for r in records if all(r.get(k) == v for k, v in match.items())]
    assert len(found) == 1, (match, found)
    return found[0]


def test_connect_success_and_the_four_failures(milvus_server: MilvusServer, telemetry: Telemetry) -> None:
    config = telemetry.config()
    ok = milvus_audit.MilvusClient(milvus_server.uri, user="root", password="Milvus", db_name="default",
                                   audit=config)
    ok.close()
    attempts = {
        "wrong_password": dict(user="root", password="not-the-password"),
        "unknown_user": dict(user="ghost_user", password="whatever123"),
        "no_credentials": {},
    }
    for kwargs in attempts.values():
        with pytest.raises(pymilvus.MilvusException):
            milvus_audit.MilvusClient(milvus_server.uri, audit=config, **kwargs)
    with pytest.raises(pymilvus.MilvusException):
        milvus_audit.MilvusClient("http://127.0.0.1:19999", user="root", password="Milvus", timeout=3,
                                  audit=config)

    connects = telemetry.ops("connect")
    assert [c["milvus_audit.outcome"] for c in connects] == ["success", "failure", "failure", "failure", "failure"]
    success = connects[0]
    assert success["user.name"] == "root"
    assert success["milvus_audit.auth.method"] == "password"
    assert success["server.address"] == "127.0.0.1" and success["server.port"] == 19530
    assert success["db.namespace"] == "default"
    assert success["milvus_audit.tls"] is False
    assert [c["milvus_audit.failure_reason"] for c in connects[1:]] == [
        "authentication", "authentication", "authentication", "unavailable"]
    assert connects[2]["user.name"] == "ghost_user"
    assert connects[3]["milvus_audit.auth.method"] == "none" and "user.name" not in connects[3]
    assert connects[4]["server.port"] == 19999
    exported = telemetry.exported_bytes()
    assert b"not-the-password" not in exported and b"whatever123" not in exported


def test_bare_token_gets_a_fingerprint_never_the_token(milvus_server: MilvusServer, telemetry: Telemetry) -> None:
    token = "sk-Pl4nted-api-key-0123456789"
    config = telemetry.config(credential_key=b"k" * 32)
    for _ in range(2):
        with pytest.raises(pymilvus.MilvusException):
            milvus_audit.MilvusClient(milvus_server.uri, token=token, audit=config)
    first, second = telemetry.ops("connect")
    assert first["milvus_audit.auth.method"] == "token"
    assert first["milvus_audit.failure_reason"] == "authentication"
    assert "user.name" not in first
    assert first["milvus_audit.auth.credential_id"] == second["milvus_audit.auth.credential_id"]
    other = milvus_audit.model.identity.credential_id(token, b"other-key")
    assert first["milvus_audit.auth.credential_id"] != other  # keyed: useless without the key
    assert token.encode() not in telemetry.exported_bytes()


def calls_until_rejected(call: Callable[[], object], timeout: float = 10.0) -> int:
    """Call until the server answers UNAUTHENTICATED; return how many calls passed first.

    Milvus drops a changed or deleted credential from its proxies' caches asynchronously, so a
    call right after `update_password` or `drop_user` may still pass (seen in CI).
    """
    deadline, passed = time.monotonic() + timeout, 0
    while True:
        try:
            call()
        except grpc.RpcError as rejected:
            assert rejected.code() is grpc.StatusCode.UNAUTHENTICATED
            return passed
        passed += 1
        assert time.monotonic() < deadline, f"still accepted after {passed} calls"
        time.sleep(0.05)


def test_stale_password_on_shared_connection_and_mid_session(milvus_server: MilvusServer,
                                                              telemetry: Telemetry) -> None:
    config = telemetry.config()
    root = root_client(milvus_server, config)
    user, old, new = unique("stale"), "OldPassw0rd-1", "NewPassw0rd-2"
    root.create_user(user, old)
    session = milvus_audit.MilvusClient(milvus_server.uri, user=user, password=old, audit=config)
    session.list_collections()
    root.update_password(user, old, new)

    # Mid-session: the client that authenticated with the old password.
    expected = ["success"] * (1 + calls_until_rejected(session.list_collections)) + ["authentication"]
    # A new client with the stale password shares the gRPC connection: it "connects",
    # and fails on its first call.
    try:
        stale = milvus_audit.MilvusClient(milvus_server.uri, user=user, password=old, audit=config)
    except pymilvus.MilvusException:
        pass
    else:
        with pytest.raises(grpc.RpcError):
            stale.list_collections()
        expected.append("authentication")
    # Mid-session drop.
    fresh = milvus_audit.MilvusClient(milvus_server.uri, user=user, password=new, audit=config)
    fresh.list_collections()
    root.drop_user(user)
    expected += ["success"] * (1 + calls_until_rejected(fresh.list_collections)) + ["authentication"]

    lists = [r for r in telemetry.ops("list_collections") if r.get("user.name") == user]
    assert [r.get("milvus_audit.failure_reason", "success") for r in lists] == expected
    update = only(telemetry.records(), **{"db.operation.name": "update_password"})
    assert update["milvus_audit.target.user"] == user
    exported = telemetry.exported_bytes()
    assert old.encode() not in exported and new.encode() not in exported


def test_permission_denied_for_read_write_ddl_and_rbac(milvus_server: MilvusServer, telemetry: Telemetry) -> None:
    config = telemetry.config()
    root = root_client(milvus_server, config)
    user, password, collection = unique("low"), "LowPassw0rd-1", unique("guarded")
    root.create_user(user, password)
    root.create_collection(collection, dimension=4)
    low = milvus_audit.MilvusClient(milvus_server.uri, user=user, password=password, audit=config)
    calls = {
        "query": lambda: low.query(collection, filter="id > 0"),
        "insert": lambda: low.insert(collection, [{"id": 1, "vector": [0.1] * 4}]),
        "create_collection": lambda: low.create_collection(unique("nope"), dimension=4),
        "create_role": lambda: low.create_role(unique("role")),
    }
    for call in calls.values():
        with pytest.raises(grpc.RpcError) as denied:
            call()
        assert denied.value.code() is grpc.StatusCode.PERMISSION_DENIED
    records = [r for r in telemetry.records() if r.get("user.name") == user and r["db.operation.name"] in calls]
    assert {r["db.operation.name"]: r["milvus_audit.missing_privilege"] for r in records} == {
        "query": "PrivilegeQuery", "insert": "PrivilegeInsert",
        "create_collection": "PrivilegeCreateCollection", "create_role": "PrivilegeCreateOwnership",
    }
    assert all(r["milvus_audit.failure_reason"] == "permission_denied" for r in records)
    assert all(r["error.type"] == "PERMISSION_DENIED" for r in records)
    assert {r["milvus_audit.category"] for r in records} == {"data_read", "data_write", "schema", "rbac"}
    root.drop_collection(collection)
    root.drop_user(user)


def test_rbac_changes_are_recorded_with_their_targets(milvus_server: MilvusServer, telemetry: Telemetry) -> None:
    config = telemetry.config()
    root = root_client(milvus_server, config)
    user, role, collection = unique("analyst"), unique("reader"), unique("books")
    root.create_collection(collection, dimension=4)
    root.create_user(user, "Analyst-Passw0rd")
    root.create_role(role)
    root.grant_privilege(role, "Collection", "Search", collection)
    root.grant_role(user, role)
    assert role in root.describe_user(user)["roles"]
    privileges = root.describe_role(role)["privileges"]
    assert any(p["privilege"] == "Search" and p["object_name"] == collection for p in privileges)
    for call in (lambda: root.grant_privilege_v2(role, "Query", collection),
                 lambda: root.revoke_privilege_v2(role, "Query", collection)):
        try:
            call()
        except grpc.RpcError as exc:  # Milvus 2.3 predates the v2 calls
            assert exc.code() is grpc.StatusCode.UNIMPLEMENTED
    root.update_password(user, "Analyst-Passw0rd", "Analyst-Passw0rd-2")
    root.revoke_role(user, role)
    assert role not in root.describe_user(user)["roles"]
    root.revoke_privilege(role, "Collection", "Search", collection)
    root.drop_role(role)
    root.drop_user(user)
    root.drop_collection(collection)

    records = telemetry.records()

    def rec(op: str) -> dict[str, Any]:
        return only(records, **{"db.operation.name": op})

    assert rec("create_user")["milvus_audit.target.user"] == user
    assert rec("create_role")["milvus_audit.target.role"] == role
    grant = rec("grant_privilege")
    assert (grant["milvus_audit.target.role"], grant["milvus_audit.privilege"], grant["milvus_audit.object_type"],
            grant["milvus_audit.object_name"]) == (role, "Search", "Collection", collection)
    for op in ("grant_role", "revoke_role"):
        assert (rec(op)["milvus_audit.target.user"], rec(op)["milvus_audit.target.role"]) == (user, role)
    for op in ("grant_privilege_v2", "revoke_privilege_v2"):
        v2 = rec(op)
        assert (v2["milvus_audit.target.role"], v2["milvus_audit.privilege"], v2["milvus_audit.object_type"],
                v2["milvus_audit.object_name"]) == (role, "Query", "Collection", collection)
    assert rec("revoke_privilege")["milvus_audit.privilege"] == "Search"
    assert rec("update_password")["milvus_audit.target.user"] == user
    assert rec("drop_role")["milvus_audit.target.role"] == role
    assert rec("drop_user")["milvus_audit.target.user"] == user
    assert all(rec(op)["milvus_audit.mutating"] for op in ("create_user", "grant_role", "grant_privilege"))
    describes = [r for r in records if r["db.operation.name"] == "describe_user"]
    assert len(describes) == 2 and all(r["milvus_audit.mutating"] is False for r in describes)
    exported = telemetry.exported_bytes()
    assert b"Analyst-Passw0rd" not in exported


def test_async_client_classifies_the_same(milvus_server: MilvusServer, telemetry: Telemetry) -> None:
    config = telemetry.config()
    root = root_client(milvus_server, config)
    user, password, collection = unique("async_low"), "AsyncLow-Passw0rd", unique("async_c")
    root.create_user(user, password)
    root.create_collection(collection, dimension=4)

    async def main() -> None:
        bad = milvus_audit.AsyncMilvusClient(milvus_server.uri, user="root", password="wrong-Passw0rd", audit=config)
        with pytest.raises(Exception):
            await bad.list_collections()
        async with milvus_audit.AsyncMilvusClient(milvus_server.uri, user=user, password=password,
                                                  audit=config) as low:
            with pytest.raises(grpc.aio.AioRpcError):
                await low.insert(collection, [{"id": 1, "vector": [0.1] * 4}])

    asyncio.run(main())
    bad_list = only(telemetry.records(), **{"db.operation.name": "list_collections", "user.name": "root"})
    assert bad_list["milvus_audit.failure_reason"] == "authentication"
    insert = only(telemetry.records(), **{"db.operation.name": "insert", "user.name": user})
    assert insert["milvus_audit.failure_reason"] == "permission_denied"
    assert insert["milvus_audit.missing_privilege"] == "PrivilegeInsert"
    root.drop_collection(collection)
    root.drop_user(user)


def test_instrumented_async_client_keeps_its_identity(milvus_server: MilvusServer, telemetry: Telemetry) -> None:
    """An `AsyncMilvusClient` connects on its first call: instrumenting it must not connect."""
    password = "AsyncIdent-Passw0rd-1"
    root = root_client(milvus_server, telemetry.config())
    user = unique("async_ident")
    root.create_user(user, password)
    bare = pymilvus.AsyncMilvusClient(milvus_server.uri, user=user, password=password, db_name="default")
    audited = milvus_audit.instrument(bare, telemetry.config())

    async def main() -> list[str]:
        try:
            return list(await audited.list_collections())
        finally:
            await audited.close()

    assert isinstance(asyncio.run(main()), list)
    listed = only(telemetry.records(), **{"db.operation.name": "list_collections", "user.name": user})
    assert (listed["server.address"], listed["server.port"], listed["db.namespace"]) == ("127.0.0.1", 19530, "default")
    assert listed["milvus_audit.auth.method"] == "password"
    assert password.encode() not in telemetry.exported_bytes()
    root.drop_user(user)


def test_rbac_example_runs(milvus_server: MilvusServer, tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[1] / "examples" / "rbac_audit.py"
    run = subprocess.run([sys.executable, str(example), milvus_server.uri], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "insert failure" in run.stdout and "reason=permission_denied" in run.stdout
    assert "grant_role success" in run.stdout
