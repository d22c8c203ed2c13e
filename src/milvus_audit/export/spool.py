"""The durable spool: at-least-once delivery of audit records to the collector.

Every record is appended to a local, segmented, append-only spool before export.
A background exporter sends the spool over OTLP and deletes a segment only after the
collector acknowledged all of it, retrying with backoff forever. After a crash or
restart, whatever was not acknowledged is sent again; duplicates are recognisable by
`(milvus_audit.stream, milvus_audit.seq)`. Disk use is bounded: when full, either the
oldest segment is dropped and a `milvus.audit.gap` record says how many records were
lost, or (`on_full="fail"`) appends fail, which `AuditConfig(fail_closed=True)` turns
into refused calls.

Several processes may share one spool directory (gunicorn or uvicorn workers, forked
or not): each process writes its own sub-spool, `DIR/<pid>-<id>/`, whose `owner.lock`
it holds with `flock` for as long as it lives (a forked child claims a new one). Each
exporter also adopts the sub-spools whose lock is free (their process died, or exited
before delivering everything), delivers them and then removes them. Segments written
directly in `DIR` by earlier versions are adopted the same way.

Each entry is a 4-byte length, the record as JSON (the JSONL format, plus severity
number and scope) and a CRC32, so a write torn by a crash is found and cut on restart.
A write that fails, in part or in whole, is cut back at once: the index and the file
always agree, `append` returns False exactly for the records that are not in the
spool, and the spool reports itself unhealthy until a write succeeds again.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import struct
import threading
import time
import uuid
import weakref
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.sdk._logs import LogRecordProcessor, ReadableLogRecord, ReadWriteLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from milvus_audit._version import __version__
from milvus_audit.export.jsonl import EVENT_PREFIX, parse_rfc3339, rfc3339, to_otel_json
from milvus_audit.runtime.worker import background_thread

log = logging.getLogger("milvus_audit")

FsyncPolicy = Literal["always", "interval", "never"]
OnFull = Literal["drop_oldest", "fail"]
GAP_EVENT = "milvus.audit.gap"
_HEADER = struct.Struct(">I")
_SEGMENT_SUFFIX = ".seg"
_CURSOR = "cursor.json"
_OWNER = "owner.lock"  # flock'd by the process writing the sub-spool, or by the exporter adopting it
_LEGACY_LOCK = ".legacy.lock"  # guards segments written directly in the spool dir by earlier versions
_CLAIMING = ".new-"  # a sub-spool being created: never adopted
_STALE_CLAIM_S = 60.0
_FILE_MODE = 0o600

_SPOOLS: list[Spool] = []
_LIVE: weakref.WeakSet[Spool] = weakref.WeakSet()
_PROCESSORS: weakref.WeakSet[SpoolProcessor] = weakref.WeakSet()


def active_spools() -> list[Spool]:
    """Spools set up by `configure(spool_dir=...)` in this process (fail-closed checks them)."""
    return list(_SPOOLS)


def _try_lock(path: Path) -> int | None:
    """An fd holding an exclusive flock on `path`, or None if another holder has it (or it vanished)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, _FILE_MODE)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.stat(path).st_ino != os.fstat(fd).st_ino:  # removed by whoever held it before us
            raise FileNotFoundError(errno.ENOENT, "lock file replaced", str(path))
    except OSError:
        os.close(fd)
        return None
    return fd


class Spool:
    """Segmented append-only record files with a persisted acknowledgement cursor.

    `directory` is shared: this process writes its own sub-spool inside it (`path`),
    and `orphans()` hands over the sub-spools of processes that are gone.
    """

    def __init__(self, directory: str | os.PathLike[str], *, fsync: FsyncPolicy = "interval",
                 fsync_interval_s: float = 1.0, segment_bytes: int = 4 << 20, max_bytes: int = 256 << 20,
                 on_full: OnFull = "drop_oldest") -> None:
        if fsync not in ("always", "interval", "never"):
            raise ValueError(f"spool fsync policy must be always, interval or never, not {fsync!r}")
        if on_full not in ("drop_oldest", "fail"):
            raise ValueError(f"spool on_full must be drop_oldest or fail, not {on_full!r}")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync
        self.fsync_interval_s = fsync_interval_s
        self.segment_bytes = min(segment_bytes, max(max_bytes // 8, 4096))  # several segments fit
        self.max_bytes = max_bytes
        self.on_full = on_full
        self.adopted = False
        self.path, self._owner = self._claim()
        self._reset()
        _LIVE.add(self)

    @classmethod
    def _adopt(cls, parent: Spool, path: Path, owner: int) -> Spool:
        """Read (never write) the sub-spool at `path`, whose lock `owner` we now hold."""
        spool = cls.__new__(cls)
        spool.directory, spool.path, spool._owner = parent.directory, path, owner
        spool.fsync, spool.fsync_interval_s = parent.fsync, parent.fsync_interval_s
        spool.segment_bytes, spool.max_bytes, spool.on_full = parent.segment_bytes, parent.max_bytes, parent.on_full
        spool.adopted = True
        spool._reset()
        return spool

    def _reset(self) -> None:
        self.dropped = 0  # records lost to drop_oldest, or refused by a full "fail" spool
        self.write_errors = 0
        self._failing = False  # the last write failed: unhealthy until one succeeds
        self._lock = threading.Lock()
        self._has_data = threading.Condition(self._lock)
        self._last_fsync = time.monotonic()
        self._segments: list[tuple[int, int, int]] = []  # (number, bytes, records)
        self._unreported_gap = 0  # records dropped and not yet reported in a delivered gap record
        self._read_end = (0, 0)  # the exporter holds the records between the cursor and here
        self._dropped_in_flight = 0  # dropped from disk while in flight: lost only if that export fails
        self._largest_entry = 1024
        self._fd: int | None = None
        self._cursor = self._load_cursor()
        self._recover()

    # -- ownership ----------------------------------------------------------------------
    def _claim(self) -> tuple[Path, int]:
        """Create and lock this process's sub-spool; it becomes visible (adoptable) only once locked."""
        name = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        claiming = self.directory / (_CLAIMING + name)
        claiming.mkdir()
        owner = _try_lock(claiming / _OWNER)
        if owner is None:
            raise OSError(errno.ENOLCK, f"milvus-audit spool: cannot lock {claiming / _OWNER}")
        path = self.directory / name
        os.rename(claiming, path)
        return path, owner

    def orphans(self) -> list[Spool]:
        """The sub-spools in this directory no live process owns, now locked by us (read them, then
        `remove()` or `close()`). Segments of earlier versions directly in the directory count too."""
        candidates: list[tuple[Path, Path]] = []  # (sub-spool, its lock)
        try:
            entries = sorted(self.directory.iterdir())
        except OSError:
            return []
        for entry in entries:
            if entry == self.path or not entry.is_dir():
                continue
            if entry.name.startswith(_CLAIMING):
                self._remove_stale_claim(entry)
            elif not entry.name.startswith(".") and (entry / _OWNER).exists():
                candidates.append((entry, entry / _OWNER))
        if any(self.directory.glob("*" + _SEGMENT_SUFFIX)):
            candidates.append((self.directory, self.directory / _LEGACY_LOCK))
        found: list[Spool] = []
        for path, lock in candidates:
            owner = _try_lock(lock)
            if owner is None:
                continue  # a live process owns it (or another exporter is delivering it)
            try:
                found.append(Spool._adopt(self, path, owner))
            except OSError as exc:
                log.warning("milvus-audit spool: cannot read the orphaned spool %s: %s", path, exc)
                os.close(owner)
        return found

    def _remove_stale_claim(self, entry: Path) -> None:
        """A process died between creating its sub-spool and locking it: nothing was written there."""
        with contextlib.suppress(OSError):
            if time.time() - entry.stat().st_mtime < _STALE_CLAIM_S:
                return
            owner = _try_lock(entry / _OWNER)
            if owner is not None:
                for child in entry.iterdir():
                    child.unlink()
                entry.rmdir()
                os.close(owner)

    def remove(self) -> None:
        """Delete this sub-spool (everything in it was delivered) and release its lock."""
        with self._lock:
            self._close_segment()
            legacy = self.path == self.directory
            for child in list(self.path.iterdir()) if self.path.is_dir() else []:
                if child.name.endswith(_SEGMENT_SUFFIX) or child.name.startswith(_CURSOR) or (
                        child.name == _OWNER and not legacy):
                    child.unlink(missing_ok=True)
            if not legacy:
                with contextlib.suppress(OSError):
                    self.path.rmdir()
            self._release()

    def _release(self) -> None:
        if self._owner >= 0:
            os.close(self._owner)
            self._owner = -1

    def _after_fork_in_child(self) -> None:
        """The parent keeps its sub-spool (and its lock); a forked child writes a new one."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
        self._fd = None
        with contextlib.suppress(OSError):
            os.close(self._owner)  # our copy only: the parent still holds the lock
        self._owner = -1
        if self.adopted:
            return
        self.path, self._owner = self._claim()
        self._reset()

    # -- files ------------------------------------------------------------------------
    def _path(self, number: int) -> Path:
        return self.path / f"{number:012d}{_SEGMENT_SUFFIX}"

    def _load_cursor(self) -> tuple[int, int]:
        try:
            data = json.loads((self.path / _CURSOR).read_text())
            self._unreported_gap = int(data.get("unreported_gap", 0))
            return int(data["segment"]), int(data["offset"])
        except (OSError, ValueError, KeyError):
            return 0, 0

    def _save_cursor(self) -> None:
        temporary = self.path / (_CURSOR + ".tmp")
        try:
            temporary.write_text(json.dumps({"segment": self._cursor[0], "offset": self._cursor[1],
                                             "unreported_gap": self._unreported_gap}))
            os.replace(temporary, self.path / _CURSOR)
        except OSError as exc:  # the next ack saves it; until then a restart may send duplicates
            log.warning("milvus-audit spool: cannot save the cursor in %s: %s", self.path, exc)

    def _recover(self) -> None:
        """Index the segments on disk; cut a record torn by a crash."""
        for path in sorted(self.path.glob("*" + _SEGMENT_SUFFIX)):
            number = int(path.stem)
            if number < self._cursor[0]:
                path.unlink(missing_ok=True)
                continue
            records, good = 0, 0
            data = path.read_bytes()
            while good + _HEADER.size <= len(data):
                (length,) = _HEADER.unpack_from(data, good)
                end = good + _HEADER.size + length + 4
                if end > len(data):
                    break
                body = data[good + _HEADER.size: end - 4]
                if zlib.crc32(body) != struct.unpack(">I", data[end - 4: end])[0]:
                    break
                self._largest_entry = max(self._largest_entry, end - good)  # reads size by it
                good, records = end, records + 1
            if good < len(data):
                log.warning("milvus-audit spool: cut a torn record at %s offset %d", path, good)
                with path.open("r+b") as handle:
                    handle.truncate(good)
            self._segments.append((number, good, records))

    @property
    def size_bytes(self) -> int:
        return sum(size for _, size, _ in self._segments)

    @property
    def lag_records(self) -> int:
        """Records written but not yet acknowledged (approximate within the cursor's segment)."""
        return sum(records for number, _, records in self._segments if number >= self._cursor[0])

    def healthy(self) -> bool:
        """Can a record be durably written now? False when full under on_full="fail", and after a
        failed write until a write succeeds again."""
        if self._failing:
            return False
        if self.on_full == "fail" and self.size_bytes + self._largest_entry > self.max_bytes:
            return False  # the next record would not fit
        return os.access(self.path, os.W_OK)

    # -- writing ----------------------------------------------------------------------
    def append(self, record: dict[str, Any]) -> bool:
        """Write one record; True exactly when it is in the spool (and will be delivered)."""
        body = json.dumps(record, separators=(",", ":"), default=str).encode()
        entry = _HEADER.pack(len(body)) + body + struct.pack(">I", zlib.crc32(body))
        with self._lock:
            if self.adopted:
                raise RuntimeError("an adopted spool is read-only")
            self._largest_entry = max(self._largest_entry, len(entry))
            try:
                if self.size_bytes + len(entry) > self.max_bytes and not self._make_room(len(entry)):
                    self.dropped += 1
                    return False
                self._write(entry)
            except OSError as exc:
                self.write_errors += 1
                self._failing = True
                log.warning("milvus-audit spool: cannot write to %s: %s", self.path, exc)
                return False
            self._failing = False
            self._has_data.notify_all()
            return True

    def _write(self, entry: bytes) -> None:
        """One `write(2)` in the common case; a failed or short write is cut back to the last good
        record, so the file holds exactly the records the index counts."""
        if self._fd is None or not self._segments or self._segments[-1][1] >= self.segment_bytes:
            self._rotate()
        assert self._fd is not None
        number, size, records = self._segments[-1]
        view, written = memoryview(entry), 0
        try:
            while written < len(entry):
                count = os.write(self._fd, view[written:])
                if count <= 0:
                    raise OSError(errno.EIO, "the segment took no bytes")
                written += count
        except OSError:
            if written:
                try:
                    os.ftruncate(self._fd, size)
                except OSError:  # cannot cut it: leave the torn tail past the index, write elsewhere
                    self._close_segment()
            raise
        self._segments[-1] = (number, size + len(entry), records + 1)
        if self.fsync == "always" or (self.fsync == "interval"
                                      and time.monotonic() - self._last_fsync >= self.fsync_interval_s):
            os.fsync(self._fd)
            self._last_fsync = time.monotonic()

    def _rotate(self) -> None:
        self._close_segment()
        number = self._segments[-1][0] + 1 if self._segments else max(self._cursor[0], 1)
        fd = os.open(self._path(number), os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, _FILE_MODE)
        self._fd = fd
        self._segments.append((number, os.fstat(fd).st_size, 0))

    def _close_segment(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                if self.fsync != "never":
                    os.fsync(fd)
            finally:
                os.close(fd)

    def _make_room(self, needed: int) -> bool:
        if self.on_full == "fail":
            return False
        while self.size_bytes + needed > self.max_bytes and len(self._segments) > 1:
            number, size, _ = self._segments.pop(0)
            if number >= self._cursor[0]:
                start = self._cursor[1] if number == self._cursor[0] else 0  # before it: delivered
                in_flight_end = min(size, self._read_end[1]) if number == self._read_end[0] else (
                    size if number < self._read_end[0] else start)
                in_flight = self._count_range(number, start, max(start, in_flight_end))
                lost = self._count_range(number, max(start, in_flight_end), size)
                self.dropped += lost
                self._unreported_gap += lost
                self._dropped_in_flight += in_flight
            self._path(number).unlink(missing_ok=True)
            self._cursor = (self._segments[0][0], 0)
            self._save_cursor()
        return self.size_bytes + needed <= self.max_bytes or len(self._segments) <= 1

    def _count_range(self, number: int, start: int, end: int) -> int:
        if end <= start:
            return 0
        try:
            data = self._path(number).read_bytes()[start:end]
        except OSError:
            return 0
        count, position = 0, 0
        while position + _HEADER.size <= len(data):
            (length,) = _HEADER.unpack_from(data, position)
            position += _HEADER.size + length + 4
            count += 1
        return count

    @staticmethod
    def gap_record(lost: int) -> dict[str, Any]:
        """The `milvus.audit.gap` record: delivered ahead of the records that survived."""
        return {"timestamp": rfc3339(time.time_ns()), "event_name": GAP_EVENT, "severity_text": "ERROR",
                "severity_number": SeverityNumber.ERROR.value, "trace_id": "", "span_id": "", "resource": {},
                "attributes": {"milvus_audit.gap.lost_records": lost,
                               "milvus_audit.gap.reason": "spool full: oldest records dropped"}}

    # -- reading and acknowledging ------------------------------------------------------
    def wake_reader(self) -> None:
        """A `read` waiting for records returns now: its exporter has other work (a flush)."""
        with self._lock:
            self._has_data.notify_all()

    def read(self, limit: int, wait_s: float = 0.5) -> tuple[list[dict[str, Any]], tuple[int, int, int]]:
        """Up to `limit` unacknowledged records (a gap record first, if records were dropped),
        and the cursor to `ack` once they are delivered. The lock is held while the raw entries
        are read, not while they are decoded, so writers wait as little as possible."""
        bodies: list[bytes] = []
        with self._lock:
            if not self._unread() and wait_s > 0:
                self._has_data.wait(wait_s)
            segment, offset = self._cursor
            wanted = limit - 1 if self._unreported_gap else limit
            for number, size, count in list(self._segments):
                if number < segment:
                    continue
                if number > segment:
                    segment, offset = number, 0
                if offset >= size:
                    continue
                try:
                    with self._path(number).open("rb") as handle:
                        handle.seek(offset)
                        data = handle.read(min(size - offset, (wanted - len(bodies)) * self._largest_entry))
                except FileNotFoundError:  # removed behind our back: say so in a gap record, go on
                    self._vanished(number, size, count, offset)
                    offset = size
                    continue
                position = 0
                while len(bodies) < wanted and position + _HEADER.size <= len(data):
                    (length,) = _HEADER.unpack_from(data, position)
                    end = position + _HEADER.size + length + 4
                    if end > len(data):
                        break
                    bodies.append(data[position + _HEADER.size: end - 4])
                    position = end
                offset += position
                if len(bodies) >= wanted or offset < size:
                    break
            gap = self._unreported_gap
            self._read_end = (segment, offset)
        records: list[dict[str, Any]] = [self.gap_record(gap)] if gap else []
        records.extend(json.loads(body) for body in bodies)
        return records, (segment, offset, gap)

    def _vanished(self, number: int, size: int, records: int, offset: int) -> None:
        lost = records if offset == 0 else max(1, records * (size - offset) // max(size, 1))
        log.warning("milvus-audit spool: segment %s vanished with about %d undelivered records",
                    self._path(number), lost)
        self.dropped += lost
        self._unreported_gap += lost
        if self._segments and self._segments[-1][0] == number:
            self._close_segment()  # the next write starts a new segment
        self._segments = [s for s in self._segments if s[0] != number]

    def pending(self) -> bool:
        """Are there records not yet acknowledged?"""
        with self._lock:
            return self._unread()

    def _unread(self) -> bool:
        if self._unreported_gap:
            return True
        segment, offset = self._cursor
        return any(number > segment or (number == segment and size > offset) for number, size, _ in self._segments)

    def ack(self, cursor: tuple[int, int, int]) -> None:
        """The collector acknowledged everything before `cursor`: advance, and delete finished segments."""
        segment, offset, gap_reported = cursor
        with self._lock:
            self._unreported_gap -= gap_reported
            self._dropped_in_flight = 0  # they were delivered after all
            if (segment, offset) > self._cursor:
                self._cursor = (segment, offset)
            if self._segments and self._cursor[0] < self._segments[0][0]:
                self._cursor = (self._segments[0][0], 0)  # its segment was dropped while in flight
            while len(self._segments) > 1 and self._segments[0][0] < self._cursor[0]:
                number, _, _ = self._segments.pop(0)
                self._path(number).unlink(missing_ok=True)
            self._save_cursor()

    def nack(self) -> None:
        """The export failed: records dropped from disk while in flight are now lost for good."""
        with self._lock:
            self.dropped += self._dropped_in_flight
            self._unreported_gap += self._dropped_in_flight
            self._dropped_in_flight = 0
            self._read_end = self._cursor

    def close(self) -> None:
        """Close the segment and release the sub-spool: removed when everything in it was delivered,
        otherwise left for the next exporter to adopt."""
        with self._lock:
            self._close_segment()
            empty = not self._unread()
        if empty and self._owner >= 0:
            self.remove()
        else:
            self._release()


def to_spool_record(record: Any) -> dict[str, Any]:
    data = to_otel_json(record)
    log_record = record.log_record
    data["severity_number"] = log_record.severity_number.value if log_record.severity_number else 0
    data["timestamp_ns"] = log_record.timestamp or log_record.observed_timestamp or 0
    return data


def from_spool_record(data: dict[str, Any]) -> ReadableLogRecord:
    """Rebuild an SDK log record from its spooled form, for the OTLP exporter."""
    timestamp = int(data.get("timestamp_ns") or parse_rfc3339(data["timestamp"]))
    fields: dict[str, Any] = dict(
        timestamp=timestamp, observed_timestamp=timestamp,
        trace_id=int(data["trace_id"], 16) if data.get("trace_id") else None,
        span_id=int(data["span_id"], 16) if data.get("span_id") else None,
        severity_text=data.get("severity_text") or None,
        severity_number=SeverityNumber(int(data.get("severity_number") or 0)),
        attributes=data.get("attributes") or {},
        event_name=data.get("event_name") or None,
    )
    return ReadableLogRecord(log_record=LogRecord(**fields), resource=Resource(data.get("resource") or {}),
                             instrumentation_scope=InstrumentationScope("milvus_audit", __version__))


class SpoolProcessor(LogRecordProcessor):
    """Appends each milvus-audit record to the spool; a thread exports the spool with retries,
    and also delivers (then removes) the sub-spools of dead processes sharing the directory."""

    def __init__(self, spool: Spool, exporter: LogRecordExporter, *, batch_size: int = 512,
                 max_backoff_s: float = 5.0, linger_s: float = 0.05, adopt_interval_s: float = 5.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.spool = spool
        self.exporter = exporter
        self.batch_size = batch_size
        self.linger_s = linger_s  # after a partial batch, let the next one gather (as the SDK's batch delay)
        self.adopt_interval_s = adopt_interval_s  # how often to look for spools left by dead processes
        self.max_backoff_s = max_backoff_s
        self.delivered = 0
        self.failed_exports = 0
        self._sleep = sleep
        self._start()
        _SPOOLS.append(spool)
        _PROCESSORS.add(self)

    def _start(self) -> None:
        self._hurry = threading.Event()  # set by force_flush: deliver now
        self._stopping = threading.Event()
        self._adopted: list[Spool] = []  # orphaned sub-spools this exporter holds and delivers
        self._scans_wanted = 0  # force_flush asks for a look for orphans ...
        self._scans_done = 0  # ... and waits until one started after its request is done
        self._progress = threading.Condition()  # notified after each scan and delivery, for force_flush
        self._backoff = 0.1
        self._thread = background_thread(self._run, "milvus-audit-spool")
        self._thread.start()

    def _after_fork_in_child(self) -> None:
        """A forked child: the spool already moved to a sub-spool of its own; restart the exporter."""
        for orphan in self._adopted:
            orphan._after_fork_in_child()  # the parent delivers those
        self._start()

    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        if (log_record.log_record.event_name or "").startswith(EVENT_PREFIX):
            self.spool.append(to_spool_record(log_record))

    def _run(self) -> None:
        next_scan = 0.0
        while not self._stopping.is_set():
            self._signal_progress()  # what the last pass delivered
            try:
                if self._scans_wanted > self._scans_done or time.monotonic() >= next_scan:
                    wanted = self._scans_wanted
                    self._adopted.extend(self.spool.orphans())
                    self._scans_done = wanted
                    next_scan = time.monotonic() + self.adopt_interval_s
                    self._signal_progress()  # a force_flush waiting for this scan
                if not self._adopted:
                    if self._deliver(self.spool, wait_s=0.5) == "partial":
                        self._hurry.wait(self.linger_s)
                        self._hurry.clear()
                    continue
                self._deliver(self.spool, wait_s=0)
                orphan = self._adopted[0]
                if orphan.pending():
                    self._deliver(orphan, wait_s=0)
                else:
                    orphan.remove()
                    self._adopted.pop(0)
            except Exception as exc:  # nothing may kill the exporter: what is spooled stays spooled
                log.warning("milvus-audit spool: exporter error %r; retrying", exc)
                self._stopping.wait(self._backoff)
                self._backoff = min(self._backoff * 2, self.max_backoff_s)
        for orphan in self._adopted:
            orphan.close()  # undelivered: left, and released, for the next exporter
        self._adopted = []

    def _signal_progress(self) -> None:
        with self._progress:
            self._progress.notify_all()

    def _deliver(self, spool: Spool, wait_s: float) -> str:
        """Send one batch of `spool`: "empty", "partial" or "full" when delivered, "failed" otherwise."""
        records, cursor = spool.read(self.batch_size, wait_s=wait_s)
        if not records:
            return "empty"
        try:
            result = self.exporter.export([from_spool_record(r) for r in records])
        except Exception as exc:
            log.warning("milvus-audit spool: export raised %r", exc)
            result = LogRecordExportResult.FAILURE
        if result is LogRecordExportResult.SUCCESS:
            spool.ack(cursor)
            self.delivered += len(records)
            self._backoff = 0.1
            return "partial" if len(records) < self.batch_size else "full"
        spool.nack()
        self.failed_exports += 1
        self._stopping.wait(self._backoff)
        self._backoff = min(self._backoff * 2, self.max_backoff_s)
        return "failed"

    def wait_delivered(self, timeout_s: float = 30.0) -> bool:
        """Block until everything spooled so far is acknowledged, and every spool left in the
        directory by a dead process that this exporter could adopt is delivered."""
        deadline = time.monotonic() + timeout_s
        self._scans_wanted += 1
        wanted = self._scans_wanted
        with self._progress:
            while time.monotonic() < deadline:
                if self._scans_done >= wanted and not self._adopted and not self.spool.pending():
                    return True
                if not self._thread.is_alive():
                    return False
                self._hurry.set()
                self.spool.wake_reader()  # the exporter may be waiting up to 0.5 s for new records
                self._progress.wait(0.01)
        return False

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.wait_delivered(timeout_millis / 1000)

    def shutdown(self) -> None:
        self.force_flush(5_000)
        self._stopping.set()
        self._hurry.set()
        self._thread.join(timeout=5)
        self.spool.close()
        self.exporter.shutdown()  # type: ignore[no-untyped-call]
        if self.spool in _SPOOLS:
            _SPOOLS.remove(self.spool)


def _after_fork_in_child() -> None:
    for spool in list(_LIVE):
        with contextlib.suppress(Exception):
            spool._after_fork_in_child()
    for processor in list(_PROCESSORS):
        with contextlib.suppress(Exception):
            processor._after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)


def spool_metrics(meter_provider: Any, spools: Sequence[Spool]) -> None:
    """Export the spool's lag, size and drops as observable gauges."""
    from opentelemetry.metrics import CallbackOptions, Observation

    meter = meter_provider.get_meter("milvus_audit", __version__)

    def observe(read: Callable[[Spool], float]) -> Callable[[CallbackOptions], list[Observation]]:
        return lambda options: [Observation(read(spool), {"milvus_audit.spool.dir": str(spool.directory)})
                                for spool in spools]

    meter.create_observable_gauge("milvus_audit.spool.lag", [observe(lambda s: s.lag_records)], unit="{record}")
    meter.create_observable_gauge("milvus_audit.spool.size", [observe(lambda s: s.size_bytes)], unit="By")
    meter.create_observable_gauge("milvus_audit.spool.dropped", [observe(lambda s: s.dropped)], unit="{record}")
