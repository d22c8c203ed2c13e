"""The `milvus-audit` command line (also `python -m milvus_audit`)."""

from __future__ import annotations

import argparse
import json
import secrets
import sys
from collections.abc import Sequence
from pathlib import Path

from milvus_audit.detect.rules import BUILTIN_RULES, Rules, RulesError
from milvus_audit.export.jsonl import read_jsonl, rfc3339


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


def _verify(args: argparse.Namespace) -> int:
    from milvus_audit.integrity.chain import integrity_key, load_public_key
    from milvus_audit.integrity.verify import verify

    if args.key_file:
        key: bytes | None = bytes.fromhex(Path(args.key_file).read_text().strip())
    else:
        key = integrity_key(args.key)
    public_key = load_public_key(args.public_key) if args.public_key else None
    if key is None and public_key is None:
        print("milvus-audit verify: give --key/--key-file (or MILVUS_AUDIT_INTEGRITY_KEY) and/or --public-key",
              file=sys.stderr)
        return 2
    reports = verify(args.files, key=key, public_key=public_key, allow_open=args.allow_open)
    broken = 0
    for report in reports:
        status = "BROKEN" if report.findings else "ok"
        print(f"stream {report.stream}: {report.records} records, {report.checkpoints} checkpoints, "
              f"{'closed' if report.closed else 'open'}: {status}")
        for finding in report.findings:
            print(f"  {finding}")
            broken += 1
    checked = "chain and checkpoint signatures" if key and public_key else ("chain" if key else "checkpoint signatures")
    print(f"checked: {checked}; {broken} problem(s)")
    return 1 if broken else 0


def _keygen(args: argparse.Namespace) -> int:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    private = Ed25519PrivateKey.generate()
    (out / "checkpoint-signing.pem").write_bytes(private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    (out / "checkpoint-signing.pem").chmod(0o600)
    (out / "checkpoint-verify.pem").write_bytes(private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    (out / "integrity.key").write_text(secrets.token_hex(32) + "\n")
    (out / "integrity.key").chmod(0o600)
    print(f"wrote {out}/checkpoint-signing.pem (keep secret), {out}/checkpoint-verify.pem (for verifiers), "
          f"{out}/integrity.key (HMAC key, hex; keep secret)")
    return 0


def _sigma_list(args: argparse.Namespace) -> int:
    from milvus_audit.siem.sigma import build_rules

    for rule in build_rules():
        kind = rule["correlation"]["type"] if "correlation" in rule else "event"
        tags = " ".join(t.removeprefix("attack.").upper() for t in rule["tags"])
        print(f"{rule['name']:<34} {kind:<12} {rule['level']:<14} {tags:<18} {rule['title']}")
    return 0


def _sigma_export(args: argparse.Namespace) -> int:
    try:
        from milvus_audit.siem.convert import convert
    except ImportError as exc:  # pragma: no cover - depends on the optional extra
        print(f"milvus-audit sigma export needs the siem extra: pip install 'milvus-audit[siem]' ({exc})",
              file=sys.stderr)
        return 2
    results = convert(args.backend, args.schema)
    output = Path(args.output) if args.output else None
    if output is not None:
        output.mkdir(parents=True, exist_ok=True)
    for result in results:
        text = result.query if result.query is not None else f"# skipped: {result.skipped}"
        if output is not None:
            (output / f"{result.rule}.{args.backend}.txt").write_text(text + "\n")
        else:
            print(f"# {result.rule} ({result.kind})\n{text}\n")
    skipped = [r.rule for r in results if r.query is None]
    print(f"{len(results) - len(skipped)} rules converted for {args.backend}"
          + (f"; correlations not expressible there: {', '.join(skipped)}" if skipped else "")
          + (f"; written to {output}" if output else ""), file=sys.stderr)
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
    verify = commands.add_parser("verify", help="check the tamper-evident chain of JSONL audit files")
    verify.add_argument("files", nargs="+")
    verify.add_argument("--key", help="the integrity (HMAC) key, hex (default: MILVUS_AUDIT_INTEGRITY_KEY)")
    verify.add_argument("--key-file", help="a file holding the integrity key, hex")
    verify.add_argument("--public-key", help="the checkpoint verification key (Ed25519 PEM)")
    verify.add_argument("--allow-open", action="store_true",
                        help="accept a stream without a final checkpoint (a live stream)")
    verify.set_defaults(handler=_verify)
    sigma = commands.add_parser("sigma", help="Sigma rules for SIEMs")
    sigma_commands = sigma.add_subparsers(dest="sigma_command", required=True)
    sigma_list = sigma_commands.add_parser("list", help="list the shipped Sigma rules")
    sigma_list.set_defaults(handler=_sigma_list)
    export = sigma_commands.add_parser("export", help="convert the Sigma rules to SIEM queries")
    export.add_argument("--backend", required=True, choices=["splunk", "elasticsearch", "opensearch", "loki"])
    export.add_argument("--schema", choices=["otel", "ecs"],
                        help="field names: raw OTLP attributes or ECS (default: ecs for Elastic/OpenSearch)")
    export.add_argument("--output", help="a directory for one file per rule (default: stdout)")
    export.set_defaults(handler=_sigma_export)
    keygen = commands.add_parser("keygen", help="create an integrity key and a checkpoint signing key pair")
    keygen.add_argument("--out", default=".")
    keygen.set_defaults(handler=_keygen)
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
