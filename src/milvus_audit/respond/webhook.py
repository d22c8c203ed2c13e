"""Webhook delivery off the call path: a bounded queue, a worker thread, retries with backoff.

With a secret, each request carries `X-Milvus-Audit-Timestamp` (unix seconds) and
`X-Milvus-Audit-Signature: sha256=<hex>`, the HMAC-SHA256 of `"{timestamp}.{body}"`.

Redirects are never followed: a 3xx answer is a failed delivery (following one would turn
the signed POST into a GET to wherever the answer points, carrying the signature).

A webhook URL is a credential (Slack's and Teams' carry their token in the path), so it is
never exported: records name the target as `target_of(url)`, the scheme, the host (and
port) and a keyed fingerprint, and error texts never contain the URL or its parts.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import queue
import secrets
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import IO, Any

from milvus_audit.runtime.worker import LIFECYCLE, Stage, background_thread

Job = Callable[[], object]

_PROCESS_KEY = secrets.token_bytes(32)  # fingerprints webhook URLs when no key is configured


def target_of(url: str, key: str | bytes | None = None) -> str:
    """What records say a webhook posts to: `scheme://host[:port]#fp=<16 hex>`, the fingerprint
    being HMAC-SHA256(key, url) (the per-process key unless one is configured). The same URL
    has the same fingerprint under the same key; the URL cannot be read back from it."""
    secret = key.encode() if isinstance(key, str) else (key or _PROCESS_KEY)
    fingerprint = hmac.new(secret, url.encode("utf-8", "replace"), hashlib.sha256).hexdigest()[:16]
    try:
        parts = urllib.parse.urlsplit(url)
        scheme, host = parts.scheme.lower(), parts.hostname or ""
    except ValueError:
        scheme, host = "", ""
    if not scheme.isascii() or not all(c.isalnum() or c in "+-." for c in scheme):
        scheme = ""
    if not all(c.isalnum() or c in "-._:" for c in host):
        host = ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port if host else None
    except ValueError:
        port = None
    return f"{scheme or 'invalid'}://{host}{f':{port}' if port else ''}#fp={fingerprint}"


def _url_pieces(url: str) -> list[str]:
    """Every part of `url` that may be secret, longest first (to scrub them from error texts)."""
    pieces = {url, url.partition("://")[2]}
    try:
        parts = urllib.parse.urlsplit(url)
        netloc = parts.netloc
        pieces.update({netloc, parts.path, parts.query, parts.fragment, netloc.rpartition("@")[0],
                       netloc.rpartition(":")[2], parts.path + "?" + parts.query})
        pieces.update(p for p in parts.path.split("/"))
        pieces.update(v for pair in parts.query.split("&") for v in pair.split("="))
    except ValueError:
        pass
    for text in list(pieces):
        pieces.add(urllib.parse.unquote(text))
    return sorted((p for p in pieces if len(p) >= 3), key=len, reverse=True)


def scrub_url(text: str, url: str) -> str:
    """`text` with the URL and every part of it that may be a credential replaced by `<url>`."""
    for piece in _url_pieces(url):
        text = text.replace(piece, "<url>")
    return text


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    """A 3xx stays a 3xx (an HTTPError): the signed POST is never re-sent elsewhere, nor as a GET."""

    def redirect_request(self, req: urllib.request.Request, fp: IO[bytes], code: int, msg: str,
                         headers: Any, newurl: str) -> None:
        return None


_OPENER = urllib.request.build_opener(_RefuseRedirects())


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
    """POST with retries and exponential backoff; return (ok, error, attempts). A 2xx is a
    delivery; a 3xx (never followed) or a 4xx other than 429 fails at once; 5xx, 429 and
    network errors are retried. The error text never contains the URL."""
    body = json.dumps(payload, separators=(",", ":"), default=str).encode()
    error = ""
    for attempt in range(1, retries + 2):
        headers = {"Content-Type": "application/json", "User-Agent": "milvus-audit"}
        if secret is not None:
            timestamp = int(clock())
            headers["X-Milvus-Audit-Timestamp"] = str(timestamp)
            headers["X-Milvus-Audit-Signature"] = sign(secret, timestamp, body)
        try:
            request = urllib.request.Request(url, data=body, headers=headers, method="POST")
            with _OPENER.open(request, timeout=timeout_s) as response:
                if 200 <= response.status < 300:
                    return True, "", attempt
                error = f"HTTP {response.status}"
                if 300 <= response.status < 400:
                    return False, f"{error}: redirects are not followed", attempt
        except urllib.error.HTTPError as exc:
            error = f"HTTP {exc.code}"
            if 300 <= exc.code < 400:
                return False, f"{error}: redirects are not followed", attempt
            if 400 <= exc.code < 500 and exc.code != 429:
                return False, error, attempt  # the receiver refused it: retrying will not help
        except urllib.error.URLError as exc:
            reason = exc.reason
            detail = reason.strerror if isinstance(reason, OSError) and reason.strerror else str(reason)
            error = scrub_url(f"URLError: {type(reason).__name__}: {detail}"
                              if isinstance(reason, OSError) else f"URLError: {detail}", url)
        except OSError as exc:
            error = scrub_url(f"{type(exc).__name__}: {exc.strerror or ''}".rstrip(": "), url)
        except Exception as exc:  # e.g. an invalid URL: its text would repeat the URL
            return False, f"{type(exc).__name__}: invalid webhook URL", attempt
        if attempt <= retries:
            time.sleep(backoff_s * (2 ** (attempt - 1)))
    return False, error, retries + 1
