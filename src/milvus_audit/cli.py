"""The `milvus-audit` command line (also `python -m milvus_audit`)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from milvus_audit.detect.rules import BUILTIN_RULES, Rules, RulesError
from milvus_audit.jsonl import read_jsonl, rfc3339


def _replay(args: argparse.Namespace) -> int:
    from milvus_audit.detect.replay import replay

    rules = Rules.from_yaml(args.rules) if args.rules else Rules()
    records = [record for path in args.files for record in read_jsonl(path)]
    records.sort(key=lambda r: r.get("timestamp", ""))
    result = replay(records, rules, explain=args.explain)
    if args.json:
        for alert in result.alerts:
            print(json.dumps({"timestamp": rfc3339(alert.timestamp_ns), **alert.attributes()}, default=str))
    else:
        print(f"{result.records} audit records, {len(result.alerts)} alerts")
        if result.alerts:
            print(f"{'time':<27} {'rule':<22} {'severity':<9} {'principal':<24} summary")
        for alert in result.alerts:
            principal = alert.principal.replace("\x00", " ")
            print(f"{rfc3339(alert.timestamp_ns):<27} {alert.rule:<22} {alert.severity:<9} {principal:<24} "
                  f"{alert.summary}")
    if args.explain:
        print("\nhow close each principal came to firing (peak value / threshold):", file=sys.stdout)
        for (rule, principal), ratio in sorted(result.engine.peaks().items(), key=lambda kv: (kv[0][0], -kv[1])):
            verdict = "fired" if ratio >= 1 else f"a threshold {ratio:.0%} of today's would have caught it"
            print(f"  {rule:<22} {principal.replace(chr(0), ' '):<30} {ratio:6.2f}  {verdict}")
    return 0


def _rules(args: argparse.Namespace) -> int:
    rules = Rules.from_yaml(args.rules) if args.rules else Rules()
    for rule_id, info in BUILTIN_RULES.items():
        settings = rules.rule(rule_id)
        params = ", ".join(f"{k}={v:g}" for k, v in settings.params.items())
        state = "on " if settings.enabled else "off"
        print(f"{state} {rule_id:<22} {settings.severity:<9} {' '.join(info.attack):<18} {params}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="milvus-audit", description="milvus-audit command line")
    commands = parser.add_subparsers(dest="command", required=True)
    replay = commands.add_parser("replay", help="run the detection rules over recorded JSONL audit records")
    replay.add_argument("files", nargs="+", help="JSONL files written by configure(jsonl_path=...)")
    replay.add_argument("--rules", help="a YAML rules file (default: the built-in rules)")
    replay.add_argument("--json", action="store_true", help="one JSON object per alert")
    replay.add_argument("--explain", action="store_true", help="how close each principal came to each rule")
    replay.set_defaults(handler=_replay)
    rules = commands.add_parser("rules", help="list the detection rules and their settings")
    rules.add_argument("--rules", help="a YAML rules file")
    rules.set_defaults(handler=_rules)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.handler(args)
        return code
    except (RulesError, ValueError, OSError) as exc:
        print(f"milvus-audit: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
