"""The `milvus-audit` command line (also `python -m milvus_audit`).

Exit codes: 0 success; 1 a finding (verify found a problem, replay found no audit
records); 2 unusable input or usage, reported as one line on stderr that names the file
(and the line, where there is one), never a traceback. Every value printed for humans
goes through `printable()`, so what the records carry cannot forge lines or hide text.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from milvus_audit._version import __version__
from milvus_audit.detect.rules import BUILTIN_RULES, Rules, RulesError
from milvus_audit.export.console import printable
from milvus_audit.export.jsonl import rfc3339
from milvus_audit.serverlog.cli import add_parsers as add_serverlog_parsers

KEY_FILES = ("checkpoint-signing.pem", "checkpoint-verify.pem", "integrity.key")
SIEM_EXTRA = "pip install 'milvus-audit[siem]'"


class CliError(Exception):
    """A clear one-line message for the operator; exit code 2."""


def _out(text: str = "") -> None:
    print(text)


def _rules_from(path: str | None) -> Rules:
    return Rules.from_yaml(path) if path else Rules()


def _replay(args: argparse.Namespace) -> int:
    from milvus_audit.detect.replay import replay_files
    from milvus_audit.review.progress import progress_bar

    with progress_bar(args.files, "replay") as progress:
        result = replay_files(args.files, _rules_from(args.rules), explain=args.explain, progress=progress)
    if result.records == 0:
        names = ", ".join(printable(path) for path in args.files)
        print(f"milvus-audit replay: no audit records (milvus.audit) in {names}", file=sys.stderr)
        return 1
    if args.json:
        for alert in result.alerts:  # JSON escaping (ASCII only) keeps each alert one line
            _out(json.dumps({"timestamp": rfc3339(alert.timestamp_ns), **alert.attributes()}, default=str))
    else:
        _out(f"{result.records} audit records, {len(result.alerts)} alerts")
        if result.alerts:
            _out(f"{'time':<27} {'rule':<22} {'severity':<9} {'principal':<24} summary")
        for alert in result.alerts:
            principal = printable(alert.principal.replace("\x00", " "))
            _out(f"{rfc3339(alert.timestamp_ns):<27} {printable(alert.rule):<22} {printable(alert.severity):<9} "
                 f"{principal:<24} {printable(alert.summary)}")
    if result.late:
        print(f"milvus-audit replay: {result.late} records came more than {REORDER_WINDOW_TEXT} late and were "
              "replayed out of time order", file=sys.stderr)
    if args.explain:
        _explain(result)
    return 0


REORDER_WINDOW_TEXT = "10,000 records"
NEAR_MISS = 0.5  # --explain lists principals that reached at least this share of a threshold without firing


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.2f}".rstrip("0").rstrip(".")


def _explain(result: Any) -> None:
    from collections import Counter

    from milvus_audit.detect.replay import LEARNED, explain_peaks

    if result.alerts:
        _out("\neach alert, its value against its threshold:")
        for alert in result.alerts:
            principal = printable(alert.principal.replace("\x00", " "))
            _out(f"  {printable(alert.rule):<22} {principal:<30} value {_fmt(alert.count):>10} "
                 f"threshold {_fmt(alert.threshold):>10}  ({rfc3339(alert.timestamp_ns)})")
    peaks = [p for p in explain_peaks(result.engine) if NEAR_MISS <= p.ratio < 1]
    _out(f"\nnear misses (reached {NEAR_MISS:.0%} or more of a threshold without firing): {len(peaks)}")
    for peak in sorted(peaks, key=lambda p: (p.rule, -p.ratio)):
        principal = printable(peak.principal.replace("\x00", " "))
        if peak.threshold is not None:
            against = f"peak {_fmt(peak.value):>10} against {printable(peak.param)}={_fmt(peak.threshold)}"
        else:
            against = f"peak {peak.ratio:.0%} of its learned threshold, {printable(LEARNED.get(peak.rule, ''))}"
        _out(f"  {printable(peak.rule):<22} {principal:<30} {against} ({peak.ratio:.0%})")
    fired = Counter(alert.rule for alert in result.alerts)
    if fired:
        _out("\nrules that fired most:")
        for rule, count in fired.most_common(5):
            principals = len({alert.principal for alert in result.alerts if alert.rule == rule})
            _out(f"  {printable(rule):<22} {count:>6} alerts for {principals} principal(s)")
        _out("hint: if these are routine, `milvus-audit tune BASELINE.jsonl -o rules.yaml` learns thresholds "
             "and allowlists from ordinary traffic (then replay --rules rules.yaml)")


def _rules(args: argparse.Namespace) -> int:
    rules = _rules_from(args.rules)
    defaults = Rules()
    source = printable(args.rules) + " merged over the built-in defaults" if args.rules else "the built-in defaults"
    _out(f"# effective detection rules: {source} (* = set by the file)")
    _out(f"# max_principals={rules.max_principals}")
    _out(f"{'on':<3} {'rule':<22} {'severity':<9} {'ATT&CK':<18} {'cooldown_s':<11} parameters")
    for rule_id, info in BUILTIN_RULES.items():
        settings, default = rules.rule(rule_id), defaults.rule(rule_id)

        def mark(changed: bool) -> str:
            return "*" if changed else ""

        params = ", ".join(f"{printable(k)}={v:g}{mark(v != default.params.get(k))}"
                           for k, v in settings.params.items())
        state = "on " if settings.enabled else "off"
        cooldown = f"{settings.cooldown_s:g}{mark(settings.cooldown_s != default.cooldown_s)}"
        severity = f"{printable(settings.severity)}{mark(settings.severity != default.severity)}"
        _out(f"{state} {printable(rule_id):<22} {severity:<9} {printable(' '.join(info.attack)):<18} "
             f"{cooldown:<11} {params}")
        if settings.allowlist:
            _out(f"    allowlist*: {', '.join(printable(p) for p in sorted(settings.allowlist))}")
        for collection, overrides in sorted(settings.collections.items()):
            values = ", ".join(f"{printable(k)}={v:g}" for k, v in overrides.items())
            _out(f"    collection {printable(collection)}*: {values}")
    playbooks = _playbooks_of(args.rules) if args.rules else []
    _out(f"# playbooks: {len(playbooks)}" + ("" if playbooks else " (none)"))
    for playbook in playbooks:
        _out(f"  {printable(playbook)}")
    return 0


def _playbooks_of(path: str) -> list[str]:
    """The playbooks of a rules file, one line each (name, what triggers it, its actions)."""
    import yaml

    try:
        root = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):  # Rules.from_yaml already reported a bad file
        return []
    books = root.get("playbooks") if isinstance(root, dict) else None
    if isinstance(books, dict):
        books = [{"name": name, **(value if isinstance(value, dict) else {"value": value})}
                 for name, value in books.items()]
    lines = []
    for book in books if isinstance(books, list) else []:
        if not isinstance(book, dict):
            lines.append(str(book))
            continue
        name = book.get("name", "(unnamed)")
        rest = {k: v for k, v in book.items() if k != "name"}
        lines.append(f"{name}: " + "; ".join(f"{k}={json.dumps(v, default=str, sort_keys=True)}"
                                              for k, v in rest.items()))
    return lines


# -- keys -----------------------------------------------------------------------------
def _looks_like_pem(data: bytes) -> bool:
    return data.lstrip().startswith(b"-----BEGIN")


def _hex_key(data: bytes) -> bytes | None:
    from milvus_audit.integrity.chain import hex_key

    return hex_key(data)


def read_key_file(path: str | Path) -> bytes:
    """The integrity (HMAC) key in a file (the same reading as `AuditConfig(integrity_key=PATH)`)."""
    from milvus_audit.integrity import chain

    try:
        return chain.read_key_file(path)
    except ValueError as exc:
        raise CliError(str(exc)) from None


def _integrity_key(args: argparse.Namespace) -> bytes | None:
    from milvus_audit.integrity.chain import KEY_ENV

    if args.key_file:
        return read_key_file(args.key_file)
    if args.key:
        key = _hex_key(args.key.encode("utf-8", "replace"))
        if key is None:
            hint = "; for a file holding the key use --key-file" if Path(args.key).is_file() else ""
            raise CliError(f"--key: not a hex key{hint}")
        return key
    env = os.environ.get(KEY_ENV)
    if not env:
        return None
    key = _hex_key(env.encode("utf-8", "replace"))
    if key is None:
        raise CliError(f"{KEY_ENV}: not a hex key")
    return key


def _public_key(path: str) -> Any:
    from cryptography.exceptions import UnsupportedAlgorithm

    from milvus_audit.integrity.chain import load_public_key

    data = Path(path).read_bytes()
    if not _looks_like_pem(data):
        what = "the integrity (HMAC) key? give it with --key-file" if _hex_key(data) or len(data) == 32 \
            else "not a key file"
        raise CliError(f"{path}:1: not a PEM public key ({what}); --public-key takes checkpoint-verify.pem")
    if b"PRIVATE KEY" in data.lstrip().split(b"\n", 1)[0]:
        raise CliError(f"{path}:1: a private key: --public-key takes the public checkpoint-verify.pem "
                       "(keep checkpoint-signing.pem secret)")
    try:
        return load_public_key(path)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise CliError(f"{path}:1: not an Ed25519 public key in PEM form; --public-key takes "
                       "checkpoint-verify.pem") from None


def _verify(args: argparse.Namespace) -> int:
    from milvus_audit.integrity.verify import verify

    key = _integrity_key(args)
    public_key = _public_key(args.public_key) if args.public_key else None
    if key is None and public_key is None:
        raise CliError("verify: give --key/--key-file (or MILVUS_AUDIT_INTEGRITY_KEY) and/or --public-key")
    from milvus_audit.review.progress import progress_bar

    expect: dict[str, Any] = {"expect_streams": args.expect_streams} if args.expect_streams is not None else {}
    with progress_bar(args.files, "verify") as progress:
        reports = verify(args.files, key=key, public_key=public_key, allow_open=args.allow_open,
                         from_checkpoint=args.from_checkpoint, progress=progress, **expect)
    unreadable = [finding for report in reports for finding in report.findings if finding.kind == "unreadable"]
    if unreadable:  # input the tool cannot use is exit 2, one line, like every other command's
        raise CliError(f"{unreadable[0].where}: {unreadable[0].detail}")
    if not reports:
        names = ", ".join(printable(path) for path in args.files)
        print(f"milvus-audit verify: no chained records in {names}", file=sys.stderr)
        return 1
    broken = 0
    for report in reports:
        status = "BROKEN" if report.findings else "ok"
        _out(f"stream {printable(report.stream)}: {report.records} records, {report.checkpoints} checkpoints, "
             f"{'closed' if report.closed else 'open'}: {status}")
        if report.from_seq:
            _out(f"  verified from its checkpoint at seq {report.from_seq} (--from-checkpoint): the "
                 f"{report.skipped} records before it in the input were not verified")
        for finding in report.findings:
            _out(f"  {printable(finding)}")
            broken += 1
    checked = "chain and checkpoint signatures" if key and public_key else ("chain" if key else "checkpoint signatures")
    _out(f"checked: {checked}; {broken} problem(s)")
    return 1 if broken else 0


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - filesystems that cannot fsync a directory
        pass
    finally:
        os.close(fd)


def write_atomically(path: Path, data: bytes, mode: int, *, overwrite: bool) -> None:
    """Write `path` whole or not at all: a temporary file in the same directory, created
    with `mode`, written and fsynced, then renamed into place. Without `overwrite` an
    existing `path` is never replaced (a hard link refuses atomically)."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if overwrite:
            os.replace(temporary, path)
        else:
            try:
                os.link(temporary, path)
            except FileExistsError:
                raise CliError(f"{path}: exists; refusing to overwrite it (--force replaces it)") from None
            except OSError:  # no hard links on this filesystem
                if path.exists() or path.is_symlink():
                    raise CliError(f"{path}: exists; refusing to overwrite it (--force replaces it)") from None
                os.replace(temporary, path)
    finally:
        if os.path.lexists(temporary):
            os.unlink(temporary)
    _fsync_dir(path.parent)


def _keygen(args: argparse.Namespace) -> int:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CliError(f"{out}: exists and is not a directory; --out takes a directory")
    out.mkdir(parents=True, exist_ok=True)
    existing = [out / name for name in KEY_FILES if (out / name).exists() or (out / name).is_symlink()]
    if existing and not args.force:
        raise CliError(f"{existing[0]}: exists; refusing to overwrite keys, which would make the logs they "
                       "sealed unverifiable (--force replaces them; keep the old ones for those logs)")
    private = Ed25519PrivateKey.generate()
    write_atomically(out / "checkpoint-signing.pem", private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        0o600, overwrite=args.force)
    write_atomically(out / "checkpoint-verify.pem", private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo), 0o644, overwrite=args.force)
    write_atomically(out / "integrity.key", (secrets.token_hex(32) + "\n").encode(), 0o600, overwrite=args.force)
    where = printable(out)
    _out(f"wrote {where}/checkpoint-signing.pem (keep secret), {where}/checkpoint-verify.pem (for verifiers), "
         f"{where}/integrity.key (HMAC key, hex; keep secret)")
    return 0


# -- Sigma ----------------------------------------------------------------------------
def _sigma_list(args: argparse.Namespace) -> int:
    from milvus_audit.siem.sigma import build_rules

    rules = build_rules()
    width = max(len(rule["name"]) for rule in rules)
    for rule in rules:
        kind = rule["correlation"]["type"] if "correlation" in rule else "event"
        tags = " ".join(t.removeprefix("attack.").upper() for t in rule["tags"])
        _out(printable(f"{rule['name']:<{width}} {kind:<12} {rule['level']:<14} {tags:<18} {rule['title']}"))
    return 0


def _tuned_sigma(path: str) -> str:
    """The Sigma rules built from a rules file's settings (thresholds and windows; disabled rules
    left out), as one multi-document YAML text. Allowlists and per-collection overrides have no
    Sigma form: they are noted on stderr."""
    import yaml

    from milvus_audit.detect.rules.registry import RULES

    rules = Rules.from_yaml(path)
    documents = []
    for rule in RULES:
        settings = rules.rule(rule.id)
        if not settings.enabled:
            continue
        if settings.allowlist or settings.collections:
            print(f"milvus-audit sigma export: {rule.id}: its allowlist and per-collection overrides have no "
                  "Sigma form; exclude them in the SIEM", file=sys.stderr)
        documents += [yaml.safe_dump(sigma, sort_keys=False, width=120) for sigma in rule.sigma(settings.params)]
    return "\n---\n".join(documents)


def _siem_missing(exc: ImportError) -> CliError:
    return CliError(f"sigma export needs the siem extra: {SIEM_EXTRA} ({exc})")


def _sigma_export(args: argparse.Namespace) -> int:
    output = Path(args.output) if args.output else None
    if output is not None and (output.exists() or output.is_symlink()) and not output.is_dir():
        raise CliError(f"{output}: exists and is not a directory; --output takes a directory for one file per rule")
    try:
        import sigma.collection  # the extra's core: without it, say how to install it
        import sigma.processing.pipeline  # noqa: F401

        from milvus_audit.siem.convert import convert

        results = convert(args.backend, args.schema, _tuned_sigma(args.rules) if args.rules else None)
    except ImportError as exc:
        raise _siem_missing(exc) from None
    if output is not None:
        targets = [output / f"{result.rule}.{args.backend}.txt" for result in results]
        existing = [target for target in targets if target.exists() or target.is_symlink()]
        if existing and not args.force:
            raise CliError(f"{existing[0]}: exists; refusing to overwrite it (--force replaces the rule files)")
        output.mkdir(parents=True, exist_ok=True)
    for result in results:
        text = result.query if result.query is not None else f"# skipped: {result.skipped}"
        if output is not None:
            target = output / f"{result.rule}.{args.backend}.txt"
            write_atomically(target, (text + "\n").encode(), 0o644, overwrite=True)
        else:
            _out(f"# {result.rule} ({result.kind})\n{text}\n")
    skipped = [r.rule for r in results if r.query is None]
    print(f"{len(results) - len(skipped)} rules converted for {args.backend}"
          + (f"; correlations not expressible there: {', '.join(skipped)}" if skipped else "")
          + (f"; written to {printable(output)}" if output else ""), file=sys.stderr)
    return 0


# -- review ---------------------------------------------------------------------------
def parse_time(text: str, *, now_ns: int | None = None) -> int:
    """--since/--until: RFC 3339 (`2026-03-01T00:00:00Z`), a date (`2026-03-01`, UTC), or a
    duration before now (`90m`, `24h`, `7d`)."""
    import re
    import time

    from milvus_audit.export.jsonl import parse_rfc3339

    text = text.strip()
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhdw])", text)
    if match:
        unit = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}[match.group(2)]
        now = time.time_ns() if now_ns is None else now_ns
        return now - int(float(match.group(1)) * unit * 1e9)
    if re.fullmatch(r"\d{4}-\d\d-\d\d", text):
        text += "T00:00:00Z"
    try:
        from datetime import datetime

        if datetime.fromisoformat(text.replace("Z", "+00:00")).tzinfo is None:
            text += "Z"
        return parse_rfc3339(text)
    except ValueError:
        raise CliError(f"not a time: {printable(text)!s} (RFC 3339 such as 2026-03-01T08:00:00Z, a date, "
                       "or a duration before now such as 24h or 7d)") from None


REPORT_SUFFIXES = {".html": "html", ".htm": "html", ".md": "md", ".markdown": "md", ".txt": "text",
                   ".json": "json"}


def _report(args: argparse.Namespace) -> int:
    from milvus_audit.review import charts
    from milvus_audit.review.progress import progress_bar
    from milvus_audit.review.render import render
    from milvus_audit.review.report import build_report

    fmt = args.format or (REPORT_SUFFIXES.get(Path(args.output).suffix.lower(), "html") if args.output else "text")
    if fmt == "html" and not charts.available():
        raise CliError(f"report --format html needs matplotlib for its charts: {charts.REPORT_EXTRA} "
                       "(md, text and json need nothing more)")
    since = parse_time(args.since) if args.since else None
    until = parse_time(args.until) if args.until else None
    if since is not None and until is not None and since >= until:
        raise CliError("--since must be before --until")
    key = _integrity_key(args)
    public_key = _public_key(args.public_key) if args.public_key else None
    passes = 2 if key is not None or public_key is not None else 1
    with progress_bar(args.files, "report", passes) as progress:
        report = build_report(args.files, since_ns=since, until_ns=until, server_logs=args.server_log,
                              key=key, public_key=public_key, from_checkpoint=args.from_checkpoint,
                              progress=progress)
    if report.data["counts"]["records"] == 0 and not report.data["counts"]["outside_period"]:
        names = ", ".join(printable(path) for path in args.files)
        print(f"milvus-audit report: no audit records in {names}", file=sys.stderr)
    text = render(report.data, fmt)
    if args.output:
        output = Path(args.output)
        if output.is_dir():
            raise CliError(f"{output}: is a directory; -o takes the report's file name")
        if (output.exists() or output.is_symlink()) and not args.force:
            raise CliError(f"{output}: exists; refusing to overwrite it (--force replaces it)")
        write_atomically(output, text.encode("utf-8"), 0o644, overwrite=args.force)
        counts = report.data["counts"]
        print(f"milvus-audit report: {counts['records']} records, {counts['alerts']} alerts; wrote "
              f"{printable(output)} ({fmt}, {output.stat().st_size:,} bytes)", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def _tune(args: argparse.Namespace) -> int:
    from milvus_audit.review.progress import progress_bar
    from milvus_audit.review.tune import tune

    if args.alerts_per_day < 0:
        raise CliError("--alerts-per-day must be 0 or more")
    current = _rules_from(args.rules)
    current_text = Path(args.rules).read_text(encoding="utf-8") if args.rules else None
    with progress_bar(args.files, "tune (baseline)") as progress:
        result = tune(args.files, current=current, alerts_per_day=args.alerts_per_day, progress=progress,
                      current_text=current_text)
    if result.records == 0:
        names = ", ".join(printable(path) for path in args.files)
        print(f"milvus-audit tune: no audit records (milvus.audit) in {names}", file=sys.stderr)
        return 1
    stream = sys.stderr if not args.output else sys.stdout
    print(f"baseline: {result.records} audit records over {result.days:.1f} day(s)", file=stream)
    print(f"{'rule':<22} {'param':<15} {'current':>9} {'p50':>9} {'p99':>9} {'max':>9} {'suggested':>9} "
          f"{'alerts now':>10} {'tuned':>6}", file=stream)
    for tuning in result.rules:
        suggested = _fmt(tuning.suggested)
        if tuning.allowlist:
            suggested += " +allowlist"
        if tuning.collections:
            suggested += " +collection"
        print(f"{printable(tuning.rule):<22} {printable(tuning.param or '-'):<15} {_fmt(tuning.current):>9} "
              f"{_fmt(tuning.p50):>9} {_fmt(tuning.p99):>9} {_fmt(tuning.max):>9} {suggested:>9} "
              f"{tuning.alerts_current:>10} {tuning.alerts_suggested:>6}", file=stream)
        for why in tuning.why:
            print(f"    {printable(why)}", file=stream)
    if args.output:
        output = Path(args.output)
        if (output.exists() or output.is_symlink()) and not args.force:
            raise CliError(f"{output}: exists; refusing to overwrite it (--force replaces it)")
        write_atomically(output, result.yaml_text.encode("utf-8"), 0o644, overwrite=args.force)
        print(f"wrote {printable(output)}: check it with `milvus-audit rules --rules {printable(output)}` and "
              f"`milvus-audit replay BASELINE --rules {printable(output)}`", file=stream)
    else:
        sys.stdout.write(result.yaml_text)
    return 0


def _add_review_parsers(commands: Any) -> None:
    report = commands.add_parser("report", help="a report for people: timeline, principals, failures, RBAC changes, "
                                                "destructive operations, alerts (HTML, Markdown, text, JSON)")
    report.add_argument("files", nargs="+", help="JSONL audit files, any format, plain or gzip (- reads standard "
                                                 "input); a rotated set in any order")
    report.add_argument("--server-log", nargs="+", metavar="ACCESS_LOG", default=None,
                        help="Milvus access logs (or JSONL from ingest): adds shadow access")
    report.add_argument("--key", help="the integrity (HMAC) key, hex: adds the integrity status")
    report.add_argument("--key-file", help="a file holding the integrity key: adds the integrity status")
    report.add_argument("--public-key", help="the checkpoint verification key (checkpoint-verify.pem)")
    report.add_argument("--from-checkpoint", action="store_true", help="integrity of streams that start mid-way: "
                                                                       "from their first checkpoint")
    report.add_argument("-o", "--output", help="write the report to this file (format from its suffix: .html, .md, "
                                               ".txt, .json; default html)")
    report.add_argument("--format", choices=["html", "md", "text", "json"],
                        help="the report's format (default: from -o, else text on stdout)")
    report.add_argument("--since", help="only records at or after this time (RFC 3339, a date, or 24h/7d ago)")
    report.add_argument("--until", help="only records before this time")
    report.add_argument("--force", action="store_true", help="replace an existing -o file")
    report.set_defaults(handler=_report)
    tune = commands.add_parser("tune", help="suggest rule thresholds and allowlists from baseline traffic")
    tune.add_argument("files", nargs="+", metavar="BASELINE", help="JSONL of ordinary traffic (plain or gzip; -)")
    tune.add_argument("-o", "--output", help="write the tuned rules file here (default: stdout)")
    tune.add_argument("--alerts-per-day", type=int, default=0, metavar="N",
                      help="raise thresholds to about N alerts a day on the baseline instead of none (default 0)")
    tune.add_argument("--rules", help="the current rules file (default: the built-in rules); its playbooks are kept")
    tune.add_argument("--force", action="store_true", help="replace an existing -o file")
    tune.set_defaults(handler=_tune)


def _server_detection(rules: str | None, emitter: Any) -> Any:
    """`ingest --detect`: the rules over the ingested records, alerts recorded through `emitter`."""
    from milvus_audit.detect.sink import StreamDetector, record_alerts

    return StreamDetector(_rules_from(rules), [record_alerts(emitter)])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="milvus-audit", description="milvus-audit command line",
        epilog="exit codes: 0 ok; 1 a finding (verify: a problem; replay: no audit records); "
               "2 unusable input or usage (one line on stderr naming the file and line)")
    parser.add_argument("--version", action="version", version=f"milvus-audit {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    replay = commands.add_parser("replay", help="run the detection rules over recorded JSONL audit records")
    replay.add_argument("files", nargs="+",
                        help="JSONL files written by configure(jsonl_path=...), any jsonl_format, plain or gzip "
                             "(- reads standard input)")
    replay.add_argument("--rules", help="a YAML rules file (default: the built-in rules)")
    replay.add_argument("--json", action="store_true", help="one JSON object per alert")
    replay.add_argument("--explain", action="store_true", help="how close each principal came to each rule")
    replay.set_defaults(handler=_replay)
    rules = commands.add_parser("rules", help="list the detection rules and their settings")
    rules.add_argument("--rules", help="a YAML rules file")
    rules.set_defaults(handler=_rules)
    verify = commands.add_parser("verify", help="check the tamper-evident chain of JSONL audit files")
    verify.add_argument("files", nargs="+", help="JSONL files, plain or gzip (- reads standard input); a rotated "
                                                 "set in any order (ordered by stream and seq)")
    verify.add_argument("--key", help="the integrity (HMAC) key, hex (default: MILVUS_AUDIT_INTEGRITY_KEY)")
    verify.add_argument("--key-file", help="a file holding the integrity key: hex (integrity.key) or 32 raw bytes")
    verify.add_argument("--public-key", help="the checkpoint verification key (Ed25519 PEM, checkpoint-verify.pem)")
    verify.add_argument("--allow-open", action="store_true",
                        help="accept a stream without a final checkpoint (a live stream)")
    verify.add_argument("--expect-streams", type=int, metavar="N",
                        help="fail unless the files hold exactly N streams")
    verify.add_argument("--from-checkpoint", action="store_true",
                        help="a stream that starts mid-way (earlier rotated files gone): verify it from its first "
                             "checkpoint, which states the chain head it continues (said in the output)")
    verify.set_defaults(handler=_verify)
    sigma = commands.add_parser("sigma", help="Sigma rules for SIEMs")
    sigma_commands = sigma.add_subparsers(dest="sigma_command", required=True)
    sigma_list = sigma_commands.add_parser("list", help="list the shipped Sigma rules")
    sigma_list.set_defaults(handler=_sigma_list)
    export = sigma_commands.add_parser("export", help=f"convert the Sigma rules to SIEM queries (needs {SIEM_EXTRA})")
    export.add_argument("--backend", required=True, choices=["splunk", "elasticsearch", "opensearch", "loki"])
    export.add_argument("--schema", choices=["otel", "ecs"],
                        help="field names: raw OTLP attributes or ECS (default: ecs for Elastic/OpenSearch)")
    export.add_argument("--output", help="a directory for one file per rule (default: stdout)")
    export.add_argument("--force", action="store_true", help="replace rule files already in --output")
    export.add_argument("--rules", help="a rules file: convert with its thresholds (what `tune` wrote), "
                                        "disabled rules left out")
    export.set_defaults(handler=_sigma_export)
    keygen = commands.add_parser("keygen", help="create an integrity key and a checkpoint signing key pair")
    keygen.add_argument("--out", default=".", help="the directory for the three key files (default: .)")
    keygen.add_argument("--force", action="store_true",
                        help="replace existing keys (logs they sealed then need the old keys to verify)")
    keygen.set_defaults(handler=_keygen)
    add_serverlog_parsers(commands, detection=_server_detection)
    from milvus_audit.auditing.policy_cli import add_parsers as add_policy_parsers  # policy check, policy show

    add_policy_parsers(commands)
    _add_review_parsers(commands)
    return parser


def _error_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        where = f"{exc.filename}: " if exc.filename is not None else ""
        return f"{where}{exc.strerror}"
    return str(exc)


def _stdout_gone() -> None:
    """The reader of stdout went away (`| head -1`): stop quietly, as the Python docs advise:
    point stdout at /dev/null so the interpreter's final flush has nowhere to fail."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # a stdout without a file descriptor (captured)
        pass


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.handler(args)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        _stdout_gone()
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # one clear line, never a traceback (MILVUS_AUDIT_DEBUG=1 shows it)
        if os.environ.get("MILVUS_AUDIT_DEBUG"):
            raise
        known = isinstance(exc, (CliError, RulesError, ValueError, OSError))
        message = _error_line(exc) if known else f"unexpected error: {type(exc).__name__}: {exc}"
        print(f"milvus-audit: {printable(message)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
