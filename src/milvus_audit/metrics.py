"""Histogram measurements recorded off the calling thread.

The SDK spends about 5 µs on each histogram measurement (it cleans and hashes the
attributes and aggregates under a lock), so the two per call would cost the application's
thread more than the span and half as much as the log record. Histograms are only read
as aggregates, periodically, so a measurement recorded a few milliseconds later is
indistinguishable: the calling thread appends one tuple to a queue and one daemon thread
per process records the queue every 50 ms. A full queue is recorded on the calling thread
(back-pressure, nothing dropped). `flush()` records everything pending; it runs at exit
and when an `AuditPipeline` is flushed or shut down, and an application that flushes its
own meter provider calls `milvus_audit.flush()` first.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

Measurement = tuple[Callable[[float, dict[str, Any]], None], float, dict[str, Any]]


class DeferredMetrics:
    """A queue of (record, value, attributes) drained by one background thread."""

    def __init__(self, interval_s: float = 0.05, max_pending: int = 100_000) -> None:
        self.interval_s = interval_s
        self.max_pending = max_pending
        self.errors = 0
        self._pending: deque[Measurement] = deque()
        self._lock = threading.Lock()
        self._pid = 0  # the process whose worker is running; 0: none yet
        self._exit_hook = False

    def record(self, record: Callable[[float, dict[str, Any]], None], value: float,
               attributes: dict[str, Any]) -> None:
        """Queue one measurement; `attributes` must not change afterwards."""
        if self._pid != os.getpid():
            self._start()
        if len(self._pending) >= self.max_pending:
            self.flush()
        self._pending.append((record, value, attributes))

    def flush(self) -> None:
        """Record every pending measurement now, on this thread."""
        pending = self._pending
        while pending:
            try:
                record, value, attributes = pending.popleft()
            except IndexError:  # drained concurrently by the worker
                return
            try:
                record(value, attributes)
            except Exception:  # a broken meter provider never reaches the application
                self.errors += 1

    def _start(self) -> None:
        with self._lock:
            if self._pid != os.getpid():
                self._pid = os.getpid()
                threading.Thread(target=self._run, name="milvus-audit-metrics", daemon=True).start()
            if not self._exit_hook:
                # Registered now, after the meter provider exists, so that it runs before the
                # provider's own exit hook shuts the provider down (atexit runs in reverse).
                atexit.register(self.flush)
                self._exit_hook = True

    def _run(self) -> None:
        while True:
            time.sleep(self.interval_s)
            self.flush()

    def _forget_parent(self) -> None:
        """In a forked child: the parent's pending measurements are the parent's to record."""
        self._lock = threading.Lock()
        self._pending.clear()
        self._pid = 0


DEFERRED = DeferredMetrics()
os.register_at_fork(after_in_child=DEFERRED._forget_parent)


def flush() -> None:
    """Record every measurement milvus-audit has queued (call before reading metrics)."""
    DEFERRED.flush()
