"""Client-side containment: principals the audited clients refuse to serve for a while."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

SCOPES = ("enduser", "user", "client")
_SCOPE_ATTRIBUTE = {"enduser": "enduser.id", "user": "user.name"}
CLIENT_KEY = "*"


@dataclass(frozen=True)
class BlockEntry:
    scope: str
    principal: str
    until: float
    rule: str
    alert_id: str


class BlockList:
    """Blocks shared by every client of one `AuditConfig`; list and lift them from Python."""

    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        self._clock = clock or time.time
        self._entries: dict[tuple[str, str], BlockEntry] = {}
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self._entries)

    def block(self, scope: str, principal: str, ttl_s: float, rule: str = "", alert_id: str = "") -> BlockEntry:
        if scope not in SCOPES:
            raise ValueError(f"block scope must be one of {SCOPES}, not {scope!r}")
        entry = BlockEntry(scope, principal, self._clock() + ttl_s, rule, alert_id)
        with self._lock:
            self._entries[(scope, principal)] = entry
        return entry

    def lift(self, scope: str, principal: str) -> bool:
        with self._lock:
            return self._entries.pop((scope, principal), None) is not None

    def list(self) -> list[BlockEntry]:
        now = self._clock()
        with self._lock:
            return [entry for entry in self._entries.values() if entry.until > now]

    def blocking(self, attributes: Mapping[str, Any]) -> BlockEntry | None:
        """The block that applies to a call with these attributes, if any (expired ones are dropped)."""
        now = self._clock()
        for scope in SCOPES:
            key = (scope, CLIENT_KEY if scope == "client" else str(attributes.get(_SCOPE_ATTRIBUTE[scope], "")))
            entry = self._entries.get(key)
            if entry is None:
                continue
            if entry.until > now:
                return entry
            with self._lock:
                self._entries.pop(key, None)
        return None


def principal_for(scope: str, attributes: Mapping[str, Any]) -> str | None:
    """Which principal of an alert a block of this scope applies to."""
    if scope == "client":
        return CLIENT_KEY
    value = attributes.get(_SCOPE_ATTRIBUTE[scope])
    return str(value) if value else None
