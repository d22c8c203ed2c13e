"""Parsing the Milvus proxy's access log into server records (`milvus.server.access`).

Each access line becomes a `ServerRecord` whose attributes carry the names client records
carry (`user.name`, `db.operation.name`, `milvus_audit.outcome`, ...), with
`milvus_audit.source="server"` and the raw RPC in `rpc.method`. What the RPC is (catalog
operation, category, whether it changes state) comes from the catalog (`model.catalog.RPCS`).
The server logs filter expressions raw: they are shaped by the same sanitizer and
`capture_filters` policy as client filters, and error messages are scrubbed the same way.

Lines that are not access lines (the rest of the server's stdout) are skipped and counted;
access lines that fit no formatter (truncated, garbled) are counted and reported with file
and line, never fatal.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from milvus_audit import semconv
from milvus_audit.model.catalog import rpc_lookup
from milvus_audit.model.failures import (
    PERMISSION_DENIED,
    SERVER_SUCCESS_STATUSES,
    missing_privilege,
    server_failure_reason,
)
from milvus_audit.model.plan import filter_attribute
from milvus_audit.model.sanitize import scrub_message
from milvus_audit.serverlog.formats import Pattern, default_formats

__all__ = ["MAX_REPORTED_PROBLEMS", "AccessLogParser", "ParseStats", "ServerRecord", "parse_duration_ms",
           "parse_time_ns"]

MAX_REPORTED_PROBLEMS = 100
_ZERO_TRACE = "0" * 32
_ABSENT = frozenset({"", "Unknown", "unknown"})
_HEX = frozenset("0123456789abcdefABCDEF")


@dataclass(slots=True)
class ServerRecord:
    """One access line as a record: what `ingest` emits and `reconcile` joins."""

    timestamp_ns: int
    trace_id: int  # 0 when the server logged none (refused calls)
    attributes: dict[str, Any]
    failed: bool
    where: str = ""  # file:line

    @property
    def trace_hex(self) -> str:
        return f"{self.trace_id:032x}" if self.trace_id else ""


@dataclass
class ParseStats:
    """What a parser saw: lines, access lines, other lines skipped, malformed access lines."""

    lines: int = 0
    access: int = 0
    skipped: int = 0
    malformed: int = 0
    problems: list[str] = field(default_factory=list)  # the first MAX_REPORTED_PROBLEMS, "file:line: why"

    def report(self, where: str, why: str) -> None:
        self.malformed += 1
        if len(self.problems) < MAX_REPORTED_PROBLEMS:
            self.problems.append(f"{where}: {why}")


# -- field parsers -----------------------------------------------------------------------
_MIDNIGHT: dict[str, int] = {}
_SECONDS: dict[str, int] = {}  # `YYYY/MM/DD hh:mm:ss +zz:zz` -> ns: a busy log repeats each second many times


def parse_time_ns(text: str) -> int | None:
    """`2026/11/29 18:46:37.381 +00:00` (Go's `2006/01/02 15:04:05.000 -07:00`, what Milvus
    logs) or RFC 3339 as nanoseconds since the epoch; None when it is neither."""
    if len(text) == 30 and text[19] == "." and text[23] == " ":  # Milvus's own layout: one cache lookup
        key = text[:19] + text[23:]
        seconds_cached = _SECONDS.get(key)
        if seconds_cached is not None and text[20:23].isdigit():
            return seconds_cached + int(text[20:23]) * 1_000_000
        slow = parse_time_ns(text[:19] + text[23:] + " ")
        if slow is None or not text[20:23].isdigit():
            return None
        if len(_SECONDS) > 4096:
            _SECONDS.clear()
        _SECONDS[key] = slow
        return slow + int(text[20:23]) * 1_000_000
    text = text.strip()
    try:
        if len(text) >= 19 and text[4] in "/-" and text[10] in " T":
            day = text[:10]
            midnight = _MIDNIGHT.get(day)
            if midnight is None:
                midnight = calendar.timegm((int(day[0:4]), int(day[5:7]), int(day[8:10]), 0, 0, 0))
                if len(_MIDNIGHT) > 64:
                    _MIDNIGHT.clear()
                _MIDNIGHT[day] = midnight
            seconds = int(text[11:13]) * 3600 + int(text[14:16]) * 60 + int(text[17:19])
            rest = text[19:]
            fraction_ns = 0
            if rest.startswith("."):
                digits_end = 1
                while digits_end < len(rest) and rest[digits_end].isdigit():
                    digits_end += 1
                digits = rest[1:digits_end][:9]
                fraction_ns = int(digits.ljust(9, "0")) if digits else 0
                rest = rest[digits_end:]
            rest = rest.strip()
            offset = 0
            if rest and rest not in ("Z", "UTC"):
                sign = -1 if rest[0] == "-" else 1
                zone = rest[1:].replace(":", "")
                if rest[0] not in "+-" or len(zone) != 4 or not zone.isdigit():
                    return None
                offset = sign * (int(zone[:2]) * 3600 + int(zone[2:]) * 60)
            return (midnight + seconds - offset) * 1_000_000_000 + fraction_ns
    except ValueError:
        return None
    return None


_UNITS = {"ns": 1e-6, "us": 1e-3, "µs": 1e-3, "μs": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def parse_duration_ms(text: str) -> float | None:
    """A Go duration (`209.835953ms`, `1.5s`, `1m2.5s`, `87µs`) in milliseconds; None if it is not one."""
    text = text.strip()
    if not text:
        return None
    if text == "0" or text == "0s":
        return 0.0
    total = 0.0
    i, end = 0, len(text)
    while i < end:
        start = i
        while i < end and (text[i].isdigit() or text[i] == "."):
            i += 1
        if i == start:
            return None
        number = text[start:i]
        unit_start = i
        while i < end and not (text[i].isdigit() or text[i] == "."):
            i += 1
        scale = _UNITS.get(text[unit_start:i])
        if scale is None:
            return None
        try:
            total += float(number) * scale
        except ValueError:
            return None
    return total


def _address(text: str) -> tuple[str | None, int | None]:
    """`tcp-127.0.0.1:41162` → ("127.0.0.1", 41162); `tcp-[::1]:5` → ("::1", 5)."""
    text = text.strip()
    if text in _ABSENT:
        return None, None
    scheme, dash, rest = text.partition("-")
    if dash and scheme.isalpha() and len(scheme) <= 8:
        text = rest
    host, colon, port = text.rpartition(":")
    if not colon or not port.isdigit():
        return text.strip("[]") or None, None
    return host.strip("[]") or None, int(port)


def _names(text: str) -> list[str]:
    """Go's `[a b]` or `a,b` list of partition names."""
    text = text.strip().strip("[]")
    return [name for name in text.replace(",", " ").split() if name]


_MAX_CACHED_MESSAGE = 2048


@lru_cache(maxsize=1024)
def _scrubbed(message: str, expression: str, raw: bool) -> str:
    """Servers repeat their error messages (every refused login says the same): scrubbed once."""
    return scrub_message(message, filter_text=expression or None, secrets=(), raw_filters=raw)


def _common_prefix(patterns: Sequence[Pattern]) -> tuple[str, ...] | None:
    """The literals up to and around `$method_name` when every pattern shares them and the fields before."""
    if not patterns:
        return None
    first = patterns[0]
    index = first.fields.index("method_name")
    for pattern in patterns[1:]:
        if pattern.fields[:index + 1] != first.fields[:index + 1] or \
                pattern.literals[:index + 2] != first.literals[:index + 2]:
            return None
    return first.literals[:index + 2]


_STATIC: dict[str, dict[str, Any]] = {}
# Bounded caches of what busy logs repeat: durations (µs resolution repeats), connections' addresses.
_DURATIONS: dict[str, float] = {}
_ADDRESSES: dict[str, tuple[str | None, int | None]] = {}


def _static_attributes(method: str) -> dict[str, Any]:
    """What every record of an RPC carries, from the catalog (cached per method name)."""
    rpc = rpc_lookup(method)
    static: dict[str, Any] = {semconv.SOURCE: semconv.SOURCE_SERVER, semconv.DB_SYSTEM_NAME: "milvus",
                              semconv.RPC_METHOD: method, semconv.CATEGORY: rpc.category.value,
                              semconv.MUTATING: rpc.mutating}
    if rpc.operation is not None:
        static[semconv.DB_OPERATION_NAME] = rpc.operation
    if len(_STATIC) < 4096:
        _STATIC[method] = static
    return static


class AccessLogParser:
    """Turns access-log lines into `ServerRecord`s.

    `formats`: the compiled formatters (default: every default of 2.3 to 2.6);
    `capture_filters`: the client's policy for `db.query.text` (`sanitized`, `raw`, `none`);
    `server_address`: the Milvus the log came from, as `server.address`."""

    def __init__(self, formats: Sequence[Pattern] | None = None, *, capture_filters: str = "sanitized",
                 server_address: str | None = None) -> None:
        if capture_filters not in ("sanitized", "raw", "none"):
            raise ValueError(f"capture_filters must be sanitized, raw or none, not {capture_filters!r}")
        self.patterns = tuple(formats) if formats else default_formats()
        self.capture_filters = capture_filters
        self.server_address = server_address
        self.markers = tuple({p.marker for p in self.patterns if p.marker})
        self.stats = ParseStats()
        # When every formatter starts the same way up to $method_name (the defaults do), the method
        # is read once and picks the formatters that can hold the line: one full match per line.
        self._prefix = _common_prefix(self.patterns)
        self._by_method: dict[str, tuple[Pattern, ...]] = {}

    def _candidates(self, line: str) -> tuple[Pattern, ...] | None:
        """The formatters to try for `line`, or None when it cannot be an access line of any;
        the one that read this method's last line first (a log has one server version's format)."""
        prefix = self._prefix
        if prefix is None:
            return self.patterns
        literals = prefix
        first = literals[0]
        if first and not line.startswith(first):
            return None
        pos = len(first)
        end = pos
        for after in literals[1:]:
            end = line.find(after, pos)
            if end < 0:
                return None
            method_start, pos = pos, end + len(after)
        method = line[method_start:end].strip()
        found = self._by_method.get(method)
        if found is None:
            found = tuple(p for p in self.patterns if p.methods is None or method in p.methods)
            if len(self._by_method) < 4096:
                self._by_method[method] = found
        return found

    # -- lines -------------------------------------------------------------------------
    def parse_line(self, line: str, where: str = "") -> ServerRecord | None:
        """The record of one line; None for a line that is not an access line (counted as
        skipped) or a malformed one (counted, and reported with `where`)."""
        stats = self.stats
        stats.lines += 1
        line = line.rstrip("\r\n")
        candidates = self._candidates(line)
        for pattern in candidates or ():
            values = pattern.match(line)
            if values is None:
                continue
            fields = dict(zip(pattern.fields, values, strict=True))
            if pattern.methods is not None and fields["method_name"].strip() not in pattern.methods:
                continue
            record = self._record(fields)
            if isinstance(record, str):
                if pattern.methods is None:  # the base formatter was the last chance
                    stats.report(where, record)
                    return None
                continue
            record.where = where
            stats.access += 1
            if pattern is not candidates[0] and self._prefix is not None:  # type: ignore[index]
                method = fields["method_name"].strip()
                if method in self._by_method:
                    self._by_method[method] = (pattern, *(p for p in self._by_method[method] if p is not pattern))
            return record
        if any(marker in line for marker in self.markers):
            stats.report(where, "an access line that fits no formatter (truncated or garbled)")
        else:
            stats.skipped += 1
        return None

    def parse_lines(self, lines: Iterable[str], source: str = "") -> Iterator[ServerRecord]:
        for number, line in enumerate(lines, start=1):
            record = self.parse_line(line, f"{source}:{number}")
            if record is not None:
                yield record

    def parse_file(self, path: str) -> Iterator[ServerRecord]:
        with open(path, encoding="utf-8", errors="replace", newline="") as handle:
            yield from self.parse_lines(handle, path)

    # -- fields -> record ----------------------------------------------------------------
    def _record(self, fields: dict[str, str]) -> ServerRecord | str:
        """The record, or why the fields cannot be one."""
        method = fields["method_name"].strip()
        if not method or not method.isidentifier():
            return f"not an RPC method name: {method[:40]!r}"
        time_text = fields.get("time_now") or fields.get("time_end") or fields.get("time_start")
        if time_text is None:
            return "no $time_now in the format"
        timestamp_ns = parse_time_ns(time_text)
        if timestamp_ns is None:
            return f"not a time: {time_text[:40]!r}"
        cost = fields.get("time_cost")
        duration_ms = None
        if cost is not None:
            duration_ms = _DURATIONS.get(cost)
            if duration_ms is None:
                duration_ms = parse_duration_ms(cost)
                if duration_ms is not None and len(_DURATIONS) < 8192:
                    _DURATIONS[cost] = duration_ms
        if cost is not None and duration_ms is None:
            return f"not a duration: {cost[:40]!r}"
        static = _STATIC.get(method)
        if static is None:
            static = _static_attributes(method)
        attributes: dict[str, Any] = static.copy()
        user = fields.get("user_name", "").strip()
        if user not in _ABSENT:
            attributes[semconv.USER_NAME] = user
        user_addr = fields.get("user_addr")
        if user_addr is not None:
            found = _ADDRESSES.get(user_addr)
            if found is None:
                found = _address(user_addr)
                if len(_ADDRESSES) >= 8192:
                    _ADDRESSES.clear()
                _ADDRESSES[user_addr] = found
            address, port = found
            if address:
                attributes[semconv.CLIENT_ADDRESS] = address
            if port is not None:
                attributes[semconv.CLIENT_PORT] = port
        status = fields.get("method_status", "").strip()
        code = fields.get("error_code", "").strip()
        message = fields.get("error_msg", "").strip()
        failed = bool(status) and status not in SERVER_SUCCESS_STATUSES
        if not status:  # a format without $method_status: the error code says it
            failed = code not in ("", "0")
        attributes[semconv.OUTCOME] = semconv.FAILURE if failed else semconv.SUCCESS
        if status:
            attributes[semconv.SERVER_STATUS] = status
        if code:
            attributes[semconv.DB_RESPONSE_STATUS_CODE] = code
        expression = fields.get("method_expr", "").strip()
        if failed:
            reason = server_failure_reason(status, code, message)
            attributes[semconv.FAILURE_REASON] = reason
            if reason == PERMISSION_DENIED:
                privilege = missing_privilege(message, reason)
                if privilege:
                    attributes[semconv.MISSING_PRIVILEGE] = privilege
            error_type = fields.get("error_type", "").strip()
            if error_type:
                attributes[semconv.ERROR_TYPE] = error_type
        if message:
            partitions = fields.get("partition_name", "").strip().strip("[]").strip()
            raw = self.capture_filters == "raw"
            attributes[semconv.ERROR_MESSAGE] = (
                scrub_message(message, filter_text=expression or None, secrets=(), raw_filters=raw,
                              carried=_names(partitions)) if partitions or len(message) > _MAX_CACHED_MESSAGE
                else _scrubbed(message, expression, raw))
        if duration_ms is not None:
            attributes[semconv.DURATION_MS] = duration_ms
        database = fields.get("database_name", "").strip()
        if database and database not in _ABSENT:
            attributes[semconv.DB_NAMESPACE] = database
        collection = fields.get("collection_name", "").strip()
        if collection and collection not in _ABSENT:
            attributes[semconv.DB_COLLECTION_NAME] = collection
        if expression:
            shaped = filter_attribute(expression, self.capture_filters)
            if shaped is not None:
                attributes[semconv.DB_QUERY_TEXT] = shaped
        nq = fields.get("nq", "").strip()
        if nq.isdigit():
            attributes[semconv.DB_MILVUS_NQ] = int(nq)
        sdk = fields.get("sdk_version", "").strip()
        if sdk:
            attributes[semconv.SDK] = sdk
        if self.server_address:
            attributes[semconv.SERVER_ADDRESS] = self.server_address
        trace = fields.get("trace_id", "").strip()
        trace_id = int(trace, 16) if len(trace) == 32 and trace != _ZERO_TRACE and _HEX.issuperset(trace) else 0
        return ServerRecord(timestamp_ns, trace_id, attributes, failed)
