"""The access log's formats: Milvus's `$placeholder` format strings, compiled into linear-time matchers.

The proxy writes each access line with a *formatter*: a format string such as
`[$time_now] [ACCESS] <$user_name: $user_addr> $method_name [status: $method_status] ...`
and the RPC methods it is for (`base` serves every other method). A format compiles to
its literal pieces and its fields; a line matches when it starts with the first literal,
each field runs to the next occurrence of the literal that follows it, and the last
literal ends the line. That is a handful of `str.find` calls per line: no regular
expression, nothing that can backtrack, linear in the line's length whatever it holds.

`DEFAULT_FORMATS` holds the defaults of Milvus 2.3 to 2.6; `formats_from_milvus_yaml` reads
the formatters of a server's `milvus.yaml` (`proxy.accessLog.formatters`), and
`formats_from_string` takes one format string for every method.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

__all__ = ["BASE_FORMAT", "DEFAULT_FORMATS", "FIELDS", "FormatError", "Pattern", "compile_format",
           "default_formats", "formats_from_milvus_yaml", "formats_from_string"]

# Every placeholder a Milvus formatter knows (2.3 to 2.6), from the server's source.
FIELDS = frozenset({
    "method_name", "method_status", "method_expr", "trace_id", "user_addr", "user_name", "response_size",
    "error_code", "error_msg", "error_type", "database_name", "collection_name", "partition_name", "time_cost",
    "time_now", "time_start", "time_end", "output_fields", "sdk_version", "cluster_prefix", "consistency_level",
    "anns_field", "nq", "search_params", "query_params",
})

BASE_FORMAT = ("[$time_now] [ACCESS] <$user_name: $user_addr> $method_name [status: $method_status] "
               "[code: $error_code] [sdk: $sdk_version] [msg: $error_msg] [traceID: $trace_id] "
               "[timeCost: $time_cost]")
_QUERY_2_3 = BASE_FORMAT + (" [database: $database_name] [collection: $collection_name] "
                            "[partitions: $partition_name] [expr: $method_expr]")
_QUERY_2_6 = _QUERY_2_3 + " [params: $query_params]"
_SEARCH_2_6 = _QUERY_2_3 + " [nq: $nq] [params: $search_params]"


class FormatError(ValueError):
    """A format string or milvus.yaml that cannot be compiled; the message says where."""


@dataclass(frozen=True, slots=True)
class Pattern:
    """One compiled formatter: `literals[0] field[0] literals[1] ... field[n-1] literals[n]`."""

    name: str
    format: str
    literals: tuple[str, ...]
    fields: tuple[str, ...]
    methods: frozenset[str] | None  # None: every method (the base formatter)
    marker: str | None  # a literal that only access lines carry ("[ACCESS]"), to tell malformed from foreign
    required: tuple[str, ...] = ()  # literals the other formatters lack: a cheap test before matching

    def match(self, line: str) -> list[str] | None:
        """The field values of `line`, or None when it does not have this shape. Linear in `line`."""
        literals = self.literals
        first = literals[0]
        if first and not line.startswith(first):
            return None
        for literal in self.required:
            if literal not in line:
                return None
        pos = len(first)
        values: list[str] = []
        append = values.append
        find = line.find
        for after in literals[1:-1]:
            end = find(after, pos)
            if end < 0:
                return None
            append(line[pos:end])
            pos = end + len(after)
        last = literals[-1]
        end = len(line) - len(last)
        if end < pos or (last and not line.endswith(last)):
            return None
        append(line[pos:end])
        return values


def _split(fmt: str) -> tuple[list[str], list[str]]:
    literals: list[str] = []
    fields: list[str] = []
    piece: list[str] = []
    i, end = 0, len(fmt)
    while i < end:
        char = fmt[i]
        if char == "$":
            j = i + 1
            while j < end and (fmt[j].isalnum() or fmt[j] == "_") and fmt[j].isascii():
                j += 1
            name = fmt[i + 1:j]
            if name in FIELDS:
                literals.append("".join(piece))
                piece = []
                fields.append(name)
                i = j
                continue
        piece.append(char)
        i += 1
    literals.append("".join(piece))
    return literals, fields


def compile_format(fmt: str, name: str = "custom", methods: Iterable[str] | None = None) -> Pattern:
    """Compile a Milvus access-log format string. Placeholders must be separated by literal
    text (two adjacent placeholders cannot be told apart) and the format needs `$method_name`."""
    fmt = " ".join(fmt.split())  # YAML folds long formats over lines; Milvus's own loader does the same
    literals, fields = _split(fmt)
    if not fields:
        raise FormatError(f"format {name!r} has no $placeholder")
    if "method_name" not in fields:
        raise FormatError(f"format {name!r} has no $method_name: its lines cannot be attributed to a call")
    for index, literal in enumerate(literals[1:-1], start=1):
        if literal == "":
            raise FormatError(f"format {name!r}: ${fields[index - 1]} and ${fields[index]} are adjacent; "
                              "put literal text between placeholders")
    if len(set(fields)) != len(fields):
        raise FormatError(f"format {name!r} repeats a placeholder")
    candidates = [literal.strip() for literal in literals if "[ACCESS]" in literal]
    marker = "[ACCESS]" if candidates else max((lit.strip() for lit in literals), key=len, default="")
    return Pattern(name, fmt, tuple(literals), tuple(fields),
                   frozenset(methods) if methods is not None else None, marker if len(marker) >= 6 else None)


def _ordered(patterns: Sequence[Pattern]) -> tuple[Pattern, ...]:
    """Method-specific formatters first (most literals first), the base formatter last; each knows
    the literals that set it apart from the others (tested with `in` before a full match)."""
    ordered = sorted(patterns, key=lambda p: (p.methods is None, -len(p.literals)))
    out = []
    for pattern in ordered:
        others = [other for other in ordered if other is not pattern]
        required = tuple(literal for literal in dict.fromkeys(pattern.literals)
                         if literal.strip() and others and all(literal not in other.literals for other in others))
        out.append(replace(pattern, required=required[:2]))
    return tuple(out)


DEFAULT_FORMATS: Mapping[str, tuple[Pattern, ...]] = {
    "2.3": _ordered([compile_format(BASE_FORMAT, "base"),
                     compile_format(_QUERY_2_3, "query", ["Query", "Search", "Delete"])]),
    "2.6": _ordered([compile_format(BASE_FORMAT, "base"),
                     compile_format(_QUERY_2_6, "query", ["Query", "Delete"]),
                     compile_format(_SEARCH_2_6, "search", ["HybridSearch", "Search"])]),
}
# 2.4 and 2.5 ship the formatters of 2.3.
for _version in ("2.4", "2.5"):
    DEFAULT_FORMATS = {**DEFAULT_FORMATS, _version: DEFAULT_FORMATS["2.3"]}


def default_formats() -> tuple[Pattern, ...]:
    """Every default formatter of 2.3 to 2.6 at once: a line of any of those versions parses."""
    seen: dict[str, Pattern] = {}
    for patterns in DEFAULT_FORMATS.values():
        for pattern in patterns:
            seen.setdefault(f"{pattern.format}\x00{sorted(pattern.methods or ())}", pattern)
    # The 2.6 search/query formatters also fit lines of methods 2.3 gives its query formatter,
    # and vice versa: a line is tried against every formatter that names its method.
    return _ordered([Pattern(p.name, p.format, p.literals, p.fields,
                             None if p.methods is None else frozenset({"Query", "Search", "Delete", "HybridSearch"}),
                             p.marker) for p in seen.values()])


def formats_from_string(fmt: str) -> tuple[Pattern, ...]:
    """One custom format for every method, plus the defaults for lines it does not fit."""
    return (compile_format(fmt, "custom"), *default_formats())


def formats_from_milvus_yaml(path: str | os.PathLike[str]) -> tuple[Pattern, ...]:
    """The formatters of a Milvus server's `milvus.yaml` (`proxy.accessLog.formatters`)."""
    import yaml

    try:
        with open(path, encoding="utf-8") as handle:
            document = yaml.safe_load(handle)
    except yaml.YAMLError as exc:
        raise FormatError(f"{path}: not YAML: {exc}") from None
    access = _get(document, "proxy", "accessLog")
    formatters = access.get("formatters") if isinstance(access, dict) else None
    if not isinstance(formatters, dict) or not formatters:
        raise FormatError(f"{path}: no proxy.accessLog.formatters (the server then uses the defaults: "
                          "leave --milvus-config out)")
    patterns: list[Pattern] = []
    for name, body in formatters.items():
        if not isinstance(body, dict) or not isinstance(body.get("format"), str) or not body["format"].strip():
            continue  # an empty format turns a formatter's lines off
        methods = _methods(body.get("methods"))
        if str(name) == "base":
            methods = None
        patterns.append(compile_format(body["format"], str(name), methods))
    if not patterns:
        raise FormatError(f"{path}: proxy.accessLog.formatters has no format")
    return _ordered(patterns)


def _get(document: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(document, dict):
            return None
        document = document.get(key)
    return document


def _methods(value: Any) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [m.strip() for m in value.split(",") if m.strip()]
    if isinstance(value, list):
        return [str(m).strip() for m in value if str(m).strip()]
    return None
