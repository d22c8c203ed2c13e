"""Signed block entries: what a process writes to Redis and announces over pub/sub.

An entry is a JSON object; `sig` is the HMAC-SHA256, under the block key, of the deployment
prefix and the object's canonical form without `sig`. The prefix is signed so an entry of
one deployment cannot be replayed into another. A lift names the id of the block it lifts,
so an old signed lift cannot lift a newer block.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from dataclasses import dataclass
from typing import Any

VERSION = 1
BLOCK, LIFT = "block", "lift"
MAX_ENTRY_BYTES = 2048


@dataclass(frozen=True)
class SignedEntry:
    kind: str  # BLOCK or LIFT
    scope: str
    principal: str
    until: float
    rule: str
    alert_id: str
    id: str

    @property
    def field(self) -> str:
        return field_of(self.scope, self.principal)


def field_of(scope: str, principal: str) -> str:
    return f"{scope}:{principal}"


def _canonical(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _mac(key: bytes, prefix: str, body: dict[str, Any]) -> str:
    return hmac.new(key, prefix.encode() + b"\n" + _canonical(body), hashlib.sha256).hexdigest()


def encode(entry: SignedEntry, key: bytes, prefix: str) -> str:
    body = {"v": VERSION, "kind": entry.kind, "scope": entry.scope, "principal": entry.principal,
            "until": entry.until, "rule": entry.rule, "alert": entry.alert_id, "id": entry.id}
    return json.dumps({**body, "sig": _mac(key, prefix, body)}, sort_keys=True, separators=(",", ":"))


class Rejected(ValueError):
    """An entry that is not ours: `reason` says why, `target` what it claimed (for the record)."""

    def __init__(self, reason: str, target: str = "", kind: str = BLOCK) -> None:
        super().__init__(reason)
        self.reason, self.target, self.kind = reason, target, kind


def decode(raw: str | bytes, key: bytes, prefix: str) -> SignedEntry:
    """The entry, if signed with `key` for `prefix`; else `Rejected`."""
    if isinstance(raw, bytes):
        if len(raw) > MAX_ENTRY_BYTES:
            raise Rejected("oversized entry")
        try:
            raw = raw.decode()
        except UnicodeDecodeError:
            raise Rejected("malformed entry") from None
    if len(raw) > MAX_ENTRY_BYTES:
        raise Rejected("oversized entry")
    try:
        data = json.loads(raw)
    except ValueError:
        raise Rejected("malformed entry") from None
    if not isinstance(data, dict):
        raise Rejected("malformed entry")
    kind = LIFT if data.get("kind") == LIFT else BLOCK
    scope, principal = data.get("scope"), data.get("principal")
    target = field_of(str(scope)[:32], str(principal)[:256]) if scope is not None and principal is not None else ""
    signature = data.pop("sig", None)
    if not isinstance(signature, str) or not signature:
        raise Rejected("unsigned entry", target, kind)
    if not hmac.compare_digest(signature, _mac(key, prefix, data)):
        raise Rejected("invalid signature", target, kind)
    until = data.get("until")
    if (data.get("v") != VERSION or not isinstance(scope, str) or not isinstance(principal, str)
            or isinstance(until, bool) or not isinstance(until, (int, float)) or not math.isfinite(until)):
        raise Rejected("malformed entry", target, kind)
    return SignedEntry(kind, scope, principal, float(until), str(data.get("rule", "")),
                       str(data.get("alert", "")), str(data.get("id", "")))
