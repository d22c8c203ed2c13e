"""The JSONL audit file: one JSON object per record, a contract that replay, verify and
SIEM tools read.

Each line has `timestamp` (RFC 3339, UTC, microseconds), `event_name`,
`severity_text`, `trace_id` and `span_id` (lowercase hex, "" when absent),
`attributes` (flat) and `resource` (flat). JSON escaping keeps every line one
record, whatever the attribute values contain. A file the exporter creates gets mode
0600 (owner only) unless `file_mode` says otherwise; an existing file keeps its mode.

`read_jsonl` and `iter_jsonl` read every format the product writes (otel, ECS, OCSF),
plain or gzip, and refuse anything else with an error naming the file and line.
"""

from __future__ import annotations

import gzip
import io
import itertools
import json
import os
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import IO, Any

from opentelemetry.sdk._logs import LogRecordProcessor, ReadableLogRecord, ReadWriteLogRecord
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExporter, LogRecordExportResult

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
EVENT_PREFIX = "milvus."


def rfc3339(timestamp_ns: int) -> str:
    """`2026-11-27T06:42:07.123456Z` from nanoseconds since the epoch."""
    moment = _EPOCH + timedelta(microseconds=timestamp_ns // 1000)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_rfc3339(text: str) -> int:
    """Nanoseconds since the epoch from a JSONL `timestamp`."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def _plain(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, bytes):
        return value.hex()
    return value


def to_otel_json(record: ReadableLogRecord) -> dict[str, Any]:
    """The core JSONL object for one SDK log record."""
    log = record.log_record
    attributes: Mapping[str, Any] = log.attributes or {}
    return {
        "timestamp": rfc3339(log.timestamp or log.observed_timestamp or 0),
        "event_name": log.event_name or "",
        "severity_text": log.severity_text or "",
        "trace_id": f"{log.trace_id:032x}" if log.trace_id else "",
        "span_id": f"{log.span_id:016x}" if log.span_id else "",
        "attributes": {key: _plain(value) for key, value in attributes.items()},
        "resource": {key: _plain(value) for key, value in record.resource.attributes.items()},
    }


Formatter = Callable[[dict[str, Any]], Any]


def open_append(path: Path, file_mode: int) -> IO[str]:
    """`path` opened for appending text; created with exactly `file_mode` (the umask does
    not widen or narrow it), an existing file's mode left as it is."""
    flags = os.O_WRONLY | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, file_mode)
        try:
            if hasattr(os, "fchmod"):
                os.fchmod(fd, file_mode)
            else:  # pragma: no cover - Windows
                os.chmod(path, file_mode)
        except BaseException:
            os.close(fd)
            raise
    except FileExistsError:
        fd = os.open(path, flags)
    return open(fd, "a", encoding="utf-8")


RetentionRecorder = Callable[[dict[str, Any]], None]


def _positive(name: str, value: Any, kind: type | tuple[type, ...] = (int, float)) -> None:
    if value is None:
        return
    number: float = value if isinstance(value, (int, float)) else 0
    if isinstance(value, bool) or not isinstance(value, kind) or not number > 0:
        raise ValueError(f"{name} must be a positive number, not {value!r}")


class JsonlExporter(LogRecordExporter):
    """Appends milvus-audit records to a file, one JSON line each, thread-safely.

    Rotation (each optional): `max_bytes` (the file is rotated before a batch would take it
    past this size), `rotate_interval` (seconds since the file was opened), `backups` (rotated
    files kept: `audit.jsonl.1` is the newest), `compress` (rotated files gzipped, `.gz`),
    `retention_days` (rotated files older than this are deleted). Rotation happens between
    batches, never inside a record, so the chain simply continues in the next file and
    `milvus-audit verify` reads the rotated set as one stream. Rotated and compressed files
    keep the live file's mode. Each deletion (retention, or beyond `backups`) is reported to
    `on_retention` (the emitter records it as `milvus.audit.retention`) with the file, its
    streams, their seq range and each stream's last chain value in it.

    The file is reopened when something else moves or removes it (logrotate `create`) and
    carries on at its new end when it is truncated (`copytruncate`), as WatchedFileHandler does.
    """

    def __init__(self, path: str | Path, formatter: Formatter | None = None, *, file_mode: int = 0o600,
                 max_bytes: int | None = None, rotate_interval: float | None = None, backups: int | None = None,
                 compress: bool = False, retention_days: float | None = None) -> None:
        if not isinstance(file_mode, int) or isinstance(file_mode, bool) or not 0 <= file_mode <= 0o777:
            raise ValueError(f"file_mode must be permission bits such as 0o600, not {file_mode!r}")
        _positive("jsonl_max_bytes", max_bytes, int)
        _positive("jsonl_rotate_interval", rotate_interval)
        _positive("jsonl_retention_days", retention_days)
        if backups is not None and (isinstance(backups, bool) or not isinstance(backups, int) or backups < 0):
            raise ValueError(f"jsonl_backups must be a number of files (0 or more), not {backups!r}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file_mode = file_mode
        self.max_bytes = max_bytes
        self.rotate_interval = rotate_interval
        self.backups = backups
        self.compress = bool(compress)
        self.retention_days = retention_days
        self.on_retention: RetentionRecorder | None = None
        self.pending_retention: list[dict[str, Any]] = []
        self._file: IO[str] = open_append(self.path, file_mode)
        self._identity = self._fd_identity()
        self._size = os.fstat(self._file.fileno()).st_size
        self._opened = time.monotonic()
        self._swept = 0.0
        self._formatter = formatter
        self._lock = threading.Lock()
        self.exported = 0  # records handed to `export`, kept or not: how far the writer got
        self.rotations = 0
        if retention_days is not None:
            with self._lock:
                self._sweep()

    # -- rotation ----------------------------------------------------------------------
    def _fd_identity(self) -> tuple[int, int]:
        st = os.fstat(self._file.fileno())
        return (st.st_dev, st.st_ino)

    def _follow_external(self) -> None:
        """WatchedFileHandler semantics: reopen when the path is no longer our file (moved or
        removed: logrotate `create`); follow a truncation (`copytruncate`)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            st = None
        if st is None or (st.st_dev, st.st_ino) != self._identity:
            self._file.close()
            self._file = open_append(self.path, self.file_mode)
            self._identity = self._fd_identity()
            self._size = os.fstat(self._file.fileno()).st_size
            self._opened = time.monotonic()
        elif st.st_size < self._size:
            self._size = st.st_size  # truncated under us: O_APPEND writes at the new end

    def _rotated(self, index: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{index}")

    def rotated_files(self) -> list[Path]:
        """The rotated files of this path (`name.N` and `name.N.gz`), newest first."""
        found: list[tuple[int, Path]] = []
        prefix = self.path.name + "."
        for candidate in self.path.parent.iterdir():
            name = candidate.name
            if not name.startswith(prefix):
                continue
            number = name[len(prefix):].removesuffix(".gz")
            if number.isdigit():
                found.append((int(number), candidate))
        return [path for _, path in sorted(found)]

    def _due(self, incoming: int) -> bool:
        if self._size == 0:
            return False
        if self.max_bytes is not None and self._size + incoming > self.max_bytes:
            return True
        return self.rotate_interval is not None and time.monotonic() - self._opened >= self.rotate_interval

    def rotate(self) -> None:
        """Rotate now (between batches): name.N -> name.N+1, the live file -> name.1 (gzipped with
        `compress`), then a new live file; files beyond `backups` and past retention are deleted."""
        with self._lock:
            if not self._file.closed:
                self._rotate()

    def _rotate(self) -> None:
        self._file.flush()
        mode = os.fstat(self._file.fileno()).st_mode & 0o777
        self._file.close()
        self._sweep()  # before the names shift: a deletion names the file as it was
        for path in reversed(self.rotated_files()):
            suffix = ".gz" if path.name.endswith(".gz") else ""
            number = int(path.name[len(self.path.name) + 1:].removesuffix(".gz"))
            os.replace(path, self._rotated(number + 1).with_name(self._rotated(number + 1).name + suffix))
        first = self._rotated(1)
        if os.path.exists(self.path):
            os.replace(self.path, first)
            if self.compress:
                _gzip_file(first, first.with_name(first.name + ".gz"), mode)
        self._file = open_append(self.path, self.file_mode)
        self._identity = self._fd_identity()
        self._size = 0
        self._opened = time.monotonic()
        self.rotations += 1
        if self.backups is not None:
            for path in self.rotated_files()[self.backups:]:
                self._delete(path, "backups")

    def _sweep(self) -> None:
        """Delete rotated files older than `retention_days` (by modification time), recording each."""
        self._swept = time.monotonic()
        if self.retention_days is None:
            return
        horizon = time.time() - self.retention_days * 86_400
        for path in self.rotated_files():
            try:
                if path.stat().st_mtime < horizon:
                    self._delete(path, "age")
            except FileNotFoundError:
                continue

    def _delete(self, path: Path, reason: str) -> None:
        attributes = summarize_file(path)
        attributes["milvus_audit.retention.reason"] = reason
        os.unlink(path)
        if self.on_retention is not None:
            self.on_retention(attributes)
        else:
            self.pending_retention.append(attributes)

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        self.exported += len(batch)  # one export at a time: the batch processor holds its export lock
        lines = []
        for record in batch:
            if not (record.log_record.event_name or "").startswith(EVENT_PREFIX):
                continue
            obj: Any = to_otel_json(record)
            if self._formatter is not None:
                obj = self._formatter(obj)
            text = obj if isinstance(obj, str) else json.dumps(obj, separators=(",", ":"), default=str)
            lines.append(text + "\n")
        data = "".join(lines)
        size = len(data) if data.isascii() else len(data.encode("utf-8"))
        with self._lock:
            if self._file.closed:
                return LogRecordExportResult.FAILURE
            try:
                self._follow_external()
                if self._due(size):
                    self._rotate()
                elif self.retention_days is not None and time.monotonic() - self._swept > 3600:
                    self._sweep()
            except OSError:  # rotation failed (a full disk, a permission): keep writing where we can
                if self._file.closed:
                    self._file = open_append(self.path, self.file_mode)
                    self._identity = self._fd_identity()
            self._file.write(data)
            self._file.flush()
            self._size += size
        return LogRecordExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        with self._lock:
            if not self._file.closed:
                self._file.flush()
        return True

    def shutdown(self) -> None:
        with self._lock:
            self._file.close()


def _gzip_file(source: Path, target: Path, mode: int) -> None:
    """`source` gzipped into `target` (created with `mode`), then `source` removed."""
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), mode)
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, mode)
        with open(fd, "wb", closefd=False) as raw, gzip.GzipFile(fileobj=raw, mode="wb",
                                                                 filename=source.name) as zipped, \
                source.open("rb") as plain:
            while chunk := plain.read(1 << 20):
                zipped.write(chunk)
            zipped.flush()
        os.fsync(fd)
    finally:
        os.close(fd)
    os.unlink(source)


def summarize_file(path: Path) -> dict[str, Any]:
    """What a `milvus.audit.retention` record says of a file about to be deleted: per stream in
    it (in order of appearance), the first and last seq and the last chain value."""
    streams: dict[str, list[Any]] = {}
    records = 0
    try:
        for _, record in iter_jsonl(path):
            records += 1
            attributes = record.get("attributes") or record.get("milvus") or record.get("unmapped") or {}
            stream = attributes.get("milvus_audit.stream")
            if not isinstance(stream, str):
                continue
            seq = attributes.get("milvus_audit.seq")
            entry = streams.setdefault(stream, [seq, seq, ""])
            entry[1] = seq
            chain = attributes.get("milvus_audit.chain")
            if isinstance(chain, str):
                entry[2] = chain
    except (JsonlError, OSError):
        pass  # an unreadable file is still deleted by policy; what could be read is recorded
    try:
        mtime = os.stat(path).st_mtime
    except OSError:
        mtime = 0.0
    return {
        "milvus_audit.retention.file": str(path),
        "milvus_audit.retention.streams": list(streams),
        "milvus_audit.retention.seq_first": [int(v[0] or 0) for v in streams.values()],
        "milvus_audit.retention.seq_last": [int(v[1] or 0) for v in streams.values()],
        "milvus_audit.retention.final_chain": [v[2] for v in streams.values()],
        "milvus_audit.retention.records": records,
        "milvus_audit.retention.mtime": rfc3339(int(mtime * 1e9)),
    }


class JsonlProcessor(LogRecordProcessor):
    """The SDK's batch processor in front of the file, without its drops.

    The SDK's batch processor drops records when its queue is full, and a writer thread
    starved of the GIL by busy application threads is enough to fill it. A local file can
    always be written, so once `max_pending` records wait, the emitting thread writes them
    itself (back-pressure) and nothing is lost.
    """

    def __init__(self, exporter: JsonlExporter, max_pending: int = 4096) -> None:
        self._exporter = exporter
        self.exporter = exporter
        self._batch = BatchLogRecordProcessor(exporter, max_queue_size=2 * max_pending,
                                              max_export_batch_size=min(512, max_pending))
        self._emitted = itertools.count(1)  # next() is atomic: threads may emit at once
        self._max_pending = max_pending

    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        self._batch.on_emit(log_record)
        if next(self._emitted) - self._exporter.exported >= self._max_pending:
            self._batch.force_flush()  # exports on this thread, under the processor's export lock

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._batch.force_flush(timeout_millis)

    def shutdown(self) -> None:
        self._batch.shutdown()  # type: ignore[no-untyped-call]  # the SDK leaves it untyped


# -- reading ---------------------------------------------------------------------------
STDIN = "-"  # read_jsonl("-") reads standard input
MAX_LINE_BYTES = 64 * 1024 * 1024
_GZIP_MAGIC = b"\x1f\x8b"
_UNREAD_MAGIC = ((b"BZh", "bzip2"), (b"\xfd7zXZ\x00", "xz"), (b"\x28\xb5\x2f\xfd", "zstd"),
                 (b"PK\x03\x04", "zip"), (b"PK\x05\x06", "zip"), (b"7z\xbc\xaf\x27\x1c", "7z"),
                 (b"\x04\x22\x4d\x18", "lz4"))
_JSON_TYPES = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean",
               type(None): "null", dict: "an object"}
# Per format (how `core_record` in integrity/verify.py tells them apart): where the
# timestamp is, and which members must be objects when present.
_CORE_OBJECTS = ("attributes", "resource")
_ECS_OBJECTS = ("event", "milvus")
_OCSF_OBJECTS = ("metadata", "unmapped")


class JsonlError(ValueError):
    """A line that is not an audit record: names the file and the line (1-based).

    `torn` is true when that line is the file's last and ends without a newline: a write
    that was cut (a crash, a full disk, a file still being written), not a forged line."""

    def __init__(self, path: str | Path, line: int, reason: str, *, torn: bool = False) -> None:
        super().__init__(f"{path}:{line}: {reason}")
        self.path = str(path)
        self.line = line
        self.reason = reason
        self.torn = torn


def _json_type(value: Any) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


@contextmanager
def _open_binary(path: str | Path, raw_out: list[IO[bytes]] | None = None) -> Iterator[IO[bytes]]:
    """The file's bytes, gunzipped when it is gzip (by its magic bytes); `-` is standard input.

    Other compressed formats are refused by name rather than parsed as garbage. `raw_out`,
    when given, receives the underlying (compressed) file, whose position is the progress."""
    stdin = str(path) == STDIN
    source: IO[bytes] = sys.stdin.buffer if stdin else Path(path).open("rb")
    try:
        raw = source
        if isinstance(source, io.BufferedReader):
            head = source.peek(8)[:8]
        else:  # a standard input without peek(): read it whole
            data = source.read()
            raw, head = io.BytesIO(data), data[:8]
        if raw_out is not None:
            raw_out.append(raw)
        if head.startswith(_GZIP_MAGIC):
            with gzip.GzipFile(fileobj=raw, mode="rb") as unzipped:
                yield unzipped  # type: ignore[misc]  # GzipFile is an IO[bytes]
            return
        for magic, name in _UNREAD_MAGIC:
            if head.startswith(magic):
                raise JsonlError(path, 1, f"a {name}-compressed file, a format milvus-audit does not read "
                                          "(decompress it first; gzip is read as is)")
        yield raw
    finally:
        if not stdin:
            source.close()


Progress = Callable[[int], None]  # called with the bytes of the file read since the last call
_PROGRESS_EVERY = 2048  # lines


def _position(raw: IO[bytes]) -> int:
    try:
        return raw.tell()
    except (OSError, ValueError):  # a pipe: no position
        return 0


def _lines(path: str | Path, handle: IO[bytes]) -> Iterator[tuple[int, bytes]]:
    number = 0
    while True:
        try:
            raw = handle.readline(MAX_LINE_BYTES + 1)
        except (EOFError, OSError, zlib.error) as exc:  # a truncated or corrupt gzip stream
            raise JsonlError(path, number + 1, f"unreadable compressed data: {exc}") from exc
        if not raw:
            return
        number += 1
        if len(raw) > MAX_LINE_BYTES:
            raise JsonlError(path, number, f"a line longer than {MAX_LINE_BYTES >> 20} MiB: not an audit record")
        yield number, raw


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _timestamp(record: dict[str, Any]) -> tuple[str, Any, tuple[str, ...]]:
    """(where the format keeps the timestamp, its value or None, the members that must be objects)."""
    if "@timestamp" in record:  # ECS
        return "@timestamp", record["@timestamp"], _ECS_OBJECTS
    if "class_uid" in record:  # OCSF
        metadata = record.get("metadata")
        value = metadata.get("original_time") if isinstance(metadata, dict) else None
        return "metadata.original_time", value, _OCSF_OBJECTS
    return "timestamp", record.get("timestamp"), _CORE_OBJECTS


def check_record(path: str | Path, line: int, record: Any) -> dict[str, Any]:
    """The record if it has the shape every reader relies on (an object, an RFC 3339
    timestamp with a time zone, objects where objects belong); else a `JsonlError`."""
    if not isinstance(record, dict):
        raise JsonlError(path, line, f"{_json_type(record)}, not an audit record (one JSON object per line)")
    field, value, objects = _timestamp(record)
    for member in objects:
        if record.get(member) is not None and not isinstance(record[member], dict):
            raise JsonlError(path, line, f"`{member}` is {_json_type(record[member])}, not an object")
    if value is None:
        raise JsonlError(path, line, f"no `{field}`: not an audit record")
    if not isinstance(value, str):
        raise JsonlError(path, line, f"`{field}` is {_json_type(value)}, not an RFC 3339 time string")
    try:
        if len(value) > 64:
            raise ValueError("too long")
        zone = datetime.fromisoformat(value.replace("Z", "+00:00")).tzinfo
    except ValueError:
        raise JsonlError(path, line, f"`{field}` {value[:64]!r} is not an RFC 3339 time") from None
    if zone is None:
        raise JsonlError(path, line, f"`{field}` {value!r} has no time zone (RFC 3339 needs Z or an offset)")
    return record


def iter_jsonl(path: str | Path, *, reject_duplicate_keys: bool = False,
               progress: Progress | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, record) for each non-blank line of a JSONL audit file written as otel,
    ECS or OCSF, plain or gzip (`-` reads standard input). One line at a time: memory does
    not grow with the file.

    Anything else raises `JsonlError` naming the file and line: bytes that are not UTF-8,
    a line that is not JSON, a JSON value that is not an object, a record without an
    RFC 3339 timestamp (with a time zone), a compressed format other than gzip, and, with
    `reject_duplicate_keys`, an object with a key twice (readers disagree on which wins).
    A bad last line without a newline (a cut write) raises it with `torn` set.
    `progress` is called now and then with how many bytes of the file were read since.
    """
    hook = _unique_keys if reject_duplicate_keys else None
    raws: list[IO[bytes]] = []
    reported = 0
    with _open_binary(path, raws) as handle:
        for number, raw in _lines(path, handle):
            if progress is not None and number % _PROGRESS_EVERY == 0:
                position = _position(raws[0])
                if position > reported:
                    progress(position - reported)
                    reported = position
            try:
                text = raw.decode("utf-8")
                if number == 1:
                    text = text.removeprefix("\ufeff")
                if not text.strip(" \t\r\n"):
                    continue
                try:
                    record = json.loads(text, parse_constant=_no_constant, object_pairs_hook=hook)
                except json.JSONDecodeError as exc:
                    raise JsonlError(path, number, f"not JSON: {exc.msg} (column {exc.colno})") from None
                except RecursionError:
                    raise JsonlError(path, number, "not an audit record: JSON nested too deeply") from None
                except ValueError as exc:  # NaN/Infinity, duplicate keys, integers beyond the digit limit
                    raise JsonlError(path, number, f"not an audit record: {exc}") from None
            except UnicodeDecodeError as exc:
                error = JsonlError(path, number, f"not UTF-8 text (byte {exc.start}): binary data?")
                error.torn = not raw.endswith(b"\n")
                raise error from None
            except JsonlError as error:
                error.torn = not raw.endswith(b"\n")  # the last line, cut short
                raise
            yield number, check_record(path, number, record)
        if progress is not None:
            position = _position(raws[0]) if raws else 0
            if position > reported:
                progress(position - reported)


def read_jsonl(path: str | Path, *, reject_duplicate_keys: bool = False) -> list[dict[str, Any]]:
    """Parse a JSONL audit file (see `iter_jsonl`); a bad line raises `JsonlError` (a
    `ValueError`) naming the file and line."""
    return [record for _, record in iter_jsonl(path, reject_duplicate_keys=reject_duplicate_keys)]
