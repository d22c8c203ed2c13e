"""Gates: checks the call path runs before a call reaches Milvus, each able to refuse it.

A gate answers `refusal(operation, connection_attributes)` with the exception to raise
(which the call path audits as a refused call) or None. Gates are built by `wiring`
from the configuration and handed to the call path; the core knows no spool and no
playbook, only this interface.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from milvus_audit.exceptions import AccessBlocked, AuditUnavailable
from milvus_audit.runtime.context import current_enduser
from milvus_audit.semconv import ENDUSER_ID, USER_NAME

SCOPES = ("enduser", "user", "client")
_SCOPE_ATTRIBUTE = {"enduser": ENDUSER_ID, "user": USER_NAME}
CLIENT_KEY = "*"


class Gate(Protocol):
    """Decides, before a call is sent, whether it may be."""

    def refusal(self, operation: str, connection: Mapping[str, Any]) -> BaseException | None:
        """The exception refusing this call, or None to let it through."""


class Durable(Protocol):
    def healthy(self) -> bool: ...


class DurabilityGate:
    """Fail-closed mode: refuse a call whose record could not be kept durably."""

    def __init__(self, spools: Callable[[], Sequence[Durable]], on_refusal: Callable[[str], None]) -> None:
        self._spools = spools
        self._on_refusal = on_refusal

    def refusal(self, operation: str, connection: Mapping[str, Any]) -> BaseException | None:
        spools = self._spools()
        if spools and all(spool.healthy() for spool in spools):
            return None
        self._on_refusal(operation)
        why = "no durable spool is configured" if not spools else "the audit spool cannot take records"
        return AuditUnavailable(f"milvus-audit fail-closed: {why}; {operation} was not sent")


@dataclass(frozen=True)
class BlockEntry:
    scope: str
    principal: str
    until: float
    rule: str
    alert_id: str
    id: str = field(default_factory=lambda: secrets.token_hex(8), compare=False)  # names it in a fleet-wide lift


class BlockListener(Protocol):
    """Told of each block placed or lifted here (shared state announces them to the fleet)."""

    def blocked(self, entry: BlockEntry) -> None: ...

    def lifted(self, entry: BlockEntry) -> None: ...


class BlockList:
    """Blocks shared by every client of one `AuditConfig`; list and lift them from Python.

    With shared state (`AuditConfig(shared_state=...)`) `listener` announces what is placed
    or lifted here to every process of the fleet, and `apply`/`remove` take in theirs."""

    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        self._clock = clock or time.time
        self._entries: dict[tuple[str, str], BlockEntry] = {}
        self._lock = threading.Lock()
        self.listener: BlockListener | None = None

    def __bool__(self) -> bool:
        return bool(self._entries)

    def now(self) -> float:
        return self._clock()

    def block(self, scope: str, principal: str, ttl_s: float, rule: str = "", alert_id: str = "") -> BlockEntry:
        if scope not in SCOPES:
            raise ValueError(f"block scope must be one of {SCOPES}, not {scope!r}")
        entry = BlockEntry(scope, principal, self._clock() + ttl_s, rule, alert_id)
        with self._lock:
            self._entries[(scope, principal)] = entry
        if self.listener is not None:
            self.listener.blocked(entry)
        return entry

    def lift(self, scope: str, principal: str) -> bool:
        with self._lock:
            entry = self._entries.pop((scope, principal), None)
        if entry is not None and self.listener is not None:
            self.listener.lifted(entry)
        return entry is not None

    def get(self, scope: str, principal: str) -> BlockEntry | None:
        return self._entries.get((scope, principal))

    def apply(self, entry: BlockEntry) -> bool:
        """Take in a block placed elsewhere in the fleet (not announced again); False if known."""
        with self._lock:
            known = self._entries.get((entry.scope, entry.principal))
            if known is not None and known.id == entry.id:
                return False
            self._entries[(entry.scope, entry.principal)] = entry
        return True

    def remove(self, scope: str, principal: str, entry_id: str) -> bool:
        """Take in a lift from elsewhere in the fleet: only of the block it names."""
        with self._lock:
            known = self._entries.get((scope, principal))
            if known is None or known.id != entry_id:
                return False
            del self._entries[(scope, principal)]
        return True

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

    def refusal(self, operation: str, connection: Mapping[str, Any]) -> BaseException | None:
        if not self._entries:
            return None
        enduser = current_enduser()
        entry = self.blocking({**connection, **enduser} if enduser else connection)
        if entry is None:
            return None
        return AccessBlocked(
            f"milvus-audit blocked {entry.scope} {entry.principal!r} until {entry.until:.0f} "
            f"(rule {entry.rule}, alert {entry.alert_id})",
            scope=entry.scope, principal=entry.principal, until=entry.until)


def principal_for(scope: str, attributes: Mapping[str, Any]) -> str | None:
    """Which principal of an alert a block of this scope applies to."""
    if scope == "client":
        return CLIENT_KEY
    value = attributes.get(_SCOPE_ATTRIBUTE[scope])
    return str(value) if value else None
