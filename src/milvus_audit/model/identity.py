"""Who is connecting where: the identity and endpoint attributes of a client.

Computed once per client from its constructor arguments. Secrets (password, token)
are read here only to derive the user name, the auth method and a keyed,
non-reversible credential fingerprint; they are never stored.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import inspect
import os
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pymilvus

from milvus_audit import semconv

DEFAULT_PORT = 19530
_PROCESS_KEY = secrets.token_bytes(32)


class Precedence(enum.Enum):
    """How a pymilvus entry point combines `user`/`password`, `token` and credentials in the URI."""

    # pymilvus 3 `MilvusClient`/`AsyncMilvusClient`: `token`, else `user:password` when both are
    # given, else `user[:password]` from the URI.
    EXPLICIT_FIRST = "explicit_first"
    # `connections.connect` (and pymilvus 2.6 `MilvusClient`, which goes through it): the URI's
    # user and password replace the arguments; then `token`, else `user:password` when both are set.
    URI_FIRST = "uri_first"


CLIENT_RULES = Precedence.EXPLICIT_FIRST if int(pymilvus.__version__.split(".")[0]) >= 3 else Precedence.URI_FIRST
ORM_RULES = Precedence.URI_FIRST


@dataclass(frozen=True, slots=True)
class _Endpoint:
    """What a connection URI says, parsed as pymilvus does; fields stay empty where it cannot be parsed."""

    scheme: str = ""
    host: str = ""
    port: int | None = None
    user: str = ""
    password: str = ""
    database: str = ""
    embedded: bool = False

    @classmethod
    def parse(cls, uri: str) -> _Endpoint:
        if uri.endswith(".db") or uri.startswith("unix:"):
            return cls(scheme="file" if uri.endswith(".db") else "unix", embedded=True)
        try:
            parts = urlsplit(uri)
            scheme = parts.scheme.lower()
            host = parts.hostname or ""
            user, password = parts.username or "", parts.password or ""  # sent as written, not unquoted
            segments = [segment for segment in parts.path.split("/") if segment]
        except ValueError:  # e.g. "http://[::1": pymilvus refuses it, the connect is audited as failed
            return cls()
        try:
            port: int | None = parts.port or (443 if scheme == "https" else DEFAULT_PORT)
        except ValueError:  # a port out of range: "http://localhost:99999"
            port = None
        return cls(scheme, host or "localhost", port, user, password, segments[0] if segments else "",
                   embedded=scheme in ("", "file"))


def sent_credential(rules: Precedence, endpoint: _Endpoint, user: str, password: str, token: str) -> str:
    """The credential pymilvus puts in the `authorization` header: `user:password`, a token, or ""."""
    if rules is Precedence.URI_FIRST:
        user, password = endpoint.user or user, endpoint.password or password
        return token or (f"{user}:{password}" if user and password else "")
    explicit = token or (f"{user}:{password}" if user and password else "")
    if explicit:
        return explicit
    if endpoint.user:
        return f"{endpoint.user}:{endpoint.password}" if endpoint.password else endpoint.user
    return ""


def credential_key(configured: bytes | str | None) -> bytes:
    """The key for credential fingerprints: configured, from the environment, or per process."""
    if isinstance(configured, bytes):
        return configured
    if isinstance(configured, str):
        return bytes.fromhex(configured)
    env = os.environ.get("MILVUS_AUDIT_CREDENTIAL_KEY")
    if env:
        return bytes.fromhex(env)
    return _PROCESS_KEY


def credential_id(token: str, key: bytes) -> str:
    """A stable fingerprint of a credential that cannot be reversed or brute-forced without `key`."""
    return hmac.new(key, token.encode(), hashlib.sha256).hexdigest()[:24]


@dataclass(frozen=True, slots=True)
class ConnectionInfo:
    """The endpoint and identity attributes every record of one client carries."""

    attributes: dict[str, Any]
    secrets: tuple[str, ...]
    database: str
    tls: bool = False

    @classmethod
    def from_arguments(
        cls, client_cls: type, args: tuple[Any, ...], kwargs: dict[str, Any], key: bytes
    ) -> ConnectionInfo:
        try:
            init = client_cls.__init__  # type: ignore[misc]  # not the class: __new__ may be patched
            bound = inspect.signature(init).bind(None, *args, **kwargs)
        except TypeError:
            bound = None
        params: dict[str, Any] = dict(bound.arguments) if bound else dict(kwargs)
        params.update(params.pop("kwargs", {}) or {})
        return cls.from_parameters(params, key)

    @classmethod
    def from_parameters(cls, params: dict[str, Any], key: bytes, rules: Precedence | None = None) -> ConnectionInfo:
        """From named connection parameters (`uri`, `user`, `password`, `token`, `db_name`, TLS options).

        The identity is what pymilvus will actually send, by its own precedence `rules`
        (`CLIENT_RULES` for this pymilvus's `MilvusClient`, `ORM_RULES` for `connections.connect`).
        Never raises: a URI pymilvus will refuse still yields what can be said of it, and the
        connect is then audited as failed with pymilvus's own error.
        """
        rules = rules or CLIENT_RULES
        uri = str(params.get("uri") or "http://localhost:19530")
        endpoint = _Endpoint.parse(uri)
        credential = sent_credential(rules, endpoint, str(params.get("user") or ""),
                                     str(params.get("password") or ""), str(params.get("token") or ""))
        database = str(params.get("db_name") or "") or endpoint.database

        attributes: dict[str, Any] = {semconv.DB_SYSTEM_NAME: "milvus"}
        tls = endpoint.scheme == "https" or bool(
            params.get("secure") or params.get("server_pem_path") or params.get("ca_pem_path")
        )
        if not endpoint.embedded:
            if endpoint.host:
                attributes[semconv.SERVER_ADDRESS] = endpoint.host
            if endpoint.port is not None:
                attributes[semconv.SERVER_PORT] = endpoint.port
        if database:
            attributes[semconv.DB_NAMESPACE] = database

        user, separator, secret = credential.partition(":")
        if credential and separator:
            attributes[semconv.USER_NAME] = user
            attributes[semconv.AUTH_METHOD] = "password"
        elif credential:
            attributes[semconv.AUTH_METHOD] = "token"
            attributes[semconv.AUTH_CREDENTIAL_ID] = credential_id(credential, key)
        else:
            attributes[semconv.AUTH_METHOD] = "none"
        held = {str(params.get("password") or ""), str(params.get("token") or ""), credential,
                secret if separator else "", endpoint.password}
        token = str(params.get("token") or "")
        if ":" in token:
            held.add(token.split(":", 1)[1])
        return cls(attributes=attributes, secrets=tuple(sorted(s for s in held if s)), database=database, tls=tls)

    @classmethod
    def from_client(cls, client: Any, key: bytes) -> ConnectionInfo:
        """Best effort for `instrument(existing_client)`: what the client still knows."""
        config = getattr(client, "_config", None)
        if config is not None and hasattr(config, "uri"):  # pymilvus 3 keeps its connection parameters
            parameters = {"uri": config.uri, "token": config.token, "db_name": config.db_name}
            return cls.from_parameters(parameters, key)
        attributes: dict[str, Any] = {"db.system.name": "milvus", "milvus_audit.auth.method": "none"}
        database = ""
        try:
            handler = _handler_of(client)
            address = str(getattr(handler, "server_address", "") or getattr(handler, "_address", ""))
            if address and not address.endswith(".db") and ":" in address:
                host, _, port = address.rpartition(":")
                attributes["server.address"] = host
                attributes["server.port"] = int(port) if port.isdigit() else DEFAULT_PORT
            user = getattr(handler, "_user", "") or ""
            if user:
                attributes["user.name"] = str(user)
                attributes["milvus_audit.auth.method"] = "password"
            database = str(getattr(handler, "_db_name", "") or "")
        except Exception:
            pass
        if database:
            attributes["db.namespace"] = database
        return cls(attributes=attributes, secrets=(), database=database)


def _handler_of(client: Any) -> Any:
    """The client's connection handler; an async client's `_get_connection()` would connect: not called."""
    if inspect.iscoroutinefunction(client._get_connection):
        return getattr(client, "_handler", None)
    return client._get_connection()
