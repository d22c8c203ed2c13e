"""Tamper evidence: every record chained by HMAC, with signed checkpoints.

Each audit, alert and response record carries `milvus_audit.stream` (a random id for
this process's stream), `milvus_audit.seq` (strictly increasing, no gaps) and
`milvus_audit.chain`: HMAC-SHA256 under the integrity key over the previous chain
value and a canonical encoding of the record (timestamp, event name, attributes).
Every N records or T seconds, and when the stream closes, a
`milvus.audit.checkpoint` record signed with Ed25519 lets a verifier holding only
the public key check the chain head. Changing, deleting, inserting or reordering a
record, cutting the file short, or forging a checkpoint is then detectable by
`milvus-audit verify`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from milvus_audit.export.jsonl import rfc3339
from milvus_audit.runtime.worker import LIFECYCLE, Stage

STREAM = "milvus_audit.stream"
SEQ = "milvus_audit.seq"
CHAIN = "milvus_audit.chain"
CHECKPOINT_EVENT = "milvus.audit.checkpoint"
SIGNATURE = "milvus_audit.checkpoint.signature"
HEAD = "milvus_audit.checkpoint.head"
FINAL = "milvus_audit.checkpoint.final"
KEY_ENV = "MILVUS_AUDIT_INTEGRITY_KEY"
SIGNING_KEY_ENV = "MILVUS_AUDIT_SIGNING_KEY"  # hex of the raw 32-byte Ed25519 private key
SIGNING_KEY_FILE_ENV = "MILVUS_AUDIT_SIGNING_KEY_FILE"  # PEM file
GENESIS = "0" * 64


def _plain(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


def canonical(timestamp: str, event_name: str, attributes: Mapping[str, Any]) -> bytes:
    """The bytes the chain covers: what the JSONL line says, minus the chain value itself."""
    body = {key: _plain(value) for key, value in attributes.items() if key != CHAIN}
    return json.dumps({"a": body, "e": event_name, "t": timestamp}, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=True, default=str).encode()


def link(key: bytes, previous: str, record: bytes) -> str:
    return hmac.new(key, previous.encode() + b"\n" + record, hashlib.sha256).hexdigest()


def checkpoint_message(stream: str, seq: int, head: str) -> bytes:
    return f"milvus-audit-checkpoint\n{stream}\n{seq}\n{head}".encode()


def integrity_key(configured: bytes | str | None) -> bytes | None:
    """The HMAC key: configured, or hex from MILVUS_AUDIT_INTEGRITY_KEY; None turns the chain off."""
    if isinstance(configured, bytes):
        return configured
    if isinstance(configured, str):
        return bytes.fromhex(configured)
    env = os.environ.get(KEY_ENV)
    return bytes.fromhex(env) if env else None


def load_signing_key(configured: Ed25519PrivateKey | str | os.PathLike[str] | None = None) -> Ed25519PrivateKey | None:
    """The checkpoint signing key: an object, a PEM file, or the environment (hex or file)."""
    if isinstance(configured, Ed25519PrivateKey):
        return configured
    path = configured if configured is not None else os.environ.get(SIGNING_KEY_FILE_ENV)
    if path is not None:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path}: not an Ed25519 private key")
        return key
    raw = os.environ.get(SIGNING_KEY_ENV)
    return Ed25519PrivateKey.from_private_bytes(bytes.fromhex(raw)) if raw else None


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(Path(path).read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path}: not an Ed25519 public key")
    return key


Emit = Callable[[str, str, dict[str, Any], int, Any], None]


class Chain:
    """One process's stream: assigns seq and chain values, and emits checkpoints.

    `seal_and_emit` holds the chain's lock while it emits, so the order records reach
    the exporters is the order of their sequence numbers.
    """

    def __init__(self, key: bytes, signing_key: Ed25519PrivateKey | None = None, *,
                 checkpoint_every: int = 1000, checkpoint_interval_s: float = 60.0) -> None:
        self.key = key
        self.signing_key = signing_key
        self.stream = secrets.token_hex(8)
        self.seq = 0
        self.head = GENESIS
        self.checkpoint_every = checkpoint_every
        self.checkpoint_interval_s = checkpoint_interval_s
        self._since_checkpoint = 0
        self._last_checkpoint = time.monotonic()
        self._lock = threading.RLock()
        self._emit: Emit | None = None
        self.closed = False

    def _seal(self, event_name: str, attributes: dict[str, Any], timestamp_ns: int) -> None:
        self.seq += 1
        attributes[STREAM] = self.stream
        attributes[SEQ] = self.seq
        self.head = link(self.key, self.head, canonical(rfc3339(timestamp_ns), event_name, attributes))
        attributes[CHAIN] = self.head

    def seal_and_emit(self, event_name: str, severity: str, attributes: dict[str, Any], timestamp_ns: int,
                      emit: Emit, context: Any = None) -> None:
        with self._lock:
            self._emit = emit
            self._seal(event_name, attributes, timestamp_ns)
            emit(event_name, severity, attributes, timestamp_ns, context)
            self._since_checkpoint += 1
            due = (self._since_checkpoint >= self.checkpoint_every
                   or time.monotonic() - self._last_checkpoint >= self.checkpoint_interval_s)
            if due and self.signing_key is not None:
                self._checkpoint(emit, final=False)

    def _checkpoint(self, emit: Emit, *, final: bool) -> None:
        assert self.signing_key is not None
        signature = self.signing_key.sign(checkpoint_message(self.stream, self.seq, self.head))
        attributes: dict[str, Any] = {HEAD: self.head, SIGNATURE: base64.b64encode(signature).decode(),
                                      FINAL: final, "milvus_audit.checkpoint.covers": self.seq}
        timestamp_ns = time.time_ns()
        self._seal(CHECKPOINT_EVENT, attributes, timestamp_ns)
        emit(CHECKPOINT_EVENT, "INFO", attributes, timestamp_ns, None)
        self._since_checkpoint = 0
        self._last_checkpoint = time.monotonic()

    def close(self) -> None:
        """Emit the final checkpoint: a verifier then knows the stream ended here."""
        with self._lock:
            if self.closed or self._emit is None or self.signing_key is None:
                return
            self._checkpoint(self._emit, final=True)
            self.closed = True


_CHAINS: dict[tuple[bytes, bytes | None, object], Chain] = {}
_CHAINS_LOCK = threading.Lock()


def chain_for(key: bytes, signing_key: Ed25519PrivateKey | None, destination: object = None,
              **options: Any) -> Chain:
    """The process's stream for this key and destination (created on first use).

    One stream per destination (the logger provider records go to), so that each
    destination receives every record and checkpoint of its stream, the final one included."""
    public = signing_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw) \
        if signing_key is not None else None
    with _CHAINS_LOCK:
        chain = _CHAINS.get((key, public, destination))
        if chain is None:
            chain = _CHAINS[(key, public, destination)] = Chain(key, signing_key, **options)
            LIFECYCLE.arm_at_exit()  # after the providers exist, so the drain runs before they shut down
        return chain


def close_streams() -> None:
    """Emit final checkpoints for every open stream (`AuditPipeline.shutdown()` calls this)."""
    with _CHAINS_LOCK:
        chains = list(_CHAINS.values())
    for chain in chains:
        chain.close()


LIFECYCLE.register(Stage.SEAL, lambda _seconds_left: close_streams())
