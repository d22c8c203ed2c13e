"""The durable spool: at-least-once delivery of audit records to the collector.

Every record is appended to a local, segmented, append-only spool before export.
A background exporter sends the spool over OTLP and deletes a segment only after the
collector acknowledged all of it, retrying with backoff forever. After a crash or
restart, whatever was not acknowledged is sent again; duplicates are recognisable by
`(milvus_audit.stream, milvus_audit.seq)`. Disk use is bounded: when full, either the
oldest segment is dropped and a `milvus.audit.gap` record says how many records were
lost, or (`on_full="fail"`) appends fail, which `AuditConfig(fail_closed=True)` turns
into refused calls.

Each entry is a 4-byte length, the record as JSON (the JSONL format, plus severity
number and scope) and a CRC32, so a write torn by a crash is found and cut on restart.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any, Literal

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

_SPOOLS: list[Spool] = []


def active_spools() -> list[Spool]:
    """Spools set up by `configure(spool_dir=...)` in this process (fail-closed checks them)."""
    return list(_SPOOLS)


class Spool:
    """Segmented append-only record files with a persisted acknowledgement cursor."""

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
        self.dropped = 0  # records lost to drop_oldest, or refused by a full "fail" spool
        self.write_errors = 0
        self._lock = threading.Lock()
        self._has_data = threading.Condition(self._lock)
        self._last_fsync = time.monotonic()
        self._segments: list[tuple[int, int, int]] = []  # (number, bytes, records)
        self._unreported_gap = 0  # records dropped and not yet reported in a delivered gap record
        self._read_end = (0, 0)  # the exporter holds the records between the cursor and here
        self._dropped_in_flight = 0  # dropped from disk while in flight: lost only if that export fails
        self._largest_entry = 1024
        self._cursor = self._load_cursor()
        self._recover()
        self._file: IO[bytes] | None = None

    # -- files ------------------------------------------------------------------------
    def _path(self, number: int) -> Path:
        return self.directory / f"{number:012d}{_SEGMENT_SUFFIX}"

    def _load_cursor(self) -> tuple[int, int]:
        try:
            data = json.loads((self.directory / _CURSOR).read_text())
            self._unreported_gap = int(data.get("unreported_gap", 0))
            return int(data["segment"]), int(data["offset"])
        except (OSError, ValueError, KeyError):
            return 0, 0

    def _save_cursor(self) -> None:
        temporary = self.directory / (_CURSOR + ".tmp")
        temporary.write_text(json.dumps({"segment": self._cursor[0], "offset": self._cursor[1],
                                         "unreported_gap": self._unreported_gap}))
        os.replace(temporary, self.directory / _CURSOR)

    def _recover(self) -> None:
        """Index the segments on disk; cut a record torn by a crash."""
        for path in sorted(self.directory.glob("*" + _SEGMENT_SUFFIX)):
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
        """Can a record be durably written now? (False when full under on_full="fail", or after I/O errors.)"""
        if self.on_full == "fail" and self.size_bytes + self._largest_entry > self.max_bytes:
            return False  # the next record would not fit
        return os.access(self.directory, os.W_OK)

    # -- writing ----------------------------------------------------------------------
    def append(self, record: dict[str, Any]) -> bool:
        body = json.dumps(record, separators=(",", ":"), default=str).encode()
        entry = _HEADER.pack(len(body)) + body + struct.pack(">I", zlib.crc32(body))
        with self._lock:
            self._largest_entry = max(self._largest_entry, len(entry))
            try:
                if self.size_bytes + len(entry) > self.max_bytes and not self._make_room(len(entry)):
                    self.dropped += 1
                    return False
                self._write(entry)
            except OSError as exc:
                self.write_errors += 1
                log.warning("milvus-audit spool: cannot write to %s: %s", self.directory, exc)
                return False
            self._has_data.notify_all()
            return True

    def _write(self, entry: bytes) -> None:
        if self._file is None or not self._segments or self._segments[-1][1] >= self.segment_bytes:
            self._rotate()
        assert self._file is not None
        self._file.write(entry)
        self._file.flush()
        number, size, records = self._segments[-1]
        self._segments[-1] = (number, size + len(entry), records + 1)
        if self.fsync == "always" or (self.fsync == "interval"
                                      and time.monotonic() - self._last_fsync >= self.fsync_interval_s):
            os.fsync(self._file.fileno())
            self._last_fsync = time.monotonic()

    def _rotate(self) -> None:
        if self._file is not None:
            if self.fsync != "never":
                os.fsync(self._file.fileno())
            self._file.close()
        number = self._segments[-1][0] + 1 if self._segments else max(self._cursor[0], 1)
        self._segments.append((number, 0, 0))
        self._file = self._path(number).open("ab")

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
        data = self._path(number).read_bytes()[start:end]
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
    def read(self, limit: int, wait_s: float = 0.5) -> tuple[list[dict[str, Any]], tuple[int, int, int]]:
        """Up to `limit` unacknowledged records (a gap record first, if records were dropped),
        and the cursor to `ack` once they are delivered. The lock is held while the raw entries
        are read, not while they are decoded, so writers wait as little as possible."""
        bodies: list[bytes] = []
        with self._lock:
            if not self._unread():
                self._has_data.wait(wait_s)
            segment, offset = self._cursor
            gap = self._unreported_gap
            wanted = limit - 1 if gap else limit
            for number, size, _ in list(self._segments):
                if number < segment:
                    continue
                if number > segment:
                    segment, offset = number, 0
                if offset >= size:
                    continue
                if self._file is not None:
                    self._file.flush()
                with self._path(number).open("rb") as handle:
                    handle.seek(offset)
                    data = handle.read(min(size - offset, (wanted - len(bodies)) * self._largest_entry))
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
            self._read_end = (segment, offset)
        records: list[dict[str, Any]] = [self.gap_record(gap)] if gap else []
        records.extend(json.loads(body) for body in bodies)
        return records, (segment, offset, gap)

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
        with self._lock:
            if self._file is not None:
                if self.fsync != "never":
                    os.fsync(self._file.fileno())
                self._file.close()
                self._file = None


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
    """Appends each milvus-audit record to the spool; a thread exports the spool with retries."""

    def __init__(self, spool: Spool, exporter: LogRecordExporter, *, batch_size: int = 512,
                 max_backoff_s: float = 5.0, linger_s: float = 0.05,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.spool = spool
        self.exporter = exporter
        self.batch_size = batch_size
        self.linger_s = linger_s  # after a partial batch, let the next one gather (as the SDK's batch delay)
        self._hurry = threading.Event()  # set by force_flush: deliver now
        self.max_backoff_s = max_backoff_s
        self.delivered = 0
        self.failed_exports = 0
        self._sleep = sleep
        self._stopping = threading.Event()
        self._thread = background_thread(self._run, "milvus-audit-spool")
        self._thread.start()
        _SPOOLS.append(spool)

    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        if (log_record.log_record.event_name or "").startswith(EVENT_PREFIX):
            self.spool.append(to_spool_record(log_record))

    def _run(self) -> None:
        backoff = 0.1
        while not self._stopping.is_set():
            records, cursor = self.spool.read(self.batch_size)
            if not records:
                continue
            try:
                result = self.exporter.export([from_spool_record(r) for r in records])
            except Exception as exc:
                log.warning("milvus-audit spool: export raised %r", exc)
                result = LogRecordExportResult.FAILURE
            if result is LogRecordExportResult.SUCCESS:
                self.spool.ack(cursor)
                self.delivered += len(records)
                backoff = 0.1
                if len(records) < self.batch_size:
                    self._hurry.wait(self.linger_s)
                    self._hurry.clear()
            else:
                self.spool.nack()
                self.failed_exports += 1
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, self.max_backoff_s)

    def wait_delivered(self, timeout_s: float = 30.0) -> bool:
        """Block until everything spooled so far is acknowledged."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.spool.pending():
                return True
            self._hurry.set()
            time.sleep(0.01)
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
