"""Webhook delivery off the call path: a bounded queue, a worker thread, retries with backoff.

With a secret, each request carries `X-Milvus-Audit-Timestamp` (unix seconds) and
`X-Milvus-Audit-Signature: sha256=<hex>`, the HMAC-SHA256 of `"{timestamp}.{body}"`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import queue
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from milvus_audit.runtime.worker import LIFECYCLE, Stage, background_thread

Job = Callable[[], object]


def sign(secret: str | bytes, timestamp: int, body: bytes) -> str:
    key = secret.encode() if isinstance(secret, str) else secret
    return "sha256=" + hmac.new(key, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def verify(secret: str | bytes, timestamp: str, body: bytes, signature: str, *, tolerance_s: float = 300,
           now: float | None = None) -> bool:
    """Receiver-side check: the signature matches and the timestamp is fresh (rejects replays)."""
    try:
        sent = int(timestamp)
    except ValueError:
        return False
    if abs((now if now is not None else time.time()) - sent) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, sent, body), signature)


class DeliveryWorker:
    """Runs deliveries in one daemon thread; `submit` never blocks the caller.

    Its drain is the shutdown stage `RESPONSES`: deliveries in flight get up to the
    remaining shutdown bound (`AuditPipeline.shutdown(timeout_s=...)`, 10 s by default);
    what is still queued then is abandoned, and each abandoned job says so (its
    `abandon` callback records `outcome=abandoned`).
    """

    def __init__(self, max_queue: int = 1000, name: str = "milvus-audit-response",
                 drop_report_interval_s: float = 1.0) -> None:
        self._queue: queue.Queue[tuple[Job, Job | None]] = queue.Queue(max_queue)
        self.dropped = 0
        self._unreported_drops = 0
        self._last_drop_report = 0.0
        self._drop_report_interval_s = drop_report_interval_s
        self._name = name
        self._inflight: Job | None = None  # the abandon callback of the job running now
        self.closed = False  # set once shutdown abandoned what was left: later outcomes are not recorded
        self._pid = 0  # the thread is started on first use, in each process (fork-safe)
        self._start_lock = threading.Lock()
        LIFECYCLE.register(Stage.RESPONSES, self.drain)

    def submit(self, job: Job, abandon: Job | None = None) -> bool:
        """Queue `job`; `abandon` is called instead if shutdown comes before it runs."""
        if self._pid != os.getpid():
            self._start()
        try:
            self._queue.put_nowait((job, abandon))
            return True
        except queue.Full:
            self.dropped += 1
            self._unreported_drops += 1
            return False

    def drops_to_report(self) -> int:
        """Drops since the last report, at most once per interval (0 otherwise): a flood of
        alerts against a dead endpoint costs one record a second, not one per alert."""
        now = time.monotonic()
        if not self._unreported_drops or now - self._last_drop_report < self._drop_report_interval_s:
            return 0
        drops, self._unreported_drops, self._last_drop_report = self._unreported_drops, 0, now
        return drops

    def join(self, timeout_s: float = 10.0) -> bool:
        """Wait until every alert raised so far is delivered (for tests and operators)."""
        deadline = time.monotonic() + timeout_s
        LIFECYCLE.drain_stage(Stage.CALLS, deadline)  # alerts still being detected queue deliveries first
        return self._wait(deadline)

    def drain(self, seconds_left: float) -> None:
        """The shutdown step: wait for deliveries up to the bound, then abandon the rest."""
        if self._wait(time.monotonic() + seconds_left):
            return
        self.closed = True
        inflight, self._inflight = self._inflight, None
        if inflight is not None:  # its outcome would come after the final checkpoint: say it now
            inflight()
        while True:
            try:
                _, abandon = self._queue.get_nowait()
            except queue.Empty:
                return
            try:
                if abandon is not None:
                    abandon()
            finally:
                self._queue.task_done()

    def _wait(self, deadline: float) -> bool:
        while self._queue.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def _start(self) -> None:
        with self._start_lock:
            if self._pid != os.getpid():
                if self._pid:  # a forked child: the parent's queue is the parent's
                    self._queue = queue.Queue(self._queue.maxsize)
                self._pid = os.getpid()
                background_thread(self._run, self._name).start()

    def _run(self) -> None:
        while True:
            job, abandon = self._queue.get()
            self._inflight = abandon
            try:
                job()
            except Exception:  # a job reports its own outcome; nothing may kill the worker
                pass
            finally:
                self._inflight = None
                self._queue.task_done()


def post_json(url: str, payload: dict[str, Any], *, secret: str | bytes | None, timeout_s: float,
              retries: int, backoff_s: float, clock: Callable[[], float] = time.time) -> tuple[bool, str, int]:
    """POST with retries and exponential backoff; return (ok, error, attempts)."""
    body = json.dumps(payload, separators=(",", ":"), default=str).encode()
    error = ""
    for attempt in range(1, retries + 2):
        headers = {"Content-Type": "application/json", "User-Agent": "milvus-audit"}
        if secret is not None:
            timestamp = int(clock())
            headers["X-Milvus-Audit-Timestamp"] = str(timestamp)
            headers["X-Milvus-Audit-Signature"] = sign(secret, timestamp, body)
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                if 200 <= response.status < 300:
                    return True, "", attempt
                error = f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            error = f"HTTP {exc.code}"
            if 400 <= exc.code < 500 and exc.code != 429:
                return False, error, attempt  # the receiver refused it: retrying will not help
        except (OSError, urllib.error.URLError) as exc:
            error = type(exc).__name__
        if attempt <= retries:
            time.sleep(backoff_s * (2 ** (attempt - 1)))
    return False, error, retries + 1
