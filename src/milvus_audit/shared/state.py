"""Shared detection state and blocks through Redis: one fleet, one detector.

One `SharedState` per `AuditConfig` with `shared_state=...`. Its own daemon thread (the
*sync thread*) does every Redis round trip; the application's threads never wait on Redis:

- every `interval_s` (100 ms) while detection has something to send, it sends the pending
  counts, map entries, alert claims and block announcements as **one pipelined round trip**
  and reads the fleet's sums back; the rules then decide again on the fleet count plus their
  local delta (`Fleet`), and an alert that crossed a threshold claims its fleet-wide cooldown
  in a second round trip at once. Idle, it sends one heartbeat a second;
- a second thread listens on the deployment's pub/sub channel: blocks and lifts placed by
  any process are applied here within milliseconds;
- every `RECONCILE_S` and whenever the connection comes back, the block hash is read in
  full: what pub/sub missed is applied, what an attacker deleted or overwrote is rewritten
  from the signed entries this process holds, what is not signed with the block key is
  ignored and reported as a `milvus.response` record with outcome `rejected`.

Redis down, slow or restarted: calls are never delayed (fail-closed mode refuses them while
sharing is lost); detection runs on local state (alerts publish at once, local cooldowns);
one `milvus.audit.degraded` record is written when sharing is lost and one when it is
restored (`milvus_audit.shared_state.up` says the same as a gauge); the deltas accumulated
meanwhile are merged when Redis answers again, and counts a restarted Redis lost are pushed
again from what this process remembers it sent.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import socket
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

from milvus_audit._version import __version__
from milvus_audit.auditing.gates import BlockEntry, BlockList
from milvus_audit.exceptions import AuditUnavailable, ConfigError
from milvus_audit.runtime.diagnostics import INTERNAL_ERRORS
from milvus_audit.runtime.worker import LIFECYCLE, Stage, background_thread
from milvus_audit.semconv import (
    DEGRADED_COMPONENT,
    DEGRADED_DURATION_S,
    DEGRADED_EVENT,
    DEGRADED_REASON,
    DEGRADED_STATE,
    REJECTED,
    RESPONSE_ACTION,
    RESPONSE_DRY_RUN,
    RESPONSE_ERROR,
    RESPONSE_EVENT,
    RESPONSE_OUTCOME,
    RESPONSE_SOURCE,
    RESPONSE_TARGET,
    SHARED_STATE_UP,
)
from milvus_audit.shared.fleet import Batch, CounterDelta, Fleet, Key, Recheck
from milvus_audit.shared.settings import SharedSettings
from milvus_audit.shared.signing import BLOCK, LIFT, Rejected, SignedEntry, decode, encode

if TYPE_CHECKING:
    from milvus_audit.otel.emitter import OTelEmitter

INTERVAL_S = 0.1  # counts are sent at least this often while there are any
MIN_GAP_S = 0.05  # round trips are never closer than this (<= 20 a second)
HEARTBEAT_S = 1.0  # idle: one round trip a second tells a lost Redis within a second
RECONCILE_S = 5.0  # the block hash read in full
RETRY_S = 0.5  # while Redis is down: a reconnection attempt this often
SOCKET_TIMEOUT_S = 0.5  # a slow Redis is a lost one for the sync thread (never for the calls)
MAX_REPORTED = 1024  # forged entries remembered, so each is reported once
COMPONENT = "shared_state"

_INSTANCES: weakref.WeakSet[SharedState] = weakref.WeakSet()


def connect(url: str) -> Any:
    """A redis-py client for `url`: short timeouts, no retries (the sync thread retries)."""
    try:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry
    except ImportError:
        raise ConfigError("AuditConfig(shared_state=...) needs the Redis client: "
                          "pip install 'milvus-audit[redis]'") from None
    return redis.Redis.from_url(url, socket_timeout=SOCKET_TIMEOUT_S, socket_connect_timeout=SOCKET_TIMEOUT_S,
                                retry=Retry(NoBackoff(), 0), retry_on_timeout=False, decode_responses=True,
                                health_check_interval=0, client_name="milvus-audit")


def _member() -> str:
    return f"{socket.gethostname()[:64]}:{os.getpid()}:{secrets.token_hex(3)}"


def _key_part(text: str) -> str:
    """A principal as a key part: itself when short, else a digest (bounded key sizes)."""
    return text if len(text) <= 200 else "sha256:" + hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()


class SharedState:
    """A configuration's connection to the fleet (see the module docstring)."""

    def __init__(self, settings: SharedSettings, emitter: OTelEmitter, *, clock: Callable[[], float] | None = None,
                 meter_provider: Any = None, fail_closed: bool = False, interval_s: float = INTERVAL_S) -> None:
        self.settings = settings
        self.prefix = settings.prefix
        self.key = settings.block_key
        self.emitter = emitter
        self.clock = clock or time.time
        self.fail_closed = fail_closed
        self.interval_s = interval_s
        self.member = _member()
        self.up = False
        self.round_trips = 0
        self.started_at = time.monotonic()
        self.fleet = Fleet(self.wake)
        self.blocks: BlockList | None = None
        self.run_rechecks: Callable[[list[Recheck]], list[Any]] | None = None
        self.publish: Callable[[Any], None] | None = None
        self._client: Any = None
        self._wake = threading.Event()
        self._sync_lock = threading.RLock()
        self._entries_lock = threading.Lock()
        self._closed = False
        self._started = False
        self._need_reconcile = True
        self._lost_at: float | None = None  # monotonic time sharing was lost (a record was written)
        self._retry_at = 0.0
        self._last_round_trip = 0.0
        self._next_heartbeat = 0.0
        self._next_reconcile = 0.0
        self._outgoing: list[tuple[str, str]] = []  # (field, signed entry) to write and announce
        self._held: dict[str, tuple[SignedEntry, str]] = {}  # valid entries this process enforces
        self._lifted: dict[str, float] = {}  # block id -> until: replays of a lifted block are ignored
        self._reported: OrderedDict[str, None] = OrderedDict()
        self._stale: dict[str, list[str]] = {}  # hash -> fields out of every window, deleted next round
        self._threads: list[threading.Thread] = []
        meter = metrics.get_meter("milvus_audit", __version__, meter_provider=meter_provider)
        meter.create_observable_gauge(SHARED_STATE_UP, callbacks=[self._observe_up], unit="1",
                                      description="1 while the shared detection state (Redis) answers, else 0.")
        _INSTANCES.add(self)

    # -- names in Redis -----------------------------------------------------------------
    @property
    def channel(self) -> str:
        return f"{self.prefix}:blocks"

    @property
    def blocks_hash(self) -> str:
        return f"{self.prefix}:blocks"

    def _name(self, kind: str, ident: Key) -> str:
        return f"{self.prefix}:{kind}:{ident[0]}:{_key_part(ident[1])}"

    # -- wiring ------------------------------------------------------------------------
    def attach_blocks(self, blocks: BlockList) -> None:
        """Share `blocks` with the fleet: only with a block key (unsigned blocks are never shared)."""
        self.blocks = blocks
        if self.key is not None:
            blocks.listener = self

    def attach_detection(self, run_rechecks: Callable[[list[Recheck]], list[Any]],
                         publish: Callable[[Any], None]) -> None:
        self.run_rechecks, self.publish = run_rechecks, publish

    def start(self) -> None:
        """Connect and load the fleet's blocks now (bounded by the socket timeout), so a process
        that starts after a block refuses on its first call; then start the threads."""
        if self._started:
            return
        self._started = True
        self._client = connect(self.settings.url)
        self._need_reconcile = True
        self.sync_once()
        self._start_threads()
        LIFECYCLE.register(Stage.CALLS, self.drain)

    def _start_threads(self) -> None:
        self._threads = [background_thread(self._sync_loop, "milvus-audit-shared-sync"),
                         background_thread(self._listen, "milvus-audit-shared-pubsub")]
        for thread in self._threads:
            thread.start()

    def wake(self) -> None:
        self._wake.set()

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout=2)
        if self._client is not None:
            try:
                self._client.close()
            except Exception:
                pass

    def drain(self, seconds_left: float) -> None:
        """At shutdown (after the calls' work): send what is pending, claim what waits."""
        if not self._closed and self.up:
            self.sync_once(force=True)

    # -- fail-closed gate ----------------------------------------------------------------
    def refusal(self, operation: str, connection: Mapping[str, Any]) -> BaseException | None:
        if self.up or not self.fail_closed:
            return None
        self.emitter.count_refusal(operation)
        return AuditUnavailable(f"milvus-audit fail-closed: the shared detection state is unreachable; "
                                f"{operation} was not sent")

    def _observe_up(self, options: CallbackOptions) -> Iterable[Observation]:
        yield Observation(1 if self.up else 0, {"milvus_audit.shared_state.prefix": self.prefix})

    # -- blocks placed or lifted here (BlockListener) --------------------------------------
    def blocked(self, entry: BlockEntry) -> None:
        signed = SignedEntry(BLOCK, entry.scope, entry.principal, entry.until, entry.rule, entry.alert_id, entry.id)
        self._announce(signed)

    def lifted(self, entry: BlockEntry) -> None:
        signed = SignedEntry(LIFT, entry.scope, entry.principal, entry.until, entry.rule, entry.alert_id, entry.id)
        with self._entries_lock:
            self._lifted[entry.id] = entry.until
        self._announce(signed)

    def _announce(self, signed: SignedEntry) -> None:
        assert self.key is not None
        raw = encode(signed, self.key, self.prefix)
        with self._entries_lock:
            self._held[signed.field] = (signed, raw)
            self._outgoing.append((signed.field, raw))
        self.wake()

    # -- the sync thread -------------------------------------------------------------------
    def _sync_loop(self) -> None:
        """Wakes every `interval_s`, or sooner for a claim or a block, never twice within `MIN_GAP_S`."""
        next_at = time.monotonic()
        while not self._closed:
            self._wake.wait(max(0.0, next_at - time.monotonic()))
            self._wake.clear()
            if self._closed:
                return
            began = time.monotonic()
            try:
                self.sync_once()
            except Exception as exc:  # never stops the thread
                INTERNAL_ERRORS.report("shared state sync", exc)
            next_at = began + self.interval_s
            rest = began + MIN_GAP_S - time.monotonic()
            if rest > 0:
                time.sleep(rest)

    def sync_once(self, *, force: bool = False) -> None:
        """One round trip (two when an alert crossed a threshold on the fleet's count)."""
        with self._sync_lock:
            for _ in range(2):
                if not self._round(force):
                    return
                if not self.fleet.pending():
                    return
                force = True

    def _round(self, force: bool) -> bool:
        mono = time.monotonic()
        if not self.up and mono < self._retry_at:
            return False
        if self._client is None:
            return False
        batch = self.fleet.take()
        with self._entries_lock:
            outgoing, self._outgoing = self._outgoing, []
        reconcile = self._need_reconcile or mono >= self._next_reconcile or not self.up
        if not (batch or outgoing or reconcile or force) and mono < self._next_heartbeat:
            return False
        now = self.clock()
        self._last_round_trip = mono
        try:
            results, steps = self._send(batch, outgoing, reconcile, now)
        except Exception as exc:
            self.fleet.give_back(batch)
            with self._entries_lock:
                self._outgoing[:0] = outgoing
            self._lost(exc)
            self._publish_all([claim.alert for claim in batch.claims])
            return False
        self._restored()
        self._next_heartbeat = mono + HEARTBEAT_S
        if reconcile:
            self._need_reconcile = False
            self._next_reconcile = mono + RECONCILE_S
        rechecks, won = self._read(batch, results, steps, now)
        alerts = self.run_rechecks(rechecks) if rechecks and self.run_rechecks is not None else []
        self._publish_all([*won, *alerts])
        return True

    def _send(self, batch: Batch, outgoing: list[tuple[str, str]], reconcile: bool,
              now: float) -> tuple[list[Any], list[tuple[str, Any, int]]]:
        pipe = self._client.pipeline(transaction=False)
        steps: list[tuple[str, Any, int]] = []  # (kind, what, index of the result to read)
        count = 0

        def add(kind: str, what: Any) -> None:
            steps.append((kind, what, count - 1))

        for name, fields in self._stale.items():
            pipe.hdel(name, *fields)
            count += 1
        self._stale = {}
        for field, raw in outgoing:
            pipe.hset(self.blocks_hash, field, raw)
            pipe.publish(self.channel, raw)
            count += 2
        for ident, delta in batch.counters.items():
            name = self._name("c", ident)
            current = int(now // (delta.window_s / delta.buckets))
            for slot, value in delta.slots.items():
                if slot > current - delta.buckets and value:
                    pipe.hincrbyfloat(name, f"s{slot}", value)
                    count += 1
            pipe.hset(name, f"m{self.member}", repr(now))
            pipe.pexpire(name, int(delta.window_s * 2000) + 1000)
            pipe.hgetall(name)
            count += 3
            add("counter", ident)
        for ident, map_delta in batch.maps.items():
            name = self._name("m", ident)
            pipe.hset(name, mapping={f"u{member}": repr(at) for member, at in map_delta.members.items()})
            pipe.pexpire(name, int(map_delta.window_s * 2000) + 1000)
            pipe.hgetall(name)
            count += 3
            add("map", ident)
        for ident in batch.watches:
            if ident not in batch.maps:
                pipe.hgetall(self._name("m", ident))
                count += 1
                add("watch", ident)
        for claim in batch.claims:
            name = f"{self.prefix}:cd:{claim.key}"
            ttl_ms = max(1, int(claim.cooldown_s * 1000))
            pipe.set(name, self._claim_value(self.member, claim.alert.id), nx=True, px=ttl_ms, get=True)
            pipe.sadd(f"{name}:seen", self.member)
            pipe.pexpire(f"{name}:seen", ttl_ms)
            pipe.scard(f"{name}:seen")
            count += 4
            add("claim", claim)
        if reconcile:
            pipe.hgetall(self.blocks_hash)
            count += 1
            add("blocks", None)
        if count == 0:
            pipe.ping()
        results = pipe.execute(raise_on_error=False)
        self.round_trips += 1
        for result in results:  # a command's own error (a key of the wrong type) is not an outage
            if isinstance(result, (ConnectionError, TimeoutError, OSError)):
                raise result
        return results, steps

    def _claim_value(self, member: str, alert_id: str) -> str:
        """Who holds a cooldown: signed, so a forged claim cannot silence an alert fleet-wide."""
        body = f"{member}|{alert_id}"
        if self.key is None:
            return body
        mac = hmac.new(self.key, f"{self.prefix}\ncooldown\n{body}".encode(), hashlib.sha256).hexdigest()[:32]
        return f"{body}|{mac}"

    def _claim_valid(self, value: str) -> bool:
        if self.key is None:
            return True
        member, _, rest = value.partition("|")
        alert_id, _, mac = rest.partition("|")
        return bool(mac) and hmac.compare_digest(self._claim_value(member, alert_id), value)

    def _read(self, batch: Batch, results: list[Any], steps: list[tuple[str, Any, int]],
              now: float) -> tuple[list[Recheck], list[Any]]:
        rechecks: list[Recheck] = []
        won: list[Any] = []
        fleet = self.fleet
        for kind, what, index in steps:
            result = results[index]
            if isinstance(result, Exception):
                INTERNAL_ERRORS.report(f"shared state {kind}", result)
                if kind == "claim":
                    won.append(what.alert)  # the claim could not be judged: the alert is not lost
                continue
            if kind == "counter":
                recheck = self._read_counter(what, batch.counters[what], result, now)
                if recheck is not None:
                    rechecks.append(recheck)
            elif kind in ("map", "watch"):
                window_s = batch.maps[what].window_s if kind == "map" else batch.watches[what][0]
                members = {f[1:]: float(v) for f, v in result.items() if f.startswith("u")}
                fresh = {m: at for m, at in members.items() if now - at <= window_s}
                stale = [f"u{m}" for m in members if m not in fresh]
                if stale:
                    self._stale[self._name("m", what)] = stale
                fleet.maps[what] = fresh
                recheck = batch.maps[what].recheck if kind == "map" else batch.watches[what][1]
                if recheck is not None:
                    rechecks.append(recheck)
            elif kind == "claim":
                previous = results[index - 3]
                seen = int(result or 1)
                alert = what.alert
                if previous is None or not self._claim_valid(str(previous)):
                    alert.processes = max(seen, fleet.processes.get((alert.rule, alert.principal), 1))
                    won.append(alert)
            elif kind == "blocks":
                self._reconcile(result, now)
        return rechecks, won

    def _read_counter(self, ident: Key, delta: CounterDelta, result: Mapping[str, str], now: float) -> Recheck | None:
        fleet = self.fleet
        current = int(now // (delta.window_s / delta.buckets))
        oldest = current - delta.buckets
        mine = fleet.mine.setdefault(ident, {})
        for slot, value in delta.slots.items():
            if slot > oldest:
                mine[slot] = mine.get(slot, 0.0) + value
        sums: dict[int, float] = {}
        processes = 0
        stale: list[str] = []
        for name, text in result.items():
            if name.startswith("s"):
                slot = int(name[1:])
                if slot > oldest:
                    sums[slot] = float(text)
                else:
                    stale.append(name)
            elif name.startswith("m"):
                if now - float(text) <= delta.window_s:
                    processes += 1
                else:
                    stale.append(name)
        if stale:
            self._stale[self._name("c", ident)] = stale
        others: dict[int, float] = {}
        lost: dict[int, float] = {}
        for slot in list(mine):
            if slot <= oldest:
                del mine[slot]
                continue
            fleet_sum = sums.get(slot, 0.0)
            if fleet_sum + 1e-9 < mine[slot]:  # Redis lost what this process sent (restarted): send it again
                lost[slot] = mine[slot] - fleet_sum
                mine[slot] = fleet_sum
        for slot, value in sums.items():
            other = value - mine.get(slot, 0.0)
            if other > 1e-9:
                others[slot] = other
        fleet.others[ident] = others
        fleet.processes[ident] = max(processes, 1)
        if lost:
            fleet.add_back(ident, delta.window_s, delta.buckets, lost, delta.recheck)
        return delta.recheck

    # -- blocks from the fleet -------------------------------------------------------------
    def _reconcile(self, entries: Mapping[str, str], now: float) -> None:
        if self.key is None or self.blocks is None:
            return
        expired: list[str] = []
        for field, raw in entries.items():
            entry = self._take_in(raw, now)
            if entry is not None and entry.until <= now:
                expired.append(field)
        with self._entries_lock:
            for field, (entry, raw) in list(self._held.items()):
                if entry.until <= now:
                    del self._held[field]
                elif entries.get(field) != raw:
                    self._outgoing.append((field, raw))  # deleted, overwritten or older: write it back
            for block_id, until in list(self._lifted.items()):
                if until <= now:
                    del self._lifted[block_id]
        if expired:
            self._stale.setdefault(self.blocks_hash, []).extend(expired)

    def on_message(self, raw: str | bytes) -> None:
        """An announcement on the channel."""
        if self.key is not None and self.blocks is not None:
            self._take_in(raw, self.clock())

    def _take_in(self, raw: str | bytes, now: float) -> SignedEntry | None:
        """Apply one entry of the fleet to the block list, if it is signed; else report it once."""
        assert self.key is not None and self.blocks is not None
        try:
            entry = decode(raw, self.key, self.prefix)
        except Rejected as rejected:
            self._report(raw, rejected)
            return None
        with self._entries_lock:
            if entry.kind == LIFT:
                self._lifted[entry.id] = entry.until
                self.blocks.remove(entry.scope, entry.principal, entry.id)
                held = self._held.get(entry.field)
                if held is None or held[0].id == entry.id:
                    self._held[entry.field] = (entry, raw if isinstance(raw, str) else raw.decode())
                return entry
            if entry.until <= now or entry.id in self._lifted:
                return entry
            held = self._held.get(entry.field)
            if held is not None and held[0].kind == BLOCK and held[0].id != entry.id \
                    and (held[0].until, held[0].id) > (entry.until, entry.id):
                return entry  # an older block of the same principal: ours stands
            self._held[entry.field] = (entry, raw if isinstance(raw, str) else raw.decode())
        self.blocks.apply(BlockEntry(entry.scope, entry.principal, entry.until, entry.rule, entry.alert_id, entry.id))
        return entry

    def _report(self, raw: str | bytes, rejected: Rejected) -> None:
        digest = hashlib.sha256(raw if isinstance(raw, bytes) else raw.encode("utf-8", "replace")).hexdigest()
        if digest in self._reported:
            return
        self._reported[digest] = None
        while len(self._reported) > MAX_REPORTED:
            self._reported.popitem(last=False)
        self.emitter.emit_record(RESPONSE_EVENT, "WARN", {
            RESPONSE_ACTION: rejected.kind,
            RESPONSE_TARGET: rejected.target,
            RESPONSE_OUTCOME: REJECTED,
            RESPONSE_DRY_RUN: False,
            RESPONSE_ERROR: rejected.reason,
            RESPONSE_SOURCE: COMPONENT,
        })

    # -- the pub/sub thread ----------------------------------------------------------------
    def _listen(self) -> None:
        while not self._closed:
            pubsub = None
            try:
                pubsub = self._client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(self.channel)
                self._need_reconcile = True  # what was announced while we were not listening
                self.wake()
                while not self._closed:
                    message = pubsub.get_message(timeout=0.5)
                    if message is not None and message.get("type") == "message":
                        self.on_message(message["data"])
            except Exception:
                time.sleep(RETRY_S)
            finally:
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except Exception:
                        pass

    # -- health --------------------------------------------------------------------------
    def _lost(self, exc: BaseException) -> None:
        self.up = self.fleet.up = False
        self._retry_at = time.monotonic() + RETRY_S
        self._need_reconcile = True
        if self._lost_at is None:
            self._lost_at = time.monotonic()
            self.emitter.emit_record(DEGRADED_EVENT, "WARN", {
                DEGRADED_COMPONENT: COMPONENT, DEGRADED_STATE: "lost",
                DEGRADED_REASON: type(exc).__name__,  # never str(exc): it may name the URL
                "server.address": self.settings.redacted(),
            })

    def _restored(self) -> None:
        if self.up:
            return
        self.up = self.fleet.up = True
        if self._lost_at is not None:
            lost_for = time.monotonic() - self._lost_at
            self._lost_at = None
            self.emitter.emit_record(DEGRADED_EVENT, "INFO", {
                DEGRADED_COMPONENT: COMPONENT, DEGRADED_STATE: "restored",
                DEGRADED_DURATION_S: round(lost_for, 3), "server.address": self.settings.redacted(),
            })

    def _publish_all(self, alerts: list[Any]) -> None:
        if self.publish is None:
            return
        for alert in alerts:
            try:
                self.publish(alert)
            except Exception as exc:
                INTERNAL_ERRORS.report("shared state alert", exc)

    # -- fork ------------------------------------------------------------------------------
    def _after_fork(self) -> None:
        """In a forked child (gunicorn --preload): a member of its own, the parent's pending
        work forgotten, threads started again (blocks keep applying, counts keep flowing)."""
        self.member = _member()
        self._wake = threading.Event()
        self._sync_lock = threading.RLock()
        self._entries_lock = threading.Lock()
        self.fleet._lock = threading.Lock()
        self.fleet.take()
        self.fleet.mine.clear()
        self._outgoing = []
        if self._started and not self._closed:
            self._need_reconcile = True
            self._start_threads()


def _after_fork_in_child() -> None:
    for state in list(_INSTANCES):
        state._after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)
