"""Work that follows a call but need not delay it, and the ordered shutdown of all such work.

Lifecycle. Everything that runs behind the calls registers a drain step with `LIFECYCLE`
at one of its stages, and `LIFECYCLE.drain()` (what `AuditPipeline.shutdown()` runs
before it shuts the exporters down) runs the stages in order:

1. `Stage.CALLS`: the calls' deferred work (histograms, detection, and so alerts and
   the playbooks they trigger);
2. `Stage.RESPONSES`: deliveries in flight (webhooks, revocations), up to a bound;
3. `Stage.SEAL`: the final checkpoint of each integrity chain;
4. then the caller flushes and shuts down the exporters.

So a `milvus.response` record is never sealed after a chain's final checkpoint, nor lost
at a clean shutdown. Our own threads run under OpenTelemetry's suppress-instrumentation
context (`background_thread`): what they export or post is never instrumented by anyone.

The background worker:

The audit record and the span are handed to the SDK on the calling thread, so a provider's
`force_flush()` always covers them. What only reads them runs here, on one daemon thread
per process, in submission order:

- histogram measurements: the SDK spends about 5 µs on each (it cleans and hashes the
  attributes and aggregates under a lock), and histograms are read only as periodic
  aggregates, so a measurement recorded milliseconds later is indistinguishable;
- detection: the rules' state is updated by one thread, so rules need no locks and the
  application's threads never contend on them. Alerts, and the blocks playbooks place,
  follow the event by tens of milliseconds.

When the queue is full the submitting thread runs its oldest calls, a few at a time
(back-pressure: nothing is dropped, memory stays bounded).
`flush()` runs everything pending; it runs at exit and when an `AuditPipeline` is
flushed or shut down. An application that flushes its own providers, or a test that
reads alerts, calls `milvus_audit.flush()` first.
"""

from __future__ import annotations

import atexit
import enum
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

from opentelemetry.instrumentation.utils import suppress_instrumentation

from milvus_audit.runtime.diagnostics import INTERNAL_ERRORS

_CHUNK = 64  # calls run per hold of the drain lock


class Background:
    """A FIFO of calls run by one daemon thread, woken once per batch rather than per call."""

    def __init__(self, batch_delay_s: float = 0.02, max_pending: int = 10_000) -> None:
        self.batch_delay_s = batch_delay_s
        self.max_pending = max_pending
        self._queue: deque[tuple[Callable[..., object], tuple[Any, ...]]] = deque()
        self._wake = threading.Event()
        self._idle = False
        self._running = threading.RLock()  # one drainer at a time keeps the order; re-entrant for flush()
        self._start_lock = threading.Lock()
        self._started = False  # in this process (a forked child starts its own)
        self._exit_hook = False

    def submit(self, function: Callable[..., object], *args: Any) -> None:
        """Run `function(*args)` soon; its arguments must not change afterwards."""
        if not self._started:
            self._start()
        if len(self._queue) >= self.max_pending:
            self.flush(_CHUNK)  # the worker is behind: help it, a chunk at a time
        self._queue.append((function, args))
        if self._idle:
            self._idle = False
            self._wake.set()

    def flush(self, limit: int | None = None) -> None:
        """Run what is pending (at most `limit` calls), oldest first, on this thread. Without a
        limit, also what those calls queue in turn (an alert's playbook calling Milvus), but
        not, forever, what other threads keep queueing."""
        queue = self._queue
        if limit is None:
            for _ in range(100):
                if not queue:
                    return
                self.flush(len(queue))
            return
        done = 0
        while queue and done < limit:
            with self._running:  # a chunk at a time: one drainer at once keeps the order
                for _ in range(min(_CHUNK, limit - done)):
                    if not queue:
                        break
                    function, args = queue.popleft()
                    done += 1
                    try:
                        function(*args)
                    except Exception as exc:  # never reaches the application, nor stops the worker
                        INTERNAL_ERRORS.report(f"background {getattr(function, '__qualname__', function)}", exc)

    def _start(self) -> None:
        with self._start_lock:
            if not self._started:
                self._started = True
                background_thread(self._run, "milvus-audit-background").start()
            if not self._exit_hook:
                LIFECYCLE.arm_at_exit()  # now, after the providers exist: the drain runs before they shut down
                self._exit_hook = True

    def _run(self) -> None:
        while True:
            time.sleep(self.batch_delay_s)  # let a batch gather: a wake-up per batch, not per call
            self.flush()
            self._idle = True
            if not self._queue:  # nothing arrived since the drain: sleep until something does
                self._wake.wait(1.0)
                self._wake.clear()
            self._idle = False

    def _forget_parent(self) -> None:
        """In a forked child: the parent's pending work is the parent's."""
        self._queue.clear()
        self._wake = threading.Event()
        self._idle = False
        self._running = threading.RLock()
        self._start_lock = threading.Lock()
        self._started = False


def background_thread(target: Callable[[], object], name: str) -> threading.Thread:
    """A daemon thread running `target` with instrumentation suppressed (our exports and
    deliveries are never traced or audited by other instrumentations)."""
    def run() -> None:
        with suppress_instrumentation():
            target()
    return threading.Thread(target=run, name=name, daemon=True)


class Stage(enum.IntEnum):
    """The order of shutdown (see the module docstring)."""

    CALLS = 1
    RESPONSES = 2
    SEAL = 3


Step = Callable[[float], object]  # drain, given the seconds left; returns when done or out of time


class Lifecycle:
    """Drain steps by stage; each is held weakly when it is a bound method, so registering
    never keeps a configuration's workers alive."""

    def __init__(self) -> None:
        self._steps: list[tuple[Stage, Callable[[], Step | None]]] = []
        self._lock = threading.Lock()

    def register(self, stage: Stage, step: Step) -> None:
        ref: Callable[[], Step | None]
        if hasattr(step, "__self__"):
            ref = weakref.WeakMethod(step)  # type: ignore[arg-type]
        else:
            ref = lambda: step  # noqa: E731
        with self._lock:
            self._steps.append((stage, ref))
            self._steps.sort(key=lambda item: item[0])

    def arm_at_exit(self) -> None:
        """Drain at interpreter exit, before the exit hooks registered so far (atexit runs
        in reverse order): called when something is started after the providers exist."""
        atexit.unregister(self._at_exit)
        atexit.register(self._at_exit)

    def _at_exit(self) -> None:
        self.drain()

    def drain(self, until: Stage = Stage.SEAL, timeout_s: float = 10.0) -> None:
        """Run every step of every stage up to `until`, in stage order, within `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        for stage in Stage:
            if stage > until:
                break
            self.drain_stage(stage, deadline)

    def drain_stage(self, stage: Stage, deadline: float) -> None:
        with self._lock:
            steps = [ref for s, ref in self._steps if s is stage]
            self._steps = [(s, ref) for s, ref in self._steps if ref() is not None]
        for ref in steps:
            step = ref()
            if step is None:
                continue
            try:
                step(max(0.0, deadline - time.monotonic()))
            except Exception as exc:  # a step's failure must not stop the later stages
                INTERNAL_ERRORS.report(f"shutdown stage {stage.name}", exc)


BACKGROUND = Background()
os.register_at_fork(after_in_child=BACKGROUND._forget_parent)
LIFECYCLE = Lifecycle()
LIFECYCLE.register(Stage.CALLS, lambda _seconds_left: BACKGROUND.flush())


def flush() -> None:
    """Run everything milvus-audit has queued: histogram measurements, detection, alerts."""
    BACKGROUND.flush()
