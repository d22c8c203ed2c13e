"""The OpenTelemetry Collector's way to ship the access log: a `filelog` receiver config.

`collector_config()` renders a Collector config whose `regex_parser` expressions are
generated from the same compiled formatters the library parses with (one regex per
formatter, a `router` picks the first that matches), so both read a line into the same
fields; `file_storage` checkpoints the read offsets. The regexes are RE2 (no
backreferences, linear time in the Collector); each placeholder is a lazy `.*?` up to the
literal that follows it, exactly as `Pattern.match` takes the first occurrence.

Attribute names are the library's (`rpc.method`, `user.name`, `client.address`, ...). What
the Collector cannot compute the way the library does is left out or approximated in a
`transform` processor: filter expressions are **dropped** (the library shapes them with
its tokenizer; a raw filter may carry personal data), and outcome and failure reason are
derived from the raw status.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml

from milvus_audit import semconv
from milvus_audit.serverlog.formats import Pattern

__all__ = ["GROUP_ATTRIBUTES", "collector_config", "pattern_regex"]

# Regex group -> the record attribute it fills (raw values; the transform derives the rest).
GROUP_ATTRIBUTES = {
    "method_name": semconv.RPC_METHOD,
    "user_name": semconv.USER_NAME,
    "client_address": semconv.CLIENT_ADDRESS,
    "client_port": semconv.CLIENT_PORT,
    "method_status": semconv.SERVER_STATUS,
    "error_code": semconv.DB_RESPONSE_STATUS_CODE,
    "sdk_version": semconv.SDK,
    "database_name": semconv.DB_NAMESPACE,
    "collection_name": semconv.DB_COLLECTION_NAME,
    "error_type": semconv.ERROR_TYPE,
}
# Parsed, used by the Collector's own operators (time, trace), then removed.
_WORKING = ("time_now", "trace_id", "time_cost", "error_msg", "method_expr", "partition_name", "user_addr",
            "time_start", "time_end", "response_size", "output_fields", "cluster_prefix", "consistency_level",
            "anns_field", "nq", "search_params", "query_params")


_SPECIAL = frozenset("\\.+*?()|[]{}^$")


def _escape(literal: str) -> str:
    """Escape for RE2 and Python alike (RE2 refuses `\\ ` and other escaped non-punctuation)."""
    return "".join(f"\\{char}" if char in _SPECIAL else char for char in literal)


def pattern_regex(pattern: Pattern) -> str:
    """The RE2/Python regex equivalent to `pattern.match`: named groups per placeholder; the
    client address is split into `client_address` and `client_port` inside `<...>`."""
    parts = ["^", _escape(pattern.literals[0])]
    last = len(pattern.fields) - 1
    for index, name in enumerate(pattern.fields):
        if name == "user_addr":
            parts.append(r"(?:[a-z]+-)?\[?(?P<client_address>[^\]\s]*?)\]?:(?P<client_port>[0-9]+)")
        else:
            parts.append(f"(?P<{name}>.*)" if index == last else f"(?P<{name}>.*?)")
        parts.append(_escape(pattern.literals[index + 1]))
    parts.append("$")
    return "".join(parts)


def collector_config(patterns: Sequence[Pattern], paths: Sequence[str], *, endpoint: str = "localhost:4317",
                     server_address: str | None = None) -> str:
    routes = []
    operators: list[dict[str, Any]] = []
    for index, pattern in enumerate(patterns):
        regex = pattern_regex(pattern)
        parser_id = f"parse_{pattern.name}_{index}"
        routes.append({"expr": f"body matches {_quote(regex)}", "output": parser_id})
        operators.append({
            "type": "regex_parser", "id": parser_id, "regex": regex, "output": "names",
            "timestamp": {"parse_from": "attributes.time_now", "layout_type": "gotime",
                          "layout": "2006/01/02 15:04:05.000 -07:00"},
            "trace": {"trace_id": {"parse_from": "attributes.trace_id"}},
        })
    router = {"type": "router", "id": "access_lines", "routes": routes, "default": "not_access"}
    renames: list[dict[str, Any]] = [{"type": "noop", "id": "names"}]
    for group, attribute in GROUP_ATTRIBUTES.items():
        renames.append({"type": "move", "if": f'attributes["{group}"] != nil',
                        "from": f'attributes["{group}"]', "to": f'attributes["{attribute}"]'})
    for group in _WORKING:
        renames.append({"type": "remove", "if": f'attributes["{group}"] != nil', "field": f'attributes["{group}"]'})
    renames.append({"type": "add", "field": f'attributes["{semconv.SOURCE}"]', "value": semconv.SOURCE_SERVER})
    if server_address:
        renames.append({"type": "add", "field": f'attributes["{semconv.SERVER_ADDRESS}"]', "value": server_address})
    renames.append({"type": "noop", "id": "done"})
    drop = {"type": "filter", "id": "not_access", "expr": "true"}
    status = f'attributes["{semconv.SERVER_STATUS}"]'
    transform = {"log_statements": [{"context": "log", "statements": [
        f'set(log.event_name, "{semconv.SERVER_ACCESS_EVENT}")',
        f'set(attributes["{semconv.OUTCOME}"], "success") where {status} == "OK" or {status} == "Successful"',
        f'set(attributes["{semconv.OUTCOME}"], "failure") where attributes["{semconv.OUTCOME}"] == nil',
        f'set(attributes["{semconv.FAILURE_REASON}"], "authentication") where {status} == "GrpcUnauthenticated"',
        f'set(attributes["{semconv.FAILURE_REASON}"], "permission_denied") '
        f'where {status} == "GrpcPermissionDenied"',
        f'set(attributes["{semconv.FAILURE_REASON}"], "server_error") where attributes["{semconv.OUTCOME}"] '
        f'== "failure" and attributes["{semconv.FAILURE_REASON}"] == nil',
        f'set(attributes["{semconv.CLIENT_PORT}"], Int(attributes["{semconv.CLIENT_PORT}"])) '
        f'where attributes["{semconv.CLIENT_PORT}"] != nil',
    ]}]}
    config = {
        "extensions": {"file_storage/milvus_access": {"directory": "/var/lib/otelcol/file_storage"},
                       "file_storage/queue": {"directory": "/var/lib/otelcol/queue"}},
        "receivers": {"filelog/milvus_access": {
            "include": list(paths), "start_at": "beginning", "storage": "file_storage/milvus_access",
            "include_file_path": True, "operators": [router, *operators, *renames, drop],
        }},
        "processors": {"transform/milvus_access": transform, "batch": {}},
        "exporters": {"otlp": {"endpoint": endpoint, "tls": {"insecure": True},
                               "sending_queue": {"enabled": True, "storage": "file_storage/queue"},
                               "retry_on_failure": {"enabled": True}}},
        "service": {"extensions": ["file_storage/milvus_access", "file_storage/queue"],
                    "pipelines": {"logs/milvus_access": {
            "receivers": ["filelog/milvus_access"], "processors": ["transform/milvus_access", "batch"],
            "exporters": ["otlp"]}}},
    }
    header = ("# OpenTelemetry Collector (contrib) v0.115.0: the Milvus access log -> OTLP, read as ingest reads it.\n"
              "# Generated by `milvus-audit ingest --print-collector-config`: the regexes are the library's\n"
              "# formatters (milvus_audit.serverlog), so the Collector reads the same fields as `ingest`.\n"
              "# Filter expressions ($method_expr) and error messages are dropped: only the library shapes them.\n")
    return header + yaml.safe_dump(config, sort_keys=False, width=10_000)


def _quote(regex: str) -> str:
    return '"' + regex.replace("\\", "\\\\").replace('"', '\\"') + '"'
