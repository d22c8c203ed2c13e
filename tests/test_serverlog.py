"""The server's access log: parsing, ingest, reconcile and shadow access, on recorded lines and on the
real Milvus 2.3.5 server with authorization and the access log on."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

import milvus_audit
from milvus_audit import semconv
from milvus_audit.detect.replay import replay_files
from milvus_audit.detect.rules import Rules
from milvus_audit.otel.setup import configure
from milvus_audit.serverlog.collector import GROUP_ATTRIBUTES, collector_config, pattern_regex
from milvus_audit.serverlog.formats import (
    BASE_FORMAT,
    FormatError,
    compile_format,
    default_formats,
    formats_from_milvus_yaml,
    formats_from_string,
)
from milvus_audit.serverlog.ingest import ingest, record_id
from milvus_audit.serverlog.parse import AccessLogParser, parse_duration_ms
from milvus_audit.serverlog.reconcile import read_client_records, read_server_records, reconcile
from milvus_audit.serverlog.tail import Tailer
from tests.server import MilvusServer

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "milvus_audit"]

# Lines as the real 2.3.5 server wrote them (../shared/README.md), plus one of each shape.
RECORDED = [
    "[2026/11/29 18:46:37.381 +00:00] [ACCESS] <root: tcp-127.0.0.1:41162> Connect [status: GrpcUnauthenticated] "
    "[code: 65535] [sdk: Unknown] [msg: rpc error: code = Unauthenticated desc = auth check failure, please check "
    "username and password are correct] [traceID: 00000000000000000000000000000000] [timeCost: 1.02ms]",
    "[2026/11/29 18:46:40.995 +00:00] [ACCESS] <lowpriv: tcp-127.0.0.1:41168> DropCollection "
    "[status: GrpcPermissionDenied] [code: 65535] [sdk: Python-3.0.2] [msg: rpc error: code = PermissionDenied "
    "desc = PrivilegeDropCollection: permission deny to lowpriv] [traceID: 00000000000000000000000000000000] "
    "[timeCost: 310.5µs]",
    "[2026/11/29 18:46:41.215 +00:00] [ACCESS] <root: tcp-127.0.0.1:41168> Delete [status: OK] [code: 0] "
    "[sdk: Python-3.0.2] [msg: ] [traceID: c42db846a1b2c3d4e5f60718293a4b5c] [timeCost: 209.835953ms] "
    "[database: default] [collection: tp] [partitions: ] [expr: id in [1, 2] and id > 0]",
    "[2026/11/29 18:46:42.001 +00:00] [ACCESS] <root: tcp-127.0.0.1:41168> CreateCollection [status: OK] "
    "[code: 0] [sdk: Python-3.0.2] [msg: ] [traceID: 4bf92f3577b34da6a3ce929d0e0e4736] [timeCost: 12.5ms]",
]


# -- the parser -------------------------------------------------------------------------------
def test_recorded_lines() -> None:
    parser = AccessLogParser(server_address="milvus.internal")
    refused, denied, delete, create = list(parser.parse_lines(RECORDED, "access.log"))
    a = refused.attributes
    assert a[semconv.SOURCE] == "server" and a[semconv.RPC_METHOD] == "Connect"
    assert a[semconv.DB_OPERATION_NAME] == "connect" and a[semconv.USER_NAME] == "root"
    assert (a[semconv.CLIENT_ADDRESS], a[semconv.CLIENT_PORT]) == ("127.0.0.1", 41162)
    assert a[semconv.OUTCOME] == "failure" and a[semconv.FAILURE_REASON] == "authentication"
    assert a[semconv.SERVER_STATUS] == "GrpcUnauthenticated" and a[semconv.DB_RESPONSE_STATUS_CODE] == "65535"
    assert a[semconv.SERVER_ADDRESS] == "milvus.internal" and a[semconv.DURATION_MS] == pytest.approx(1.02)
    assert refused.trace_id == 0 and refused.where == "access.log:1"
    assert refused.timestamp_ns == 1_795_977_997_381_000_000
    d = denied.attributes
    assert d[semconv.FAILURE_REASON] == "permission_denied" and d[semconv.DB_OPERATION_NAME] == "drop_collection"
    assert d[semconv.MISSING_PRIVILEGE] == "PrivilegeDropCollection" and d[semconv.SDK] == "Python-3.0.2"
    assert d[semconv.DURATION_MS] == pytest.approx(0.3105)
    x = delete.attributes
    assert x[semconv.OUTCOME] == "success" and semconv.FAILURE_REASON not in x
    assert x[semconv.DB_QUERY_TEXT] == "id in [?] and id > ?"  # shaped like a client filter
    assert (x[semconv.DB_NAMESPACE], x[semconv.DB_COLLECTION_NAME]) == ("default", "tp")
    assert delete.trace_hex == "c42db846a1b2c3d4e5f60718293a4b5c"
    assert create.attributes[semconv.DB_OPERATION_NAME] == "create_collection"
    assert create.attributes[semconv.MUTATING] is True
    assert parser.stats.access == 4 and parser.stats.malformed == 0


def test_capture_filters_policy_and_scrubbed_messages() -> None:
    line = ("[2026/11/29 18:46:41.215 +00:00] [ACCESS] <root: tcp-127.0.0.1:41168> Query [status: Failed] "
            "[code: 1100] [sdk: Python-3.0.2] [msg: cannot parse expression: name == \"alice@example.com\"] "
            "[traceID: c42db846a1b2c3d4e5f60718293a4b5c] [timeCost: 2ms] [database: default] [collection: people] "
            "[partitions: ] [expr: name == \"alice@example.com\"]")
    sanitized = AccessLogParser().parse_line(line)
    assert sanitized is not None
    assert "alice" not in json.dumps(sanitized.attributes)
    assert sanitized.attributes[semconv.DB_QUERY_TEXT] == "name == ?"
    assert sanitized.attributes[semconv.FAILURE_REASON] == "invalid_argument"
    none = AccessLogParser(capture_filters="none").parse_line(line)
    assert none is not None and semconv.DB_QUERY_TEXT not in none.attributes
    raw = AccessLogParser(capture_filters="raw").parse_line(line)
    assert raw is not None and raw.attributes[semconv.DB_QUERY_TEXT] == 'name == "alice@example.com"'


def _line_of(fmt: str, values: dict[str, str]) -> str:
    return re.sub(r"\$([a-z_]+)", lambda m: values.get(m.group(1), ""), fmt)


VALUES = {"time_now": "2027/01/02 03:04:05.678 +08:00", "user_name": "svc", "user_addr": "tcp-[::1]:5000",
          "method_name": "Search", "method_status": "Successful", "error_code": "0", "sdk_version": "Golang-2.6.0",
          "error_msg": "", "trace_id": "0af7651916cd43dd8448eb211c80319c", "time_cost": "1m2.5s",
          "database_name": "db1", "collection_name": "docs", "partition_name": "[p1 p2]",
          "method_expr": "age > 30", "nq": "3", "search_params": "topk=10, metric=L2", "query_params": "limit=5"}


@pytest.mark.parametrize("fields", [
    " [database: $database_name] [collection: $collection_name] [partitions: $partition_name] [expr: $method_expr]"
    " [nq: $nq] [params: $search_params]",  # 2.6 search
    " [database: $database_name] [collection: $collection_name] [partitions: $partition_name] [expr: $method_expr]"
    " [params: $query_params]",  # 2.6 query
    " [database: $database_name] [collection: $collection_name] [partitions: $partition_name] [expr: $method_expr]",
])
def test_newer_default_formats(fields: str) -> None:
    line = _line_of(BASE_FORMAT + fields, VALUES)
    record = AccessLogParser().parse_line(line)
    assert record is not None, line
    a = record.attributes
    assert a[semconv.OUTCOME] == "success" and a[semconv.DB_OPERATION_NAME] == "search"
    assert (a[semconv.CLIENT_ADDRESS], a[semconv.CLIENT_PORT]) == ("::1", 5000)
    assert a[semconv.DB_QUERY_TEXT] == "age > ?" and a[semconv.DURATION_MS] == 62_500.0
    assert record.timestamp_ns == 1_798_830_245_678_000_000  # +08:00 applied
    if "$nq" in fields:
        assert a[semconv.DB_MILVUS_NQ] == 3


def test_custom_format_from_a_string_and_from_milvus_yaml(tmp_path: Path) -> None:
    custom = ("[$time_now] [ACCESS] <$user_name: $user_addr> $method_name-$method_status-$error_code "
              "[traceID: $trace_id]")
    line = "[2026/11/29 18:46:41.215 +00:00] [ACCESS] <bob: tcp-10.0.0.5:7000> DropCollection-OK-0 [traceID: " \
           + "ab" * 16 + "]"
    record = AccessLogParser(formats_from_string(custom)).parse_line(line)
    assert record is not None and record.attributes[semconv.DB_OPERATION_NAME] == "drop_collection"
    assert record.attributes[semconv.USER_NAME] == "bob" and record.trace_hex == "ab" * 16
    config = tmp_path / "milvus.yaml"
    config.write_text(textwrap.dedent(f"""\
        proxy:
          accessLog:
            enable: true
            formatters:
              base:
                format: "{custom}"
              query:
                format: "[$time_now] [ACCESS] <$user_name: $user_addr> $method_status-$method_name
                  [traceID: $trace_id] [timeCost: $time_cost] [expr: $method_expr]"
                methods: ["Query", "Search"]
        """))
    patterns = formats_from_milvus_yaml(config)
    parser = AccessLogParser(patterns)
    query = parser.parse_line("[2026/11/29 18:46:41.215 +00:00] [ACCESS] <bob: tcp-10.0.0.5:7000> OK-Query "
                              "[traceID: " + "cd" * 16 + "] [timeCost: 3ms] [expr: id == 7]")
    assert query is not None and query.attributes[semconv.DB_QUERY_TEXT] == "id == ?"
    assert parser.parse_line(line) is not None
    with pytest.raises(FormatError):
        compile_format("$method_name$method_status")
    with pytest.raises(FormatError):
        compile_format("[$time_now] no method here")


def test_garbage_and_truncated_lines_are_counted_never_fatal(tmp_path: Path) -> None:
    log = tmp_path / "milvus-stdout.log"
    lines = [RECORDED[0],
             "[2026/11/29 18:46:37.381 +00:00] [INFO] [proxy/impl.go:42] [\"an ordinary server line\"]",
             "\x00\x01binary garbage \udcff",
             RECORDED[2][:90],  # truncated mid-line
             "[not a time] [ACCESS] <root: tcp-127.0.0.1:1> Connect [status: OK] [code: 0] [sdk: x] [msg: ] "
             "[traceID: 0] [timeCost: 1ms]",
             "",
             RECORDED[3]]
    log.write_text("\n".join(lines) + "\n", errors="surrogateescape")
    parser = AccessLogParser()
    records = list(parser.parse_file(str(log)))
    assert [r.attributes[semconv.RPC_METHOD] for r in records] == ["Connect", "CreateCollection"]
    stats = parser.stats
    assert stats.malformed == 2 and stats.skipped == 3 and stats.access == 2
    assert stats.problems[0].startswith(f"{log}:4: ") and stats.problems[1].startswith(f"{log}:5: ")


def test_durations() -> None:
    assert parse_duration_ms("209.835953ms") == pytest.approx(209.835953)
    assert parse_duration_ms("1h2m3s") == 3_723_000.0
    assert parse_duration_ms("87ns") == pytest.approx(87e-6)
    assert parse_duration_ms("soon") is None


def test_the_collector_regex_reads_the_same_fields_as_the_library() -> None:
    """The generated Collector config's regexes, run on the recorded lines, give the library's fields."""
    patterns = default_formats()
    config = collector_config(list(patterns), ["/var/log/milvus/access.log"])
    assert "regex_parser" in config and "file_storage" in config
    for line in [*RECORDED, _line_of(BASE_FORMAT + " [database: $database_name] [collection: $collection_name]"
                                     " [partitions: $partition_name] [expr: $method_expr] [nq: $nq]"
                                     " [params: $search_params]", VALUES)]:
        record = AccessLogParser(patterns).parse_line(line)
        assert record is not None
        groups = next(m.groupdict() for p in patterns if (m := re.match(pattern_regex(p), line)))
        for group, attribute in GROUP_ATTRIBUTES.items():
            value = groups.get(group)
            if value is None or value.strip() in ("", "Unknown"):
                assert attribute not in record.attributes or attribute == semconv.SDK, (group, line)
                continue
            assert str(record.attributes[attribute]) == value.strip(), (group, line)
        assert int(groups["trace_id"], 16) == record.trace_id
    shipped = (ROOT / "examples" / "collector" / "milvus-accesslog-filelog.yaml").read_text()
    generated = subprocess.run([*CLI, "ingest", "--print-collector-config", "/var/log/milvus/access.log"],
                               capture_output=True, text=True, check=True).stdout
    assert shipped == generated


# -- ingest and reconcile on files ----------------------------------------------------------------
def _ingest_jsonl(paths: list[str], out: Path, **kw: Any) -> Any:
    pipeline = configure(jsonl_path=out, set_global=False)
    from milvus_audit.otel.emitter import OTelEmitter
    from milvus_audit.serverlog.ingest import OTelSink

    try:
        return ingest(paths, OTelSink(OTelEmitter(pipeline.audit_config()), pipeline.force_flush), **kw)
    finally:
        pipeline.shutdown()


def test_tail_follows_rotation_and_truncation(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    log.write_text("a\nb\n")
    tailer = Tailer([str(log)], follow=True)
    assert [line.text for line in tailer.poll()] == ["a", "b"]
    with log.open("a") as handle:
        handle.write("c\npart")
    assert [line.text for line in tailer.poll()] == ["c"]  # the partial line waits for its newline
    log.rename(tmp_path / "access.log.1")
    with (tmp_path / "access.log.1").open("a") as handle:
        handle.write("ial\n")
    log.write_text("d\n")
    assert [line.text for line in tailer.poll()] == ["partial", "d"]  # the rotated file's rest, then the new
    log.write_text("")  # truncated in place (seen when the file is shorter than what was read, as tail -F)
    assert list(tailer.poll()) == []
    with log.open("a") as handle:
        handle.write("e\n")
    assert [line.text for line in tailer.poll()] == ["e"]
    tailer.close()


def test_ingest_resumes_from_state_with_stable_ids(tmp_path: Path) -> None:
    log, state, out = tmp_path / "access.log", tmp_path / "state.json", tmp_path / "server.jsonl"
    log.write_text("\n".join(RECORDED[:2]) + "\n")
    first = _ingest_jsonl([str(log)], out, state_path=str(state))
    assert first.emitted == 2
    with log.open("a") as handle:
        handle.write("\n".join(RECORDED[2:]) + "\n")
    second = _ingest_jsonl([str(log)], out, state_path=str(state))
    assert second.emitted == 2  # only the new lines
    state.unlink()  # a lost state file: everything again, with the same ids
    _ingest_jsonl([str(log)], out, state_path=str(state))
    records = [json.loads(line) for line in out.read_text().splitlines()]
    ids = [r["attributes"][semconv.SERVER_RECORD_ID] for r in records]
    assert len(records) == 8 and len(set(ids)) == 4
    assert all(r["event_name"] == "milvus.server.access" for r in records)
    traced = [r for r in records if r["attributes"][semconv.RPC_METHOD] == "Delete"]
    assert traced[0]["trace_id"] == "c42db846a1b2c3d4e5f60718293a4b5c"
    assert "1, 2" not in out.read_text()  # the delete's literals never leave


def test_ingest_shows_backlog_progress_only_on_a_terminal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "access.log"
    log.write_text("\n".join(RECORDED * 50) + "\n")
    _ingest_jsonl([str(log)], tmp_path / "a.jsonl", progress=True)  # as on a terminal
    shown = capsys.readouterr().err
    assert "ingest" in shown and "200 lines" in shown and "\r" in shown
    _ingest_jsonl([str(log)], tmp_path / "b.jsonl")  # stderr is not a terminal here
    assert capsys.readouterr().err == ""


def test_reconcile_on_recorded_files(tmp_path: Path) -> None:
    log, clients = tmp_path / "access.log", tmp_path / "client.jsonl"
    log.write_text("\n".join(RECORDED) + "\n")
    records = [
        {"timestamp": "2026-11-29T18:46:41.000000000Z", "event_name": "milvus.audit",
         "trace_id": "c42db846a1b2c3d4e5f60718293a4b5c", "span_id": "1" * 16,
         "attributes": {semconv.DB_OPERATION_NAME: "delete", semconv.OUTCOME: "success", semconv.USER_NAME: "root"}},
        {"timestamp": "2026-11-29T18:46:40.990000000Z", "event_name": "milvus.audit",
         "trace_id": "9" * 32, "span_id": "2" * 16,
         "attributes": {semconv.DB_OPERATION_NAME: "drop_collection", semconv.OUTCOME: "failure",
                        semconv.FAILURE_REASON: "permission_denied", semconv.USER_NAME: "lowpriv"}},
        {"timestamp": "2026-11-29T18:46:41.500000000Z", "event_name": "milvus.audit",
         "trace_id": "8" * 32, "span_id": "3" * 16,
         "attributes": {semconv.DB_OPERATION_NAME: "insert", semconv.OUTCOME: "success", semconv.USER_NAME: "root"}},
    ]
    clients.write_text("".join(json.dumps(r) + "\n" for r in records))
    parser = AccessLogParser()
    result = reconcile(read_client_records([str(clients)]), read_server_records([str(log)], parser))
    assert {s.attributes[semconv.RPC_METHOD] for s in result.shadow} == {"Connect", "CreateCollection"}
    assert [c.operation for c in result.unconfirmed] == ["insert"]
    assert len(result.accounted) == 2  # the delete by trace id, the refused drop by user, RPC and time
    run = subprocess.run([*CLI, "reconcile", "--client", str(clients), "--server", str(log), "--json"],
                         capture_output=True, text=True)
    assert run.returncode == 1, run.stderr
    report = json.loads(run.stdout)
    assert report["shadow"] == 2 and report["unconfirmed"] == 1
    assert [s["rpc"] for s in report["shadow_sensitive"]] == []  # CreateCollection is neither destructive nor RBAC


# -- the real server ---------------------------------------------------------------------------
def _mark(server: MilvusServer) -> int:
    assert server.access_log is not None
    return server.access_log.stat().st_size if server.access_log.exists() else 0


def _server_lines_since(server: MilvusServer, offset: int, tmp_path: Path, settle_s: float = 1.5) -> Path:
    """The server's output since `offset`, once it has stopped growing, copied to a file."""
    assert server.access_log is not None
    size, stable_since = -1, time.monotonic()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        now = server.access_log.stat().st_size
        if now != size:
            size, stable_since = now, time.monotonic()
        elif time.monotonic() - stable_since >= settle_s:
            break
        time.sleep(0.1)
    with server.access_log.open("rb") as handle:
        handle.seek(offset)
        data = handle.read(size - offset)
    out = tmp_path / f"server-{uuid.uuid4().hex[:6]}.log"
    out.write_bytes(data[: data.rfind(b"\n") + 1])
    return out


def _audited(server: MilvusServer, jsonl: Path, user: str | None = None, password: str | None = None) -> Any:
    pipeline = configure(jsonl_path=jsonl, set_global=False)
    client = milvus_audit.MilvusClient(server.uri, user=user or server.root_user,
                                       password=password or server.root_password,
                                       audit=pipeline.audit_config())
    return pipeline, client


def _workload(client: Any, name: str, secret: str) -> None:
    client.create_collection(name, dimension=4)
    client.insert(name, [{"id": i, "vector": [0.1 * i] * 4} for i in range(1, 6)])
    client.search(name, [[0.1] * 4], limit=2)
    client.query(name, filter="id > 0", limit=3)
    client.delete(name, filter=f'id in [1, 2] or tag == "{secret}"')


@pytest.mark.server
def test_an_audited_apps_mixed_workload_is_all_accounted_for(milvus_server: MilvusServer, tmp_path: Path) -> None:
    offset = _mark(milvus_server)
    jsonl = tmp_path / "client.jsonl"
    pipeline, client = _audited(milvus_server, jsonl)
    name = f"sl_{uuid.uuid4().hex[:8]}"
    secret = f"planted-{uuid.uuid4().hex[:8]}"
    lowpriv = f"lowpriv_{uuid.uuid4().hex[:6]}"
    try:
        _workload(client, name, secret)
        client.create_user(lowpriv, "Lowpriv-Pass-1")
        client.create_role(f"r_{lowpriv}")
        client.grant_role(lowpriv, f"r_{lowpriv}")
        limited = milvus_audit.MilvusClient(milvus_server.uri, user=lowpriv, password="Lowpriv-Pass-1",
                                            audit=pipeline.audit_config())
        with pytest.raises(Exception):
            limited.drop_collection(name)  # a permission denial
        limited.close()
        client.drop_collection(name)
        client.drop_user(lowpriv)
    finally:
        client.close()
        pipeline.shutdown()
    log = _server_lines_since(milvus_server, offset, tmp_path)
    parser = AccessLogParser()
    servers = read_server_records([str(log)], parser)
    clients = read_client_records([str(jsonl)])
    result = reconcile(clients, servers)
    assert servers and parser.stats.malformed == 0
    assert [s.attributes[semconv.RPC_METHOD] for s in result.shadow] == []
    assert [c.operation for c in result.unconfirmed] == []
    joined = {client.operation for client, _ in result.accounted}
    assert {"connect", "create_collection", "insert", "search", "query", "delete", "create_user",
            "grant_role", "drop_collection"} <= joined
    connects = [s for c, ss in result.accounted for s in ss if c.operation == "connect"]
    assert any(s.trace_id for s in connects), "connect is joined by trace id (propagation)"
    # nothing secret leaks: the planted literal is in the server's log, never in what ingest exports
    assert secret in log.read_text()
    out = tmp_path / "server.jsonl"
    _ingest_jsonl([str(log)], out)
    assert out.read_text() and secret not in out.read_text()
    # the same join in the engine: replay over client and server records raises no shadow_access
    result_replay = replay_files([jsonl, out], Rules())
    assert [a.summary for a in result_replay.alerts if a.rule == "shadow_access"] == []


INTRUDER = """
import sys
from pymilvus import MilvusClient
uri, user, password, name = sys.argv[1:5]
client = MilvusClient(uri, user=user, password=password)
print(client.list_collections(), flush=True)
client.describe_collection(name)
client.query(name, filter="id > 0", limit=5)
client.drop_collection(name)
client.close()
"""


@pytest.mark.server
def test_an_intruder_with_the_apps_credentials_is_shadow_access(milvus_server: MilvusServer, tmp_path: Path) -> None:
    offset = _mark(milvus_server)
    jsonl = tmp_path / "client.jsonl"
    pipeline, client = _audited(milvus_server, jsonl)
    name = f"victim_{uuid.uuid4().hex[:8]}"
    try:
        client.create_collection(name, dimension=4)
        client.insert(name, [{"id": i, "vector": [0.1] * 4} for i in range(1, 4)])
        intruder = subprocess.run([sys.executable, "-c", INTRUDER, milvus_server.uri, milvus_server.root_user,
                                   milvus_server.root_password, name], capture_output=True, text=True, timeout=60)
        assert intruder.returncode == 0, intruder.stderr
        client.list_collections()  # the app keeps running
    finally:
        client.close()
        pipeline.shutdown()
    log = _server_lines_since(milvus_server, offset, tmp_path)
    servers = read_server_records([str(log)], AccessLogParser())
    result = reconcile(read_client_records([str(jsonl)]), servers)
    app_ports = {s.attributes.get(semconv.CLIENT_PORT) for _, ss in result.accounted for s in ss}
    shadow_ports = {s.attributes.get(semconv.CLIENT_PORT) for s in result.shadow}
    assert result.shadow and not app_ports & shadow_ports
    assert {s.attributes[semconv.RPC_METHOD] for s in result.shadow} >= {"DropCollection", "Query"}
    every_intruder_line = [s for s in servers if s.attributes.get(semconv.CLIENT_PORT) in shadow_ports]
    assert len(every_intruder_line) == len(result.shadow)
    assert [c.operation for c in result.unconfirmed] == []
    sensitive = result.sensitive_shadow()
    # 2.3's base formatter logs no collection for DropCollection: the user, source and time say who
    assert [(s["kind"], s["operation"], s["user"], s["client_port"]) for s in sensitive] == \
        [("destructive", "drop_collection", milvus_server.root_user, sensitive[0]["client_port"])] and \
        sensitive[0]["client_port"] in shadow_ports
    run = subprocess.run([*CLI, "reconcile", "--client", str(jsonl), "--server", str(log)],
                         capture_output=True, text=True)
    assert run.returncode == 1 and "SHADOW ACCESS" in run.stdout and "drop_collection" in run.stdout
    # the streaming rule, over the ingested server records and the client's
    out = tmp_path / "server.jsonl"
    _ingest_jsonl([str(log)], out)
    alerts = [a for a in replay_files([jsonl, out], Rules()).alerts if a.rule == "shadow_access"]
    assert alerts
    port = next(iter(shadow_ports))
    address = result.shadow[0].attributes[semconv.CLIENT_ADDRESS]
    assert all(a.principal_attributes[semconv.USER_NAME] == milvus_server.root_user for a in alerts)
    assert any(f"{address}:{port}" in a.summary and a.principal_attributes[semconv.CLIENT_PORT] == port
               for a in alerts)
    assert any(a.severity == "high" and "DropCollection" in a.summary for a in alerts)


WRONG_PASSWORDS = """
import sys
from pymilvus import MilvusClient
uri, user = sys.argv[1:3]
for i in range(6):
    try:
        MilvusClient(uri, user=user, password=f"wrong-{i}", timeout=5)
    except Exception:
        pass
"""


@pytest.mark.server
def test_wrong_passwords_from_a_bare_client_are_brute_force_from_server_records_alone(
        milvus_server: MilvusServer, tmp_path: Path) -> None:
    offset = _mark(milvus_server)
    user = f"victim_{uuid.uuid4().hex[:6]}"
    run = subprocess.run([sys.executable, "-c", WRONG_PASSWORDS, milvus_server.uri, user],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    log = _server_lines_since(milvus_server, offset, tmp_path)
    out = tmp_path / "server.jsonl"
    _ingest_jsonl([str(log)], out)
    alerts = replay_files([out], Rules()).alerts
    brute = [a for a in alerts if a.rule == "brute_force"]
    assert [a.principal for a in brute] == [user]


@pytest.mark.server
def test_ingest_follow_survives_sigkill_and_restart(milvus_server: MilvusServer, tmp_path: Path) -> None:
    assert milvus_server.access_log is not None
    log, state, out = str(milvus_server.access_log), tmp_path / "state.json", tmp_path / "ingested.jsonl"
    command = [*CLI, "ingest", log, "--follow", "--state", str(state), "--jsonl", str(out)]
    env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": ""}
    jsonl = tmp_path / "client.jsonl"

    def traffic() -> None:
        pipeline, client = _audited(milvus_server, jsonl)
        try:
            client.list_collections()
            client.list_users()
        finally:
            client.close()
            pipeline.shutdown()

    def wait_for_state(previous: int) -> int:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if state.exists():
                offset = int(json.loads(state.read_text())["files"][log]["offset"])
                if offset > previous:
                    return offset
            time.sleep(0.2)
        raise AssertionError("the ingester saved no progress")

    first = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
    try:
        reached = wait_for_state(0)
        traffic()  # appended while the ingester runs
        time.sleep(2)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    traffic()  # appended while it is down
    second = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
    try:
        wait_for_state(reached)
        _server_lines_since(milvus_server, 0, tmp_path)  # the server is done writing
        time.sleep(3)
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=30)
    tailer = Tailer([log])
    parser = AccessLogParser()
    expected = {record_id(line) for line in tailer.lines() if parser.parse_line(line.text) is not None}
    emitted = [json.loads(line)["attributes"][semconv.SERVER_RECORD_ID] for line in out.read_text().splitlines()]
    missing = expected - set(emitted)
    assert expected and not missing, f"{len(missing)} of {len(expected)} access lines never emitted"
    assert set(emitted) == expected  # at least once; a line re-read after the SIGKILL keeps its id


@pytest.mark.server
def test_a_connection_shared_with_a_bare_client_made_before_is_still_joined(milvus_server: MilvusServer,
                                                                           tmp_path: Path) -> None:
    """pymilvus shares one connection between clients with the same URI and token: the audited
    client's calls still carry their trace ids when the connection predates it."""
    import pymilvus

    bare = pymilvus.MilvusClient(milvus_server.uri, user=milvus_server.root_user,
                                 password=milvus_server.root_password)
    bare.list_collections()
    offset = _mark(milvus_server)
    jsonl = tmp_path / "client.jsonl"
    pipeline, client = _audited(milvus_server, jsonl)
    try:
        client.list_collections()
        client.has_collection("missing")
    finally:
        client.close()
        pipeline.shutdown()
    result = reconcile(read_client_records([str(jsonl)]),
                       read_server_records([str(_server_lines_since(milvus_server, offset, tmp_path))],
                                           AccessLogParser()))
    assert [s.attributes[semconv.RPC_METHOD] for s in result.shadow] == []
    assert len(result.accounted) >= 2
    bare.close()
