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

    result = replay_files(args.files, _rules_from(args.rules), explain=args.explain)
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
    if args.explain:
        _out("\nhow close each principal came to firing (peak value / threshold):")
        for (rule, principal), ratio in sorted(result.engine.peaks().items(), key=lambda kv: (kv[0][0], -kv[1])):
            verdict = "fired" if ratio >= 1 else f"a threshold {ratio:.0%} of today's would have caught it"
            _out(f"  {printable(rule):<22} {printable(principal.replace(chr(0), ' ')):<30} {ratio:6.2f}  {verdict}")
    return 0


def _rules(args: argparse.Namespace) -> int:
    rules = _rules_from(args.rules)
    for rule_id, info in BUILTIN_RULES.items():
        settings = rules.rule(rule_id)
        params = ", ".join(f"{printable(k)}={v:g}" if isinstance(v, (int, float)) else f"{printable(k)}={printable(v)}"
                           for k, v in settings.params.items())
        state = "on " if settings.enabled else "off"
        _out(f"{state} {printable(rule_id):<22} {printable(settings.severity):<9} "
             f"{printable(' '.join(info.attack)):<18} {params}")
    return 0


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
    expect: dict[str, Any] = {"expect_streams": args.expect_streams} if args.expect_streams is not None else {}
    reports = verify(args.files, key=key, public_key=public_key, allow_open=args.allow_open, **expect)
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

    for rule in build_rules():
        kind = rule["correlation"]["type"] if "correlation" in rule else "event"
        tags = " ".join(t.removeprefix("attack.").upper() for t in rule["tags"])
        _out(printable(f"{rule['name']:<34} {kind:<12} {rule['level']:<14} {tags:<18} {rule['title']}"))
    return 0


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

        results = convert(args.backend, args.schema)
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


def _server_detection(rules: str | None, emitter: Any) -> Any:
    """`ingest --detect`: the rules over the ingested records, alerts recorded through `emitter`."""
    from milvus_audit.detect.sink import StreamDetector, record_alerts

    return StreamDetector(_rules_from(rules), [record_alerts(emitter)])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="milvus-audit", description="milvus-audit command line",
        epilog="exit codes: 0 ok; 1 a finding (verify: a problem; replay: no audit records); "
               "2 unusable input or usage (one line on stderr naming the file and line)")
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
    verify.add_argument("files", nargs="+", help="JSONL files, plain or gzip (- reads standard input)")
    verify.add_argument("--key", help="the integrity (HMAC) key, hex (default: MILVUS_AUDIT_INTEGRITY_KEY)")
    verify.add_argument("--key-file", help="a file holding the integrity key: hex (integrity.key) or 32 raw bytes")
    verify.add_argument("--public-key", help="the checkpoint verification key (Ed25519 PEM, checkpoint-verify.pem)")
    verify.add_argument("--allow-open", action="store_true",
                        help="accept a stream without a final checkpoint (a live stream)")
    verify.add_argument("--expect-streams", type=int, metavar="N",
                        help="fail unless the files hold exactly N streams")
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
    export.set_defaults(handler=_sigma_export)
    keygen = commands.add_parser("keygen", help="create an integrity key and a checkpoint signing key pair")
    keygen.add_argument("--out", default=".", help="the directory for the three key files (default: .)")
    keygen.add_argument("--force", action="store_true",
                        help="replace existing keys (logs they sealed then need the old keys to verify)")
    keygen.set_defaults(handler=_keygen)
    add_serverlog_parsers(commands, detection=_server_detection)
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
