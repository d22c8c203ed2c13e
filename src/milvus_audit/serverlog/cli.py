"""`milvus-audit ingest` and `milvus-audit reconcile`: their arguments and handlers.

`milvus_audit.cli` registers them with `add_parsers(subparsers, detection=...)`; detection
(`ingest --detect`) is handed in from there, since this layer sits below the engine.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

from milvus_audit.export.console import printable
from milvus_audit.serverlog.formats import Pattern, default_formats, formats_from_milvus_yaml, formats_from_string
from milvus_audit.serverlog.ingest import Detector, OTelSink, ingest
from milvus_audit.serverlog.parse import AccessLogParser

__all__ = ["DetectionFactory", "add_parsers"]

# (rules file or None, the emitter alerts are recorded through) -> a Detector
DetectionFactory = Callable[[str | None, Any], Detector]


def _formats(args: argparse.Namespace) -> Sequence[Pattern]:
    if getattr(args, "milvus_config", None):
        return formats_from_milvus_yaml(args.milvus_config)
    if getattr(args, "format", None):
        return formats_from_string(args.format)
    return default_formats()


def _parser(args: argparse.Namespace) -> AccessLogParser:
    return AccessLogParser(_formats(args), capture_filters=args.capture_filters,
                           server_address=getattr(args, "server_address", None))


def _report_problems(parser: AccessLogParser, command: str) -> None:
    stats = parser.stats
    for problem in stats.problems:
        print(f"milvus-audit {command}: malformed access line: {printable(problem)}", file=sys.stderr)
    if stats.malformed > len(stats.problems):
        print(f"milvus-audit {command}: ... and {stats.malformed - len(stats.problems)} more malformed lines",
              file=sys.stderr)


def _ingest(args: argparse.Namespace, detection: DetectionFactory | None) -> int:
    if args.print_collector_config:
        from milvus_audit.serverlog.collector import collector_config

        print(collector_config(list(_formats(args)), args.files or ["/var/log/milvus/access.log"],
                               endpoint=args.endpoint or "localhost:4317",
                               server_address=args.server_address), end="")
        return 0
    if not args.files:
        raise ValueError("ingest: give the access log files to read (or --print-collector-config)")
    from milvus_audit.otel.emitter import OTelEmitter
    from milvus_audit.otel.setup import configure

    otlp = args.endpoint or any(os.environ.get(v) for v in ("OTEL_EXPORTER_OTLP_ENDPOINT",
                                                             "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT"))
    if not otlp and not args.jsonl:
        raise ValueError("ingest: nowhere to send the records: give --jsonl PATH and/or --endpoint URL "
                         "(or OTEL_EXPORTER_OTLP_ENDPOINT)")
    pipeline = configure(args.endpoint, protocol=args.protocol, jsonl_path=args.jsonl, spool_dir=args.spool_dir,
                         service_name=args.service_name, set_global=False)
    emitter = OTelEmitter(pipeline.audit_config())
    parser = _parser(args)
    detector = None
    if args.detect is not None:
        if detection is None:
            raise ValueError("ingest --detect: detection is not available in this build")
        detector = detection(args.detect or None, emitter)
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        result = ingest(args.files, OTelSink(emitter, pipeline.force_flush), parser=parser, follow=args.follow,
                        state_path=args.state, detector=detector, client_paths=args.client,
                        stop=lambda: stopping)
    except KeyboardInterrupt:
        result = None
    finally:
        signal.signal(signal.SIGTERM, previous)
        pipeline.shutdown()
    _report_problems(parser, "ingest")
    stats = parser.stats
    if result is not None:
        print(f"milvus-audit ingest: {result.emitted} server records from {stats.lines} lines "
              f"({stats.skipped} other lines skipped, {stats.malformed} malformed)", file=sys.stderr)
    return 0


def _reconcile(args: argparse.Namespace) -> int:
    from milvus_audit.serverlog.reconcile import read_client_records, read_server_records, reconcile

    parser = _parser(args)
    clients = read_client_records(args.client)
    servers = read_server_records(args.server, parser)
    result = reconcile(clients, servers, grace_s=args.grace_s, parse=parser.stats)
    _report_problems(parser, "reconcile")
    if args.json:
        print(json.dumps(result.to_json(), default=str))
    else:
        _print_text(result)
    return 1 if result.shadow else 0


def _print_text(result: Any) -> None:
    data = result.to_json()
    print(f"{data['server_records']} server RPCs, {data['client_records']} client records: "
          f"{data['accounted']} accounted ({data['accounted_calls']} client calls), {data['shadow']} shadow, "
          f"{data['unconfirmed']} unconfirmed" + (f" ({data['outside_coverage']} client records outside the "
                                                  f"server log's time, not judged)" if data["outside_coverage"]
                                                  else ""))
    if data["calls"]:
        print("\nRPCs per client call:")
        for call in data["calls"]:
            rpcs = ", ".join(f"{printable(name)} x {count}" for name, count in sorted(call["rpcs"].items()))
            print(f"  {printable(call['operation']):<26} {call['calls']:>6} calls  {call['rpcs_per_call']:>6} "
                  f"RPCs/call  {rpcs}")
    if data["shadow_groups"]:
        print("\nSHADOW ACCESS (server RPCs with no audited client record):")
        print(f"  {'user':<16} {'client address':<24} {'sdk':<18} {'operation':<24} {'count':>6}  first seen"
              "                   last seen")
        for group in data["shadow_groups"]:
            print(f"  {printable(group['user']):<16} {printable(group['client_address']):<24} "
                  f"{printable(group['sdk']):<18} {printable(group['operation']):<24} {group['count']:>6}  "
                  f"{group['first_seen']:<28} {group['last_seen']}")
    if data["shadow_sensitive"]:
        print("\ndestructive and RBAC shadow access:")
        for item in data["shadow_sensitive"]:
            print(f"  {item['time']} {item['kind']:<11} {printable(item['user'])} from "
                  f"{printable(item['client_address'])}:{item['client_port']} {printable(item['rpc'])} "
                  f"({printable(item['operation'])}) {printable(item['collection'] or '')} {item['outcome']}")
    if data["unconfirmed_records"]:
        print("\nUNCONFIRMED (client records claiming success with no server line):")
        for item in data["unconfirmed_records"][:50]:
            print(f"  {item['time']} {printable(item['operation'])} trace {item['trace_id']} "
                  f"{printable(item['where'])}")


def _add_format_options(command: argparse.ArgumentParser) -> None:
    group = command.add_mutually_exclusive_group()
    group.add_argument("--milvus-config", metavar="milvus.yaml",
                       help="read the access log's formatters from the server's milvus.yaml")
    group.add_argument("--format", help="a custom access-log format string ($placeholders)")
    command.add_argument("--capture-filters", choices=["sanitized", "raw", "none"], default="sanitized",
                         help="how logged filter expressions are recorded (default: sanitized, as for clients)")


def add_parsers(subparsers: Any, *, detection: DetectionFactory | None = None) -> None:
    """Register `ingest` and `reconcile` on the command line's subparsers."""
    ingest_command = subparsers.add_parser(
        "ingest", help="send the Milvus server's access log through the audit pipeline (OTLP, JSONL, spool)")
    ingest_command.add_argument("files", nargs="*", metavar="ACCESS_LOG",
                                help="access log files (or the server's stdout log, other lines are skipped)")
    ingest_command.add_argument("--follow", action="store_true",
                                help="keep reading as the files grow, across rotation and truncation (tail -F)")
    ingest_command.add_argument("--state", metavar="FILE", help="resume from and save read offsets in FILE")
    _add_format_options(ingest_command)
    ingest_command.add_argument("--jsonl", metavar="PATH", help="append the records to a JSONL file")
    ingest_command.add_argument("--endpoint", metavar="URL", help="OTLP endpoint (default: OTEL_EXPORTER_OTLP_*)")
    ingest_command.add_argument("--protocol", choices=["grpc", "http/protobuf"], default="grpc")
    ingest_command.add_argument("--spool-dir", metavar="DIR", help="at-least-once OTLP delivery through a spool")
    ingest_command.add_argument("--server-address", metavar="HOST", help="the Milvus the log came from "
                                                                         "(server.address on every record)")
    ingest_command.add_argument("--service-name", default="milvus-audit-ingest", help="the records' service.name")
    ingest_command.add_argument("--detect", nargs="?", const="", metavar="RULES_YAML",
                                help="run the detection rules (shadow_access, brute force, ...) on the records")
    ingest_command.add_argument("--client", nargs="+", metavar="JSONL", default=None,
                                help="client records (JSONL) that --detect joins server records to")
    ingest_command.add_argument("--print-collector-config", action="store_true",
                                help="print an OpenTelemetry Collector config (filelog) that parses the same lines")
    ingest_command.set_defaults(handler=lambda args: _ingest(args, detection))

    reconcile_command = subparsers.add_parser(
        "reconcile", help="join the server's access log to client records; exit 1 on shadow access")
    reconcile_command.add_argument("--client", nargs="+", required=True, metavar="JSONL",
                                   help="client audit records (configure(jsonl_path=...))")
    reconcile_command.add_argument("--server", nargs="+", required=True, metavar="ACCESS_LOG",
                                   help="the server's access log (raw, or JSONL written by ingest)")
    reconcile_command.add_argument("--json", action="store_true", help="one JSON report")
    reconcile_command.add_argument("--grace-s", type=float, default=5.0,
                                   help="how far apart a refused call's client and server records may be (s)")
    _add_format_options(reconcile_command)
    reconcile_command.set_defaults(handler=_reconcile)
