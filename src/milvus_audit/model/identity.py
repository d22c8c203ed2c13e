"""Who is connecting where: the identity and endpoint attributes of a client.

Computed once per client from its constructor arguments. Secrets (password, token)
are read here only to derive the user name, the auth method and a keyed,
non-reversible credential fingerprint; they are never stored.
"""

from __future__ import annotations

import hashlib
import hmac
import inspect
import os
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

DEFAULT_PORT = 19530
_PROCESS_KEY = secrets.token_bytes(32)


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
    def from_parameters(cls, params: dict[str, Any], key: bytes) -> ConnectionInfo:
        """From named connection parameters (`uri`, `user`, `password`, `token`, `db_name`, TLS options)."""
        uri = str(params.get("uri") or "http://localhost:19530")
        user = str(params.get("user") or "")
        password = str(params.get("password") or "")
        token = str(params.get("token") or "")
        database = str(params.get("db_name") or "")

        attributes: dict[str, Any] = {"db.system.name": "milvus"}
        parts = urlsplit(uri)
        embedded = parts.scheme in ("", "file") or uri.endswith(".db")
        tls = parts.scheme == "https" or bool(
            params.get("secure") or params.get("server_pem_path") or params.get("ca_pem_path")
        )
        if not embedded:
            if parts.hostname:
                attributes["server.address"] = parts.hostname
            attributes["server.port"] = parts.port or DEFAULT_PORT
        if database:
            attributes["db.namespace"] = database

        if user:
            attributes["user.name"] = user
            attributes["milvus_audit.auth.method"] = "password"
        elif token and ":" in token:
            attributes["user.name"] = token.split(":", 1)[0]
            attributes["milvus_audit.auth.method"] = "password"
        elif token:
            attributes["milvus_audit.auth.method"] = "token"
            attributes["milvus_audit.auth.credential_id"] = credential_id(token, key)
        else:
            attributes["milvus_audit.auth.method"] = "none"
        held = tuple(s for s in (password, token, token.split(":", 1)[-1] if token else "") if s)
        return cls(attributes=attributes, secrets=held, database=database, tls=tls)

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
