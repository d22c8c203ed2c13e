"""`milvus-audit policy check FILE [--sample AUDIT.jsonl]` and `milvus-audit policy show PACK`.

`check` loads a policy (a YAML list, a file with a `policy:` section, a rules file or a
pack) and reports it, or the first problem with file, line and reason (exit 2). With
`--sample` it replays recorded `milvus.audit` records through the policy and says, per
category, how many it would keep, sample (and about how many of those survive) and drop.
Records of other events (alerts, responses, checkpoints, lifecycle...) never pass through
a policy: they are counted as kept.

`show` prints a shipped compliance pack; `compliance_table()` renders the requirement
mapping of every pack (docs/compliance.md embeds it, and a test keeps it current).
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from milvus_audit import semconv
from milvus_audit.export.jsonl import iter_jsonl
from milvus_audit.integrity.verify import core_record
from milvus_audit.model.policy import EXCLUDE, PACKS, SAMPLE, Policy, pack_requirements, pack_text, parse_policy_yaml


def add_parsers(subparsers: Any) -> None:
    """Register `policy check` and `policy show` on the command line's subparsers."""
    policy = subparsers.add_parser("policy", help="check an audit policy, or show a shipped compliance pack")
    commands = policy.add_subparsers(dest="policy_command", required=True)
    check = commands.add_parser("check", help="validate a policy; with --sample, what it would keep, sample and "
                                              "drop of recorded records, per category")
    check.add_argument("file", metavar="FILE", help="policy YAML (a list, or a file with a policy: section)")
    check.add_argument("--sample", metavar="AUDIT.jsonl", nargs="+", help="recorded JSONL audit records")
    check.set_defaults(handler=_check)
    show = commands.add_parser("show", help="print a shipped compliance pack (policy and requirement mapping)")
    show.add_argument("pack", choices=PACKS)
    show.set_defaults(handler=_show)


def load(path: str) -> Policy:
    return parse_policy_yaml(Path(path).read_text(encoding="utf-8"), path)


def simulate(policy: Policy, files: list[str]) -> dict[str, dict[str, float]]:
    """Per category: records, kept, sampled (and `sampled_kept`, the expected survivors), dropped."""
    table: dict[str, dict[str, float]] = defaultdict(lambda: {"records": 0, "kept": 0, "sampled": 0,
                                                               "sampled_kept": 0.0, "dropped": 0})
    for file in files:
        for _, line in iter_jsonl(file):
            record = core_record(line)
            attributes = record.get("attributes") or {}
            if record.get("event_name") != semconv.AUDIT_EVENT:
                row = table[f"({record.get('event_name') or 'unnamed'})"]
                row["records"] += 1
                row["kept"] += 1
                continue
            row = table[str(attributes.get(semconv.CATEGORY, "other"))]
            row["records"] += 1
            verdict = policy.decide_record(attributes)
            if verdict.action == EXCLUDE:
                row["dropped"] += 1
            elif verdict.action == SAMPLE:
                row["sampled"] += 1
                row["sampled_kept"] += verdict.rate
            else:
                row["kept"] += 1
    return dict(table)


def _check(args: argparse.Namespace) -> int:
    policy = load(args.file)
    print(f"{args.file}: ok, {len(policy.rules)} rules, hash {policy.hash}")
    if args.sample:
        table = simulate(policy, list(args.sample))
        print(f"\n{'category':<26} {'records':>9} {'kept':>9} {'sampled':>9} {'~kept of sampled':>17} "
              f"{'dropped':>9}")
        for category in sorted(table):
            row = table[category]
            print(f"{category:<26} {row['records']:>9.0f} {row['kept']:>9.0f} {row['sampled']:>9.0f} "
                  f"{row['sampled_kept']:>17.1f} {row['dropped']:>9.0f}")
        total = sum(r["records"] for r in table.values())
        kept = sum(r["kept"] + r["sampled_kept"] for r in table.values())
        print(f"\n{total:.0f} records in, about {kept:.0f} kept ({100 * kept / total if total else 0:.1f}%)")
    return 0


def _show(args: argparse.Namespace) -> int:
    sys.stdout.write(pack_text(args.pack))
    return 0


def _cell(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(_cell(v) for v in value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_cell(v)}" for k, v in value.items()) + "}"
    return str(value).replace("|", "\\|")


TABLE_BEGIN = "<!-- compliance-table:begin (generated from src/milvus_audit/model/packs; do not edit) -->"
TABLE_END = "<!-- compliance-table:end -->"


def main_table_markers() -> tuple[str, str]:
    """Where docs/compliance.md holds the generated table."""
    return TABLE_BEGIN, TABLE_END


def compliance_table() -> str:
    """The requirement mapping of every shipped pack, as the Markdown table in docs/compliance.md."""
    lines = ["| pack | requirement | what it asks | events that satisfy it | fields | settings |",
             "|---|---|---|---|---|---|"]
    for name in PACKS:
        for requirement in pack_requirements(name):
            events = "; ".join(f"`{_cell(e)}`" for e in requirement.get("events") or []) or "every record"
            fields = ", ".join(f"`{f}`" for f in requirement.get("fields") or [])
            lines.append(f"| `{name}` | {_cell(requirement['id'])} | {_cell(requirement['title'])} | {events} | "
                         f"{fields} | {_cell(requirement.get('settings') or '')} |")
    return "\n".join(lines) + "\n"
