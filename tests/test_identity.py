"""The record says who pymilvus actually authenticated as, checked against the real server with auth on.

Who the server saw is what it says when it refuses a call: neither user holds a role, and
Milvus answers a `create_collection` with "permission deny to <user>".
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pymilvus
import pytest

import milvus_audit
from milvus_audit.model.identity import ConnectionInfo, Precedence, _Endpoint, sent_credential
from tests.conftest import Telemetry
from tests.server import MilvusServer
from tests.test_server_auth import root_client, unique

_names = itertools.count()


class People:
    def __init__(self, server: MilvusServer, telemetry: Telemetry) -> None:
        root = root_client(server, telemetry.config())
        self.alice, self.alice_pw = unique("alice"), "Alice-Passw0rd-1"
        self.bob, self.bob_pw = unique("bob"), "B0b-Passw0rd-Secret"
        root.create_user(self.alice, self.alice_pw)
        root.create_user(self.bob, self.bob_pw)
        root.close()
        self.host = server.uri.split("://", 1)[1]


@pytest.fixture
def people(milvus_server: MilvusServer, telemetry: Telemetry) -> Iterator[People]:
    yield People(milvus_server, telemetry)


def server_saw(client: Any, people: People) -> str:
    """Who the server says this client is: "alice" or "bob"."""
    with pytest.raises(Exception) as refused:
        client.create_collection(f"who_{next(_names)}", dimension=4)
    said = str(refused.value).rsplit("permission deny to ", 1)[-1]
    return next(name for name, user in (("alice", people.alice), ("bob", people.bob))
                if said.startswith(user) and not said[len(user)].isalnum())


@pytest.mark.server
@pytest.mark.parametrize(("case", "expected"), [
    ("uri_credentials", "bob"),
    ("token_beats_user_and_password", "bob"),
    ("explicit_user_and_password_beat_the_uri", "alice"),
    ("token_is_user_and_password", "alice"),
])
def test_promise_the_record_names_who_pymilvus_authenticated_as(
        case: str, expected: str, people: People, telemetry: Telemetry) -> None:
    p = people
    arguments: dict[str, Any] = {
        "uri_credentials": {"uri": f"http://{p.bob}:{p.bob_pw}@{p.host}/default"},
        "token_beats_user_and_password": {"uri": f"http://{p.host}", "user": p.alice, "password": p.alice_pw,
                                          "token": f"{p.bob}:{p.bob_pw}"},
        "explicit_user_and_password_beat_the_uri": {"uri": f"http://{p.bob}:{p.bob_pw}@{p.host}",
                                                    "user": p.alice, "password": p.alice_pw},
        "token_is_user_and_password": {"uri": f"http://{p.host}", "token": f"{p.alice}:{p.alice_pw}"},
    }[case]
    telemetry.clear()
    client = milvus_audit.MilvusClient(**arguments, audit=telemetry.config())
    saw = server_saw(client, p)
    client.close()
    assert saw == expected  # the server's own view
    connect = telemetry.ops("connect")[0]
    assert connect["user.name"] == {"alice": p.alice, "bob": p.bob}[expected]
    assert connect["milvus_audit.auth.method"] == "password"
    if case == "uri_credentials":
        assert connect["db.namespace"] == "default"
    exported = telemetry.exported_bytes()
    assert p.bob_pw.encode() not in exported and p.alice_pw.encode() not in exported


@pytest.mark.server
def test_promise_a_user_without_password_sends_nothing(people: People, telemetry: Telemetry) -> None:
    telemetry.clear()
    with pytest.raises(pymilvus.MilvusException):
        milvus_audit.MilvusClient(f"http://{people.host}", user=people.alice, audit=telemetry.config())
    connect = telemetry.ops("connect")[0]
    assert connect["milvus_audit.auth.method"] == "none" and "user.name" not in connect
    assert connect["milvus_audit.failure_reason"] == "authentication"


@pytest.mark.server
def test_promise_uri_passwords_never_leak(people: People, telemetry: Telemetry) -> None:
    """A wrong password in the URI: the failure is recorded for the user, never with the password."""
    telemetry.clear()
    wrong = "Tr0ub4dorPass-wrong"
    with pytest.raises(pymilvus.MilvusException):
        milvus_audit.MilvusClient(f"http://{people.bob}:{wrong}@{people.host}", audit=telemetry.config())
    illegal = f"grpc://{people.bob}:{wrong}@{people.host}"
    with pytest.raises(Exception) as raised:
        milvus_audit.MilvusClient(illegal, audit=telemetry.config())
    with pytest.raises(type(raised.value)):
        pymilvus.MilvusClient(illegal)  # the very exception bare pymilvus raises
    connects = telemetry.ops("connect")
    assert [c["milvus_audit.outcome"] for c in connects] == ["failure", "failure"]
    assert connects[0]["user.name"] == people.bob and connects[0]["milvus_audit.failure_reason"] == "authentication"
    assert wrong.encode() not in telemetry.exported_bytes()


@pytest.mark.parametrize("uri", ["http://localhost:99999", "http://[::1", "grpc://host:1"])
def test_promise_a_malformed_uri_is_recorded_as_a_failed_connect(uri: str, telemetry: Telemetry) -> None:
    with pytest.raises(Exception) as audited:
        milvus_audit.MilvusClient(uri, audit=telemetry.config())
    with pytest.raises(Exception) as bare:
        pymilvus.MilvusClient(uri)
    assert type(audited.value) is type(bare.value) and str(audited.value) == str(bare.value)
    connects = telemetry.ops("connect")
    assert len(connects) == 1 and connects[0]["milvus_audit.outcome"] == "failure"


@pytest.mark.parametrize(("uri", "user", "password", "token", "client", "orm"), [
    # what is sent, by pymilvus 3's MilvusClient and by connections.connect (and pymilvus 2.6's client)
    ("http://h", "", "", "", "", ""),
    ("http://h", "alice", "", "", "", ""),
    ("http://h", "alice", "pw", "", "alice:pw", "alice:pw"),
    ("http://h", "alice", "pw", "bob:pw2", "bob:pw2", "bob:pw2"),
    ("http://h", "", "", "sk-123", "sk-123", "sk-123"),
    ("http://bob:pw2@h", "", "", "", "bob:pw2", "bob:pw2"),
    ("http://bob:pw2@h", "alice", "pw", "", "alice:pw", "bob:pw2"),
    ("http://bob:pw2@h", "alice", "", "", "bob:pw2", "bob:pw2"),
    ("http://bob@h", "", "", "", "bob", ""),
    ("http://bob@h", "", "pw", "", "bob", "bob:pw"),
    ("http://bob:pw2@h", "", "", "sk-123", "sk-123", "sk-123"),
])
def test_promise_every_combination_follows_pymilvus_precedence(
        uri: str, user: str, password: str, token: str, client: str, orm: str) -> None:
    endpoint = _Endpoint.parse(uri)
    assert sent_credential(Precedence.EXPLICIT_FIRST, endpoint, user, password, token) == client
    assert sent_credential(Precedence.URI_FIRST, endpoint, user, password, token) == orm
    info = ConnectionInfo.from_parameters({"uri": uri, "user": user, "password": password, "token": token},
                                          b"k" * 32, Precedence.EXPLICIT_FIRST)
    assert info.attributes.get("user.name") == (client.split(":")[0] if ":" in client else None)
    assert all(secret not in str(info.attributes) for secret in ("pw", "pw2", "sk-123"))
