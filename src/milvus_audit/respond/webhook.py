"""Webhook delivery off the call path: a bounded queue, a worker thread, retries with backoff.

With a secret, each request carries `X-Milvus-Audit-Timestamp` (unix seconds) and
`X-Milvus-Audit-Signature: sha256=<hex>`, the HMAC-SHA256 of `"{timestamp}.{body}"`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import queue
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from milvus_audit.runtime.worker import BACKGROUND


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
    """Runs deliveries in one daemon thread; `submit` never blocks the caller."""

    def __init__(self, max_queue: int = 1000, name: str = "milvus-audit-response",
                 drop_report_interval_s: float = 1.0) -> None:
        self._queue: queue.Queue[Callable[[], None]] = queue.Queue(max_queue)
        self.dropped = 0
        self._unreported_drops = 0
        self._last_drop_report = 0.0
        self._drop_report_interval_s = drop_report_interval_s
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, job: Callable[[], None]) -> bool:
        try:
            self._queue.put_nowait(job)
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
        """Wait until every alert raised so far is delivered (for tests and shutdown)."""
        BACKGROUND.flush()  # alerts still being detected queue their deliveries first
        deadline = time.monotonic() + timeout_s
        while self._queue.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            try:
                job()
            except Exception:  # a job reports its own outcome; nothing may kill the worker
                pass
            finally:
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
