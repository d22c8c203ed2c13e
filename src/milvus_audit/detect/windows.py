"""Bounded, O(1) state for windowed rules.

`Window` sums values over a sliding time window with a fixed ring of buckets, so an
update costs the same however busy the principal is. `BoundedMap` caps how many
principals are tracked: the least recently seen is evicted, and evictions are counted,
so an attacker spraying random user names cannot grow memory without limit.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

V = TypeVar("V")


class Window:
    """Sum of values over the last `span_s` seconds, in `buckets` slices."""

    __slots__ = ("_bucket_s", "_counts", "_ends", "_total")

    def __init__(self, span_s: float, buckets: int = 12) -> None:
        self._bucket_s = span_s / buckets
        self._counts = [0.0] * buckets
        self._ends = [0] * buckets
        self._total = 0.0

    def add(self, now: float, value: float = 1.0) -> float:
        """Add `value` at time `now`; return the window's sum."""
        slot_number = int(now // self._bucket_s)
        size = len(self._counts)
        index = slot_number % size
        if self._ends[index] != slot_number:
            self._expire(slot_number)
            self._ends[index] = slot_number
            self._counts[index] = 0.0
        self._counts[index] += value
        self._total = sum(c for c, end in zip(self._counts, self._ends, strict=True)
                          if slot_number - end < size)
        return self._total

    def _expire(self, slot_number: int) -> None:
        size = len(self._counts)
        for i, end in enumerate(self._ends):
            if slot_number - end >= size:
                self._counts[i] = 0.0

    def reset(self) -> None:
        self._counts = [0.0] * len(self._counts)


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
