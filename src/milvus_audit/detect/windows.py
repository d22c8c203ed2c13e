"""Bounded, O(1) state for windowed rules.

`Window` sums values over a sliding time window with a fixed ring of buckets, so an
update costs the same however busy the principal is. `BoundedMap` caps how many
principals are tracked: the least recently seen is evicted, and evictions are counted,
so an attacker spraying random user names cannot grow memory without limit. `Counted`
is a window that also remembers its latest contributing events; `Baseline` is an EWMA
mean and variance (learned baselines).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

V = TypeVar("V")


class Window:
    """Sum of values over the last `span_s` seconds, in `buckets` slices.

    Time is expected to move forward; an out-of-order value counts in the current slice.
    """

    __slots__ = ("_bucket_s", "_counts", "_last", "_total")

    def __init__(self, span_s: float, buckets: int = 12) -> None:
        self._bucket_s = span_s / buckets
        self._counts = [0.0] * buckets
        self._last = -1
        self._total = 0.0

    def add(self, now: float, value: float = 1.0) -> float:
        """Add `value` at time `now`; return the window's sum."""
        slot = int(now // self._bucket_s)
        counts = self._counts
        size = len(counts)
        if slot > self._last:
            if self._last < 0 or slot - self._last >= size:
                counts[:] = [0.0] * size
                self._total = 0.0
            else:
                for expired in range(self._last + 1, slot + 1):
                    index = expired % size
                    self._total -= counts[index]
                    counts[index] = 0.0
            self._last = slot
        counts[self._last % size] += value
        self._total += value
        return self._total


class BoundedMap(Generic[V]):
    """A least-recently-used map with a hard cap; counts what it evicts."""

    def __init__(self, cap: int, factory: Callable[[], V]) -> None:
        self.cap = cap
        self.evictions = 0
        self._factory = factory
        self._items: OrderedDict[str, V] = OrderedDict()

    def get(self, key: str) -> V:
        item = self._items.get(key)
        if item is None:
            item = self._factory()
            self._items[key] = item
            if len(self._items) > self.cap:
                self._items.popitem(last=False)
                self.evictions += 1
        else:
            self._items.move_to_end(key)
        return item

    def set(self, key: str, value: V) -> None:
        self.get(key)
        self._items[key] = value

    def peek(self, key: str) -> V | None:
        return self._items.get(key)

    def __len__(self) -> int:
        return len(self._items)

    def items(self) -> list[tuple[str, V]]:
        return list(self._items.items())


MAX_CONTRIBUTING = 10


class Counted:
    """A sliding-window sum plus the ids of its latest contributing events."""

    __slots__ = ("_recent", "span_s", "window")

    def __init__(self, window_s: float) -> None:
        self.window = Window(window_s)
        self.span_s = window_s
        self._recent: list[tuple[float, str]] = []

    def add(self, now: float, event_id: str, value: float = 1.0) -> float:
        self._recent.append((now, event_id))
        if len(self._recent) > MAX_CONTRIBUTING:
            del self._recent[0]
        return self.window.add(now, value)

    def events(self, now: float) -> list[str]:
        """Up to ten contributing event ids still inside the window."""
        return [event for at, event in self._recent if now - at < self.span_s]


class Baseline:
    """EWMA mean and variance: O(1) learned baselines."""

    __slots__ = ("alpha", "mean", "samples", "var")

    def __init__(self, alpha: float = 0.1) -> None:
        self.alpha = alpha
        self.mean = 0.0
        self.var = 0.0
        self.samples = 0

    def update(self, value: float) -> None:
        self.samples += 1
        if self.samples == 1:
            self.mean = value
            return
        delta = value - self.mean
        self.mean += self.alpha * delta
        self.var = (1 - self.alpha) * (self.var + self.alpha * delta * delta)

    def p99(self) -> float:
        return self.mean + 2.33 * math.sqrt(self.var)
