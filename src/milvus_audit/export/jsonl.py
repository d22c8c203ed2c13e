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


class JsonlExporter(LogRecordExporter):
    """Appends milvus-audit records to a file, one JSON line each, thread-safely."""

    def __init__(self, path: str | Path, formatter: Formatter | None = None, *, file_mode: int = 0o600) -> None:
        if not isinstance(file_mode, int) or isinstance(file_mode, bool) or not 0 <= file_mode <= 0o777:
            raise ValueError(f"file_mode must be permission bits such as 0o600, not {file_mode!r}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] = open_append(self.path, file_mode)
        self._formatter = formatter
        self._lock = threading.Lock()
        self.exported = 0  # records handed to `export`, kept or not: how far the writer got

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
        with self._lock:
            if self._file.closed:
                return LogRecordExportResult.FAILURE
            self._file.write("".join(lines))
            self._file.flush()
        return LogRecordExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        with self._lock:
            if not self._file.closed:
                self._file.flush()
        return True

    def shutdown(self) -> None:
        with self._lock:
            self._file.close()


class JsonlProcessor(LogRecordProcessor):
    """The SDK's batch processor in front of the file, without its drops.

    The SDK's batch processor drops records when its queue is full, and a writer thread
    starved of the GIL by busy application threads is enough to fill it. A local file can
    always be written, so once `max_pending` records wait, the emitting thread writes them
    itself (back-pressure) and nothing is lost.
    """

    def __init__(self, exporter: JsonlExporter, max_pending: int = 4096) -> None:
        self._exporter = exporter
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
