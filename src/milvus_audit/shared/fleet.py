"""The local side of the shared detection state: what the rules ask, answered from memory.

The observing thread (the background worker, or the calling thread when a playbook can
block) never waits on Redis. It adds its events to *pending* deltas and reads the fleet's
counts *as last synced*; the sync thread (`state.py`) sends the deltas, at least every
100 ms, in one pipelined round trip, reads the fleet's sums back, and asks the rules to
decide again (`recheck`) on the new fleet count plus their local delta.

Three kinds of shared state, keyed by rule and principal:

- counters: a sum per slot of time (`count`): the sliding windows (12 slots of `window_s`)
  and error_spike's tumbling window (1 slot);
- maps: member -> last time seen (`remember`, `lookup`): password_spray's user names per
  client, privilege_escalation's created users;
- claims: an alert waits for its fleet-wide cooldown (`claim`): one alert per incident.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Recheck = Callable[[list[Any]], None]  # decide again after a sync; append alerts to the list
Key = tuple[str, str]  # (rule id, principal or key)

MAX_KEYS = 20_000  # keys tracked per kind; beyond, the least recent are forgotten (counted)


@dataclass
class CounterDelta:
    window_s: float
    buckets: int
    slots: dict[int, float] = field(default_factory=dict)
    recheck: Recheck | None = None


@dataclass
class MapDelta:
    window_s: float
    members: dict[str, float] = field(default_factory=dict)
    recheck: Recheck | None = None


@dataclass
class Claim:
    alert: Any
    key: str  # rule id and cooldown key
    cooldown_s: float


@dataclass
class Batch:
    counters: dict[Key, CounterDelta]
    maps: dict[Key, MapDelta]
    watches: dict[Key, tuple[float, Recheck | None]]
    claims: list[Claim]

    def __bool__(self) -> bool:
        return bool(self.counters or self.maps or self.watches or self.claims)


class Fleet:
    """What detection sees of the fleet; one per `AuditConfig` with shared state."""

    def __init__(self, wake: Callable[[], None]) -> None:
        self.up = False  # set by the sync thread: claims wait for Redis only while it answers
        self._wake = wake
        self._lock = threading.Lock()
        self._counters: dict[Key, CounterDelta] = {}
        self._maps: dict[Key, MapDelta] = {}
        self._watches: dict[Key, tuple[float, Recheck | None]] = {}
        self._claims: list[Claim] = []
        # as last synced: other processes' sums per slot, members per map, processes per key
        self.others: dict[Key, dict[int, float]] = {}
        self.mine: dict[Key, dict[int, float]] = {}
        self.maps: dict[Key, dict[str, float]] = {}
        self.processes: dict[Key, int] = {}
        self.forgotten = 0

    # -- the observing thread ---------------------------------------------------------
    def count(self, rule_id: str, key: str, now: float, value: float, window_s: float, buckets: int = 12,
              recheck: Recheck | None = None) -> float:
        """Add `value` at `now`; return the other processes' sum over the window, as last synced."""
        slot = int(now // (window_s / buckets))
        ident = (rule_id, key)
        with self._lock:
            delta = self._counters.get(ident)
            if delta is None:
                delta = self._counters[ident] = CounterDelta(window_s, buckets)
            delta.slots[slot] = delta.slots.get(slot, 0.0) + value
            delta.recheck = recheck
        return self.others_sum(ident, slot, buckets)

    def others_sum(self, ident: Key, slot: int, buckets: int) -> float:
        others = self.others.get(ident)
        if not others:
            return 0.0
        oldest = slot - buckets
        return sum(value for at, value in others.items() if oldest < at <= slot)

    def remember(self, rule_id: str, key: str, member: str, now: float, window_s: float,
                 recheck: Recheck | None = None) -> dict[str, float]:
        """Note `member` in a map; return the map as last synced (other processes' members)."""
        ident = (rule_id, key)
        with self._lock:
            delta = self._maps.get(ident)
            if delta is None:
                delta = self._maps[ident] = MapDelta(window_s)
            delta.members[member] = now
            delta.recheck = recheck
        return self.maps.get(ident, {})

    def lookup(self, rule_id: str, key: str, member: str, window_s: float,
               recheck: Recheck | None = None) -> float | None:
        """When `member` was last noted in the fleet's map, as last synced; the map is read at
        the next sync and `recheck` runs then."""
        ident = (rule_id, key)
        with self._lock:
            self._watches[ident] = (window_s, recheck)
        return self.maps.get(ident, {}).get(member)

    def claim(self, alert: Any, rule_id: str, cooldown_key: str, cooldown_s: float) -> bool:
        """Queue `alert` for its fleet-wide cooldown (True), or False: publish it now (Redis is
        down, or the rule has no cooldown)."""
        if not self.up or cooldown_s <= 0:
            return False
        with self._lock:
            self._claims.append(Claim(alert, f"{rule_id}:{cooldown_key}", cooldown_s))
        self._wake()
        return True

    # -- the sync thread -------------------------------------------------------------
    def take(self) -> Batch:
        with self._lock:
            batch = Batch(self._counters, self._maps, self._watches, self._claims)
            self._counters, self._maps, self._watches, self._claims = {}, {}, {}, []
        return batch

    def give_back(self, batch: Batch) -> None:
        """A sync failed: its deltas are merged into what accumulated meanwhile (claims are not:
        the caller publishes them locally)."""
        with self._lock:
            for ident, old in batch.counters.items():
                new = self._counters.get(ident)
                if new is None:
                    self._counters[ident] = old
                else:
                    for slot, value in old.slots.items():
                        new.slots[slot] = new.slots.get(slot, 0.0) + value
            for ident, old_map in batch.maps.items():
                new_map = self._maps.get(ident)
                if new_map is None:
                    self._maps[ident] = old_map
                else:
                    for member, at in old_map.members.items():
                        new_map.members[member] = max(at, new_map.members.get(member, at))
            for ident, watch in batch.watches.items():
                self._watches.setdefault(ident, watch)

    def add_back(self, ident: Key, window_s: float, buckets: int, slots: dict[int, float],
                 recheck: Recheck | None) -> None:
        """Counts a restarted Redis lost: sent again with the next round."""
        with self._lock:
            delta = self._counters.get(ident)
            if delta is None:
                delta = self._counters[ident] = CounterDelta(window_s, buckets, recheck=recheck)
            for slot, value in slots.items():
                delta.slots[slot] = delta.slots.get(slot, 0.0) + value

    def pending(self) -> bool:
        return bool(self._counters or self._maps or self._watches or self._claims)

    def drop_expired(self, now: float) -> None:
        """Forget keys whose windows ended (bounded memory); called now and then by the sync thread."""
        for store in (self.others, self.mine):
            for ident, slots in list(store.items()):
                if not slots:
                    store.pop(ident, None)
        while len(self.others) > MAX_KEYS:
            self.others.pop(next(iter(self.others)))
            self.forgotten += 1
        while len(self.mine) > MAX_KEYS:
            self.mine.pop(next(iter(self.mine)))
        while len(self.maps) > MAX_KEYS:
            self.maps.pop(next(iter(self.maps)))
            self.forgotten += 1
        while len(self.processes) > MAX_KEYS:
            self.processes.pop(next(iter(self.processes)))
