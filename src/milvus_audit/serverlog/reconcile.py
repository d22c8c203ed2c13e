"""`milvus-audit reconcile`: server truth against client intent.

Every server access line is joined to the client record of the call that caused it by trace
id (the audited client propagates its trace context; the server logs it as `traceID`).
Calls the server refused log no trace id (`000…0`): those are joined by user, RPC and time
within the grace window to a failed client record of an operation that sends that RPC.

- **accounted**: server RPCs with a client record, and which RPCs each client call caused;
- **shadow**: server RPCs with no client record: someone reached Milvus without an audited
  client. Grouped by user, client address, sdk and operation; destructive and RBAC ones are
  also listed one by one;
- **unconfirmed**: client records that claim success for an operation that sends RPCs but
  have no server line (logging off for that period, or the client talked to another server).
  Only client records within the time the server log covers are judged.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from milvus_audit import semconv
from milvus_audit.export.jsonl import parse_rfc3339, rfc3339
from milvus_audit.integrity.verify import core_record
from milvus_audit.model.catalog import RPC_OPTIONAL, Action, Category, rpc_lookup, rpcs_of
from milvus_audit.serverlog.parse import AccessLogParser, ParseStats, ServerRecord

__all__ = ["ClientRecord", "Reconciliation", "read_client_records", "read_server_records", "reconcile"]

_REFUSED = frozenset({semconv.FailureReason.AUTHENTICATION, semconv.FailureReason.PERMISSION_DENIED})


@dataclass(slots=True)
class ClientRecord:
    timestamp_ns: int
    trace_id: int
    attributes: dict[str, Any]
    where: str

    @property
    def operation(self) -> str:
        return str(self.attributes.get(semconv.DB_OPERATION_NAME, ""))

    @property
    def succeeded(self) -> bool:
        return self.attributes.get(semconv.OUTCOME) == semconv.SUCCESS


@dataclass
class Reconciliation:
    client_records: int = 0
    server_records: int = 0
    accounted: list[tuple[ClientRecord, list[ServerRecord]]] = field(default_factory=list)
    shadow: list[ServerRecord] = field(default_factory=list)
    unconfirmed: list[ClientRecord] = field(default_factory=list)
    outside_coverage: int = 0  # client records outside the time the server log covers: not judged
    parse: ParseStats = field(default_factory=ParseStats)

    # -- views -----------------------------------------------------------------------------
    def shadow_groups(self) -> list[dict[str, Any]]:
        groups: dict[tuple[str, str, str, str], list[ServerRecord]] = defaultdict(list)
        for record in self.shadow:
            a = record.attributes
            key = (str(a.get(semconv.USER_NAME, "")), str(a.get(semconv.CLIENT_ADDRESS, "")),
                   str(a.get(semconv.SDK, "")),
                   str(a.get(semconv.DB_OPERATION_NAME) or a.get(semconv.RPC_METHOD, "")))
            groups[key].append(record)
        out = []
        for (user, address, sdk, operation), records in sorted(groups.items(), key=lambda kv: -len(kv[1])):
            out.append({"user": user, "client_address": address, "sdk": sdk, "operation": operation,
                        "count": len(records),
                        "ports": sorted({int(r.attributes[semconv.CLIENT_PORT]) for r in records
                                         if r.attributes.get(semconv.CLIENT_PORT) is not None}),
                        "first_seen": rfc3339(min(r.timestamp_ns for r in records)),
                        "last_seen": rfc3339(max(r.timestamp_ns for r in records)),
                        "failed": sum(1 for r in records if r.failed)})
        return out

    def sensitive_shadow(self) -> list[dict[str, Any]]:
        """Destructive and RBAC shadow RPCs, one by one."""
        out = []
        for record in self.shadow:
            a = record.attributes
            rpc = rpc_lookup(str(a.get(semconv.RPC_METHOD, "")))
            if rpc.action is not Action.DESTROY and rpc.category is not Category.RBAC:
                continue
            out.append({"time": rfc3339(record.timestamp_ns), "kind": "destructive" if rpc.destructive else "rbac",
                        "user": a.get(semconv.USER_NAME), "client_address": a.get(semconv.CLIENT_ADDRESS),
                        "client_port": a.get(semconv.CLIENT_PORT), "rpc": rpc.name, "operation": rpc.operation,
                        "collection": a.get(semconv.DB_COLLECTION_NAME), "database": a.get(semconv.DB_NAMESPACE),
                        "outcome": a.get(semconv.OUTCOME), "sdk": a.get(semconv.SDK), "where": record.where})
        return out

    def rpcs_per_call(self) -> list[dict[str, Any]]:
        """How many RPCs each kind of client call caused (e.g. create_collection: CreateCollection,
        CreateIndex, LoadCollection, GetLoadingProgress x n)."""
        by_operation: dict[str, Counter[str]] = defaultdict(Counter)
        calls: Counter[str] = Counter()
        for client, servers in self.accounted:
            calls[client.operation] += 1
            for server in servers:
                by_operation[client.operation][str(server.attributes.get(semconv.RPC_METHOD))] += 1
        return [{"operation": op, "calls": calls[op], "rpcs": dict(by_operation[op]),
                 "rpcs_per_call": round(sum(by_operation[op].values()) / calls[op], 2)}
                for op in sorted(calls)]

    def to_json(self) -> dict[str, Any]:
        return {
            "client_records": self.client_records, "server_records": self.server_records,
            "accounted": sum(len(servers) for _, servers in self.accounted),
            "accounted_calls": len(self.accounted),
            "shadow": len(self.shadow), "unconfirmed": len(self.unconfirmed),
            "outside_coverage": self.outside_coverage,
            "calls": self.rpcs_per_call(),
            "shadow_groups": self.shadow_groups(),
            "shadow_sensitive": self.sensitive_shadow(),
            "unconfirmed_records": [{"time": rfc3339(c.timestamp_ns), "operation": c.operation,
                                     "trace_id": f"{c.trace_id:032x}" if c.trace_id else "",
                                     "user": c.attributes.get(semconv.USER_NAME), "where": c.where}
                                    for c in self.unconfirmed],
            "server_log": {"lines": self.parse.lines, "access": self.parse.access, "skipped": self.parse.skipped,
                           "malformed": self.parse.malformed, "problems": list(self.parse.problems)},
        }


# -- reading ---------------------------------------------------------------------------------
def _json_lines(path: str) -> Iterator[tuple[int, dict[str, Any]]]:
    with open(path, encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            text = line.strip()
            if not text:
                continue
            try:
                record = json.loads(text)
            except ValueError:
                raise ValueError(f"{path}:{number}: not a JSON audit record") from None
            if isinstance(record, dict):
                yield number, core_record(record)


def read_client_records(paths: Iterable[str]) -> list[ClientRecord]:
    """The `milvus.audit` records of JSONL files (any format `configure(jsonl_path=...)` writes)."""
    out = []
    for path in paths:
        for number, record in _json_lines(path):
            if record.get("event_name") != semconv.AUDIT_EVENT:
                continue
            attributes = record.get("attributes")
            if not isinstance(attributes, dict):
                continue
            try:
                timestamp = parse_rfc3339(str(record.get("timestamp")))
                trace_id = int(str(record.get("trace_id") or "0"), 16)
            except ValueError:
                raise ValueError(f"{path}:{number}: a record without a readable timestamp or trace id") from None
            out.append(ClientRecord(timestamp, trace_id, attributes, f"{path}:{number}"))
    return out


def _looks_like_jsonl(path: str) -> bool:
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if line.strip():
                return line.lstrip().startswith("{")
    return False


def read_server_records(paths: Iterable[str], parser: AccessLogParser) -> list[ServerRecord]:
    """Server records from raw access logs, or from JSONL that `ingest` wrote."""
    out: list[ServerRecord] = []
    for path in paths:
        if not _looks_like_jsonl(path):
            out.extend(parser.parse_file(path))
            continue
        for number, record in _json_lines(path):
            if record.get("event_name") != semconv.SERVER_ACCESS_EVENT:
                continue
            attributes = record.get("attributes") or {}
            out.append(ServerRecord(parse_rfc3339(str(record.get("timestamp"))),
                                    int(str(record.get("trace_id") or "0"), 16), dict(attributes),
                                    attributes.get(semconv.OUTCOME) == semconv.FAILURE, f"{path}:{number}"))
    return out


# -- the join --------------------------------------------------------------------------------
def _refused_match(server: ServerRecord, candidates: list[ClientRecord], used: set[int], grace_ns: int) -> int:
    """Index of the failed client record a refused server line belongs to, or -1."""
    a = server.attributes
    user = a.get(semconv.USER_NAME)
    serves = rpc_lookup(str(a.get(semconv.RPC_METHOD, ""))).serves
    best, best_gap = -1, grace_ns + 1
    for index, client in enumerate(candidates):
        if index in used or client.attributes.get(semconv.USER_NAME) != user or client.operation not in serves:
            continue
        duration_ns = int(float(client.attributes.get(semconv.DURATION_MS) or 0) * 1e6)
        start, end = client.timestamp_ns, client.timestamp_ns + duration_ns
        gap = 0 if start <= server.timestamp_ns <= end else min(abs(server.timestamp_ns - start),
                                                                 abs(server.timestamp_ns - end))
        if gap < best_gap:
            best, best_gap = index, gap
    return best


def reconcile(clients: list[ClientRecord], servers: list[ServerRecord], *, grace_s: float = 5.0,
              parse: ParseStats | None = None) -> Reconciliation:
    result = Reconciliation(len(clients), len(servers), parse=parse or ParseStats())
    grace_ns = int(grace_s * 1e9)
    by_trace: dict[int, ClientRecord] = {}
    for client in sorted(clients, key=lambda c: c.timestamp_ns):
        if client.trace_id:
            by_trace.setdefault(client.trace_id, client)
    joined: dict[int, list[ServerRecord]] = defaultdict(list)
    refused_candidates = [c for c in clients if not c.succeeded
                          and c.attributes.get(semconv.FAILURE_REASON) in _REFUSED]
    used: set[int] = set()
    refused_joined: list[tuple[ClientRecord, ServerRecord]] = []
    for server in sorted(servers, key=lambda s: s.timestamp_ns):
        claimed = by_trace.get(server.trace_id) if server.trace_id else None
        if claimed is not None:
            joined[id(claimed)].append(server)
            continue
        if not server.trace_id and server.failed:
            index = _refused_match(server, refused_candidates, used, grace_ns)
            if index >= 0:
                used.add(index)
                refused_joined.append((refused_candidates[index], server))
                continue
        result.shadow.append(server)
    seen_clients: set[int] = set()
    for client in sorted(clients, key=lambda c: c.timestamp_ns):
        servers_of = joined.get(id(client))
        if servers_of:
            result.accounted.append((client, servers_of))
            seen_clients.add(id(client))
    for client, server in refused_joined:
        result.accounted.append((client, [server]))
        seen_clients.add(id(client))
    if servers:
        first = min(s.timestamp_ns for s in servers) - grace_ns
        last = max(s.timestamp_ns for s in servers) + grace_ns
    else:
        first, last = 1, 0
    for client in clients:
        if id(client) in seen_clients or not client.succeeded or not rpcs_of(client.operation) \
                or client.operation in RPC_OPTIONAL:
            continue
        if not first <= client.timestamp_ns <= last:
            result.outside_coverage += 1
            continue
        result.unconfirmed.append(client)
    return result
