"""Tamper evidence: every record chained by HMAC, with signed checkpoints.

Each audit, alert and response record carries `milvus_audit.stream` (a random id for
this process's stream), `milvus_audit.seq` (strictly increasing, no gaps) and
`milvus_audit.chain`: HMAC-SHA256 under the integrity key over the previous chain
value and the canonical core of the record: everything the line is written from
(timestamp, event name, severity text, trace and span ids, attributes, and the
resource). The stream's first record and every checkpoint carry `milvus_audit.key_id`,
a fingerprint of the key (never the key), so a verifier can tell a wrong key from
tampering.

Every N records or T seconds (with a signing key), and when the stream closes (always),
a `milvus.audit.checkpoint` record asserts the chain head, how many records it covers
and whether it is the stream's last. With a signing key it is signed with Ed25519 over
its whole canonical core, so a verifier holding only the public key can check all it
asserts; the final checkpoint of an HMAC-only stream is authenticated by the chain.
Changing, deleting, inserting, reordering or appending a record, cutting the file
short, or forging a checkpoint is then detectable by `milvus-audit verify`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
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

from milvus_audit.export.jsonl import _plain as plain_value  # the writer's encoding: the chain covers what it writes
from milvus_audit.export.jsonl import rfc3339
from milvus_audit.runtime.worker import LIFECYCLE, Stage
from milvus_audit.semconv import CHECKPOINT_EVENT as CHECKPOINT_EVENT
from milvus_audit.semconv import SEQ as SEQ
from milvus_audit.semconv import STREAM as STREAM

CHAIN = "milvus_audit.chain"
KEY_ID = "milvus_audit.key_id"  # fingerprint of the integrity key: the stream's first record and checkpoints
SIGNATURE = "milvus_audit.checkpoint.signature"
SIGNER = "milvus_audit.checkpoint.signer"  # fingerprint of the signing (public) key
HEAD = "milvus_audit.checkpoint.head"
FINAL = "milvus_audit.checkpoint.final"
COVERS = "milvus_audit.checkpoint.covers"
KEY_ENV = "MILVUS_AUDIT_INTEGRITY_KEY"
SIGNING_KEY_ENV = "MILVUS_AUDIT_SIGNING_KEY"  # hex of the raw 32-byte Ed25519 private key
SIGNING_KEY_FILE_ENV = "MILVUS_AUDIT_SIGNING_KEY_FILE"  # PEM file
GENESIS = "0" * 64
CHECKPOINT_SEVERITY = "INFO"
_DUMPS = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str).encode


def canonical_resource(resource: Mapping[str, Any]) -> bytes:
    """The resource's part of the canonical core (fixed per logger provider: computed once)."""
    return _DUMPS({key: plain_value(value) for key, value in resource.items()}).encode()


EMPTY_RESOURCE = canonical_resource({})


def canonical(timestamp: str, event_name: str, attributes: Mapping[str, Any], severity_text: str = "",
              trace_id: str = "", span_id: str = "", resource: bytes = EMPTY_RESOURCE) -> bytes:
    """The bytes the chain covers: every field of the JSONL line (in the writer's encoding),
    minus the chain value itself. `resource` is `canonical_resource(...)`.

    JSON with `ensure_ascii` never holds a raw newline, so the two parts cannot be confused."""
    body = {key: plain_value(value) for key, value in attributes.items() if key != CHAIN}
    core = _DUMPS({"a": body, "e": event_name, "t": timestamp, "s": severity_text, "x": trace_id, "y": span_id})
    return core.encode() + b"\n" + resource


def link(key: bytes, previous: str, record: bytes) -> str:
    return hmac.new(key, previous.encode() + b"\n" + record, hashlib.sha256).hexdigest()


def checkpoint_message(core: bytes) -> bytes:
    """What a checkpoint's signature covers: its whole canonical core (stream, seq, head,
    covers, final, key ids, timestamp, resource), the signature and chain value excepted."""
    return b"milvus-audit-checkpoint/2\n" + core


def key_id(key: bytes) -> str:
    """A fingerprint of the integrity key that reveals nothing about it."""
    return hmac.new(key, b"milvus-audit key id", hashlib.sha256).hexdigest()[:16]


def signer_id(public_key: Ed25519PublicKey) -> str:
    """A fingerprint of the checkpoint verification key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def hex_key(data: bytes) -> bytes | None:
    """The key written as hex (surrounding whitespace allowed), or None."""
    try:
        return bytes.fromhex(data.strip().decode("ascii")) or None
    except (UnicodeDecodeError, ValueError):
        return None


def read_key_file(path: str | os.PathLike[str]) -> bytes:
    """The integrity (HMAC) key in a file: hex, as `milvus-audit keygen` writes it, or 32 raw bytes.
    A PEM file (a signing or verify key) is refused with what to do instead."""
    data = Path(path).read_bytes()
    if data.lstrip().startswith(b"-----BEGIN"):
        raise ValueError(f"{path}:1: a PEM key, not the integrity key: --key-file takes the hex HMAC key "
                         "(integrity.key); give checkpoint-verify.pem with --public-key")
    key = hex_key(data)
    if key is not None:
        return key
    if len(data) == 32:
        return data
    raise ValueError(f"{path}:1: not an integrity key: expected hex (as `milvus-audit keygen` writes in "
                     "integrity.key) or 32 raw bytes")


def integrity_key(configured: bytes | str | os.PathLike[str] | None) -> bytes | None:
    """The HMAC key: bytes, hex, or the path of a key file (as `signing_key` takes a path), else hex
    from MILVUS_AUDIT_INTEGRITY_KEY; None turns the chain off."""
    if isinstance(configured, bytes):
        return configured
    if isinstance(configured, str):
        key = hex_key(configured.encode("utf-8", "replace"))
        if key is not None:
            return key
    if configured is not None:
        return read_key_file(configured)
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
    the exporters is the order of their sequence numbers. A checkpoint is emitted with
    context None, which the emitter turns into "no trace" (its trace and span ids are "").
    """

    def __init__(self, key: bytes, signing_key: Ed25519PrivateKey | None = None, *,
                 checkpoint_every: int = 1000, checkpoint_interval_s: float = 60.0) -> None:
        self.key = key
        self.key_id = key_id(key)
        self.signing_key = signing_key
        self.signer_id = signer_id(signing_key.public_key()) if signing_key is not None else None
        self.stream = secrets.token_hex(8)
        self.seq = 0
        self.head = GENESIS
        self.checkpoint_every = checkpoint_every
        self.checkpoint_interval_s = checkpoint_interval_s
        self.resource = EMPTY_RESOURCE  # the destination's, as last sealed: checkpoints carry it too
        self._since_checkpoint = 0
        self._last_checkpoint = time.monotonic()
        self._lock = threading.RLock()
        self._emit: Emit | None = None
        self.closed = False

    def _number(self, attributes: dict[str, Any]) -> None:
        self.seq += 1
        attributes[STREAM] = self.stream
        attributes[SEQ] = self.seq
        if self.seq == 1:
            attributes[KEY_ID] = self.key_id

    def _link(self, event_name: str, severity: str, attributes: dict[str, Any], timestamp: str,
              trace_id: str, span_id: str) -> None:
        self.head = link(self.key, self.head, canonical(timestamp, event_name, attributes, severity,
                                                        trace_id, span_id, self.resource))
        attributes[CHAIN] = self.head

    def seal_and_emit(self, event_name: str, severity: str, attributes: dict[str, Any], timestamp_ns: int,
                      emit: Emit, context: Any = None, *, trace_id: str = "", span_id: str = "",
                      resource: bytes = EMPTY_RESOURCE) -> None:
        """Seal one record (its line will carry these trace/span ids and this resource) and emit it."""
        with self._lock:
            if self.closed:  # sealed after the final checkpoint: start a new stream rather than extend a closed one
                self._reopen()
            self._emit = emit
            self.resource = resource
            self._number(attributes)
            self._link(event_name, severity, attributes, rfc3339(timestamp_ns), trace_id, span_id)
            emit(event_name, severity, attributes, timestamp_ns, context)
            self._since_checkpoint += 1
            if self.signing_key is not None and (
                    self._since_checkpoint >= self.checkpoint_every
                    or time.monotonic() - self._last_checkpoint >= self.checkpoint_interval_s):
                self._checkpoint(emit, final=False)

    def _reopen(self) -> None:
        self.stream = secrets.token_hex(8)
        self.seq = 0
        self.head = GENESIS
        self.closed = False
        self._since_checkpoint = 0

    def _checkpoint(self, emit: Emit, *, final: bool) -> None:
        attributes: dict[str, Any] = {HEAD: self.head, FINAL: final, COVERS: self.seq}
        self._number(attributes)
        attributes[KEY_ID] = self.key_id
        timestamp_ns = time.time_ns()
        timestamp = rfc3339(timestamp_ns)
        if self.signing_key is not None:
            attributes[SIGNER] = self.signer_id
            core = canonical(timestamp, CHECKPOINT_EVENT, attributes, CHECKPOINT_SEVERITY, "", "", self.resource)
            attributes[SIGNATURE] = base64.b64encode(self.signing_key.sign(checkpoint_message(core))).decode()
        self._link(CHECKPOINT_EVENT, CHECKPOINT_SEVERITY, attributes, timestamp, "", "")
        emit(CHECKPOINT_EVENT, CHECKPOINT_SEVERITY, attributes, timestamp_ns, None)
        self._since_checkpoint = 0
        self._last_checkpoint = time.monotonic()

    def close(self) -> None:
        """Emit the final checkpoint (signed with a signing key, else authenticated by the
        chain alone): a verifier then knows the stream ended here."""
        with self._lock:
            if self.closed or self._emit is None:
                return
            self._checkpoint(self._emit, final=True)
            self.closed = True


class Sequence:
    """Stream and seq without a key (no chain): what makes spooled records' duplicates
    recognisable after a restart. `next()` on a counter is atomic, so no lock."""

    def __init__(self) -> None:
        self.stream = secrets.token_hex(8)
        self._counter = itertools.count(1)

    def number(self, attributes: dict[str, Any]) -> None:
        attributes[STREAM] = self.stream
        attributes[SEQ] = next(self._counter)


_CHAINS: dict[tuple[bytes, bytes | None, object], Chain] = {}
_SEQUENCES: dict[object, Sequence] = {}
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


def sequence_for(destination: object) -> Sequence:
    """The keyless stream for this destination (created on first use)."""
    with _CHAINS_LOCK:
        sequence = _SEQUENCES.get(destination)
        if sequence is None:
            sequence = _SEQUENCES[destination] = Sequence()
        return sequence


def close_streams() -> None:
    """Emit final checkpoints for every open stream (`AuditPipeline.shutdown()` calls this)."""
    with _CHAINS_LOCK:
        chains = list(_CHAINS.values())
    for chain in chains:
        chain.close()


LIFECYCLE.register(Stage.SEAL, lambda _seconds_left: close_streams())
