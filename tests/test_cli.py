"""The command line under hostile and careless input: the real CLI, run as a process, on
files the product wrote.

Promises: human-readable output cannot be forged (23); bad input gets one clean line
naming the file and line, exit 2, never a traceback (24); replay reads every format the
product writes and never reports "nothing" on input it could not use (25); keys are never
overwritten silently and secrets are written privately (26).
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import os
import re
import stat
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any, Literal

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import milvus_audit
from milvus_audit.export.jsonl import JsonlError, JsonlExporter, read_jsonl
from tests.test_detect import DIM, vec

KEY = bytes(range(32))
FORMATS: tuple[Literal["otel", "ecs", "ocsf"], ...] = ("otel", "ecs", "ocsf")
# An end user whose id tries to forge a record line, hide text and reorder what is shown.
HOSTILE_USER = "mallory\n00:00:00.000 INFO  milvus.audit drop_collection success user=admin\x1b[8mhidden\r\u202eevil"
HOSTILE_COLLECTION = "bad\nname\x1b[2J"
CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def workload(client: Any) -> None:
    client.create_collection("docs", dimension=DIM)
    client.insert("docs", [{"id": i, "vector": vec(i)} for i in range(20)])
    with milvus_audit.enduser(HOSTILE_USER):
        client.query("docs", filter="id >= 0", limit=5)
        try:
            client.create_collection(HOSTILE_COLLECTION, dimension=DIM)  # refused by Milvus, still recorded
        except Exception:
            pass
        client.drop_collection("docs")  # destructive_operation fires for this principal


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One audit file per output format, each written by the product on Milvus Lite, with
    the key files that seal them."""
    tmp = tmp_path_factory.mktemp("cli")
    signing = Ed25519PrivateKey.generate()
    files: dict[str, Any] = {}
    for fmt in FORMATS:
        jsonl = tmp / f"audit-{fmt}.jsonl"
        pipeline = milvus_audit.configure(jsonl_path=jsonl, jsonl_format=fmt, set_global=False)
        config = pipeline.audit_config(integrity_key=KEY, signing_key=signing, detection=True)
        client = milvus_audit.MilvusClient(str(tmp / f"{fmt}.db"), audit=config)
        workload(client)
        client.close()
        pipeline.shutdown()
        files[fmt] = jsonl
    keys = tmp / "keys"
    keys.mkdir()
    (keys / "integrity.key").write_text(KEY.hex() + "\n")
    (keys / "checkpoint-verify.pem").write_bytes(signing.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    (keys / "checkpoint-signing.pem").write_bytes(signing.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    files["keys"] = keys
    return files


def cli(*args: str | Path, env: dict[str, str] | None = None, stdin: bytes | None = None,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    run = subprocess.run([sys.executable, "-m", "milvus_audit", *map(str, args)], capture_output=True,
                         timeout=180, env=env, cwd=cwd, input=stdin.decode() if stdin else None,
                         text=True)
    return run


def assert_one_clean_line(run: subprocess.CompletedProcess[str], *needles: str) -> str:
    """Exit 2, and stderr is exactly one line, containing each needle, no traceback."""
    assert run.returncode == 2, (run.returncode, run.stdout, run.stderr)
    assert "Traceback" not in run.stderr, run.stderr
    lines = run.stderr.splitlines()
    assert len(lines) == 1 and run.stderr.endswith("\n"), run.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert not CONTROLS.search(lines[0]), repr(lines[0])
    return lines[0]


def lines_of(path: Path) -> list[str]:
    return path.read_text().splitlines()


def copy_with(written: dict[str, Any], tmp_path: Path, name: str, change: Any) -> Path:
    """A copy of the product's otel file with one line changed (`change(lines)` edits in place)."""
    lines = lines_of(written["otel"])
    change(lines)
    target = tmp_path / name
    target.write_text("\n".join(lines) + "\n")
    return target


def verify_args(path: Path, written: dict[str, Any]) -> list[str | Path]:
    return ["verify", path, "--key-file", written["keys"] / "integrity.key"]


# -- 23: output that cannot be forged -----------------------------------------------------
def test_promise_console_output_cannot_be_forged(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    pipeline = milvus_audit.configure(console=True, set_global=False)
    client = milvus_audit.MilvusClient(str(tmp_path / "m.db"), audit=pipeline.audit_config(detection=True))
    workload(client)
    client.close()
    pipeline.shutdown()
    out = capfd.readouterr().out
    lines = out.splitlines()
    assert not CONTROLS.search(out), [line for line in lines if CONTROLS.search(line)]
    assert all(re.match(r"\d\d:\d\d:\d\d\.\d{3} ", line) for line in lines), lines  # each line is one record
    assert sum("drop_collection" in line for line in lines) >= 2  # the call and its alert, nothing forged
    assert "enduser='mallory\\n00:00:00.000 INFO  milvus.audit drop_collection" in out
    assert "\\x1b[8mhidden\\r\\u202eevil" in out
    assert "collection=bad\\nname\\x1b[2J" in out


def test_promise_replay_and_rules_output_cannot_be_forged(written: dict[str, Any], tmp_path: Path) -> None:
    run = cli("replay", written["otel"], "--explain")
    assert run.returncode == 0, run.stderr
    assert not CONTROLS.search(run.stdout), run.stdout
    alert_lines = [line for line in run.stdout.splitlines() if "destructive_operation" in line and "Z " in line]
    assert len(alert_lines) == 1 and "mallory\\n00:00:00.000 INFO" in alert_lines[0], run.stdout
    assert "\\x1b[8mhidden" in alert_lines[0]
    as_json = cli("replay", written["otel"], "--json")
    alerts = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert alerts and alerts[0]["milvus_audit.alert.principal"] == HOSTILE_USER  # JSON keeps the value exact
    rules = tmp_path / "evil\n\x1b[8mrules.yaml"
    rules.write_text("brute_force:\n  severity: extreme\n")
    assert_one_clean_line(cli("rules", "--rules", rules), "evil\\n\\x1b[8mrules.yaml")


# -- 24: bad input is one clean line ------------------------------------------------------
def _not_an_object(lines: list[str]) -> None:
    lines[2] = "[1,2,3]"


def _no_timestamp(lines: list[str]) -> None:
    record = json.loads(lines[2])
    del record["timestamp"]
    lines[2] = json.dumps(record)


def _number_timestamp(lines: list[str]) -> None:
    record = json.loads(lines[2])
    record["timestamp"] = 1_800_000_000
    lines[2] = json.dumps(record)


def _naive_timestamp(lines: list[str]) -> None:
    record = json.loads(lines[2])
    record["timestamp"] = record["timestamp"].rstrip("Z")
    lines[2] = json.dumps(record)


def _binary(lines: list[str]) -> None:
    lines[2] = "\udcff\udcfe\x00garbage\udc80"  # written with surrogateescape: bytes ff fe 00 ... 80


@pytest.mark.parametrize("command", ["verify", "replay"])
@pytest.mark.parametrize("change", [_not_an_object, _no_timestamp, _number_timestamp, _naive_timestamp, _binary],
                         ids=["array", "no-timestamp", "mixed-timestamp-types", "naive-timestamp", "binary"])
def test_promise_cli_bad_input_is_one_clean_line(written: dict[str, Any], tmp_path: Path, command: str,
                                                 change: Any) -> None:
    lines = lines_of(written["otel"])
    change(lines)
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(("\n".join(lines) + "\n").encode("utf-8", "surrogateescape"))
    run = cli(*verify_args(bad, written)) if command == "verify" else cli("replay", bad)
    assert_one_clean_line(run, "bad.jsonl:3:")


@pytest.mark.parametrize("command", ["verify", "replay"])
def test_promise_cli_binary_garbage_and_unread_compression_are_one_clean_line(
        written: dict[str, Any], tmp_path: Path, command: str) -> None:
    data = written["otel"].read_bytes()
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(bytes(range(256)) * 64)
    archive = tmp_path / "audit.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("audit.jsonl", data)
    cases = {garbage: "garbage.bin:1:", archive: "audit.zip:1: a zip-compressed file"}
    for name, compress in (("audit.jsonl.bz2", bz2.compress), ("audit.jsonl.xz", lzma.compress)):
        target = tmp_path / name
        target.write_bytes(compress(data))
        cases[target] = f"{name}:1: a {'bzip2' if name.endswith('bz2') else 'xz'}-compressed file"
    for path, needle in cases.items():
        run = cli(*verify_args(path, written)) if command == "verify" else cli("replay", path)
        assert_one_clean_line(run, needle)


def test_promise_cli_reads_gzip_and_stdin(written: dict[str, Any], tmp_path: Path) -> None:
    gz = tmp_path / "audit.jsonl.gz"
    gz.write_bytes(gzip.compress(written["otel"].read_bytes()))
    plain = cli("replay", written["otel"])
    assert plain.returncode == 0 and "destructive_operation" in plain.stdout, plain.stderr
    assert cli("replay", gz).stdout == plain.stdout
    assert cli("replay", "-", stdin=written["otel"].read_bytes()).stdout == plain.stdout
    verified = cli("verify", gz, "--key-file", written["keys"] / "integrity.key",
                   "--public-key", written["keys"] / "checkpoint-verify.pem")
    assert verified.returncode == 0 and "0 problem(s)" in verified.stdout, verified.stdout + verified.stderr
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(gz.read_bytes()[:-40])
    assert_one_clean_line(cli("replay", cut), "cut.jsonl.gz:")


def test_promise_cli_wrong_kind_of_key_file_is_one_clean_line(written: dict[str, Any]) -> None:
    keys = written["keys"]
    ok = cli("verify", written["otel"], "--key-file", keys / "integrity.key", "--public-key",
             keys / "checkpoint-verify.pem")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert_one_clean_line(cli("verify", written["otel"], "--public-key", keys / "integrity.key"),
                          "integrity.key:1:", "--key-file")
    assert_one_clean_line(cli("verify", written["otel"], "--public-key", keys / "checkpoint-signing.pem"),
                          "checkpoint-signing.pem:1:", "private")
    assert_one_clean_line(cli("verify", written["otel"], "--key-file", keys / "checkpoint-verify.pem"),
                          "checkpoint-verify.pem:1:", "--public-key")
    assert_one_clean_line(cli("verify", written["otel"], "--key-file", keys / "checkpoint-signing.pem"),
                          "checkpoint-signing.pem:1:")


def test_promise_cli_output_never_overwrites(tmp_path: Path) -> None:
    existing = tmp_path / "queries.txt"
    existing.write_text("mine\n")
    assert_one_clean_line(cli("sigma", "export", "--backend", "splunk", "--output", existing), "queries.txt")
    assert existing.read_text() == "mine\n"
    out = tmp_path / "rules"
    assert cli("sigma", "export", "--backend", "splunk", "--output", out).returncode == 0
    written = sorted(out.iterdir())
    assert written
    written[0].write_text("edited\n")
    assert_one_clean_line(cli("sigma", "export", "--backend", "splunk", "--output", out), written[0].name)
    assert written[0].read_text() == "edited\n"
    assert cli("sigma", "export", "--backend", "splunk", "--output", out, "--force").returncode == 0
    assert written[0].read_text() != "edited\n"


def test_promise_sigma_export_without_the_siem_extra_says_how_to_install_it(tmp_path: Path) -> None:
    blocked = tmp_path / "blocked" / "sigma"
    blocked.mkdir(parents=True)
    (blocked / "__init__.py").write_text("raise ImportError('No module named sigma (blocked for the test)')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocked.parent), os.environ.get("PYTHONPATH", "")])}
    run = cli("sigma", "export", "--backend", "splunk", env=env)
    assert_one_clean_line(run, "pip install 'milvus-audit[siem]'")


def test_promise_rules_piped_into_head_exits_quietly() -> None:
    process = subprocess.Popen([sys.executable, "-m", "milvus_audit", "rules"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # the reader is gone before the first line is written, as with `| head -1`
    stderr = process.stderr.read().decode()
    process.wait(timeout=60)
    assert stderr == "", stderr
    shell = subprocess.run(f"'{sys.executable}' -m milvus_audit rules | head -1", shell=True, capture_output=True,
                           text=True, timeout=60)
    assert shell.stderr == "" and len(shell.stdout.splitlines()) == 1, shell


# -- 25: replay reads every format, and says when there is nothing ---------------------------
def test_promise_replay_reads_every_format_the_product_writes(written: dict[str, Any]) -> None:
    outputs = {}
    for fmt in FORMATS:
        run = cli("replay", written[fmt])
        assert run.returncode == 0, (fmt, run.stdout, run.stderr)
        assert "destructive_operation" in run.stdout, (fmt, run.stdout)
        outputs[fmt] = [line.split(" ", 1)[1] for line in run.stdout.splitlines()[2:]]  # less the time
        assert run.stdout.splitlines()[0] == cli("replay", written["otel"]).stdout.splitlines()[0]
    assert outputs["ecs"] == outputs["ocsf"] == outputs["otel"]


def test_promise_replay_without_audit_records_says_so(written: dict[str, Any], tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    run = cli("replay", empty)
    assert run.returncode == 1 and run.stdout == "", run
    assert run.stderr.count("\n") == 1 and "no audit records" in run.stderr and "empty.jsonl" in run.stderr
    checkpoints = tmp_path / "checkpoints.jsonl"
    checkpoints.write_text("".join(line + "\n" for line in lines_of(written["otel"]) if "checkpoint" in line))
    assert cli("replay", checkpoints).returncode == 1
    name_only = tmp_path / "name.jsonl"
    name_only.write_text('{"name":"x"}\n')
    assert_one_clean_line(cli("replay", name_only), "name.jsonl:1:", "timestamp")


def test_promise_read_jsonl_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_text('{"timestamp": "2026-01-01T00:00:00Z"}\n\n"text"\n')
    with pytest.raises(JsonlError, match=r"a\.jsonl:3: a string, not an audit record") as caught:
        read_jsonl(path)
    assert (caught.value.line, caught.value.path) == (3, str(path))
    path.write_text('{"timestamp": "2026-01-01T00:00:00Z", "a": 1, "a": 2}\n')
    assert read_jsonl(path) == [{"timestamp": "2026-01-01T00:00:00Z", "a": 2}]
    with pytest.raises(JsonlError, match="duplicate key 'a'"):
        read_jsonl(path, reject_duplicate_keys=True)
    path.write_text("[" * 100_000 + "\n")
    with pytest.raises(JsonlError, match=r"a\.jsonl:1:"):
        read_jsonl(path)


# -- 26: keys are never overwritten silently; secrets are private ---------------------------
def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_promise_keygen_never_overwrites_keys(tmp_path: Path) -> None:
    out = tmp_path / "keys"
    first = cli("keygen", "--out", out)
    assert first.returncode == 0, first.stderr
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert set(before) == {"checkpoint-signing.pem", "checkpoint-verify.pem", "integrity.key"}
    assert mode(out / "checkpoint-signing.pem") == mode(out / "integrity.key") == 0o600
    assert_one_clean_line(cli("keygen", "--out", out), "keys/", "--force")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # untouched, no temporary files left
    (out / "checkpoint-verify.pem").unlink()  # one key missing is no licence to replace the others
    assert_one_clean_line(cli("keygen", "--out", out), "--force")
    forced = cli("keygen", "--out", out, "--force")
    assert forced.returncode == 0, forced.stderr
    after = {p.name: p.read_bytes() for p in out.iterdir()}
    assert set(after) == set(before) and after["integrity.key"] != before["integrity.key"]
    assert mode(out / "checkpoint-signing.pem") == mode(out / "integrity.key") == 0o600


def test_promise_jsonl_files_are_private_by_default(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        pipeline = milvus_audit.configure(jsonl_path=tmp_path / "audit.jsonl", set_global=False)
        pipeline.shutdown()
        assert mode(tmp_path / "audit.jsonl") == 0o600
        shared = JsonlExporter(tmp_path / "shared.jsonl", file_mode=0o640)
        shared.shutdown()
        assert mode(tmp_path / "shared.jsonl") == 0o640
        JsonlExporter(tmp_path / "shared.jsonl").shutdown()  # an existing file keeps its mode
        assert mode(tmp_path / "shared.jsonl") == 0o640
    finally:
        os.umask(old)
    with pytest.raises(ValueError, match="file_mode"):
        JsonlExporter(tmp_path / "x.jsonl", file_mode=0o7777)


def test_promise_verify_expect_streams_is_wired(written: dict[str, Any]) -> None:
    key_file = written["keys"] / "integrity.key"
    assert cli("verify", written["otel"], "--key-file", key_file, "--expect-streams", "1").returncode == 0
    two = cli("verify", written["otel"], "--key-file", key_file, "--expect-streams", "2")
    assert two.returncode == 1 and "stream" in two.stdout, two.stdout + two.stderr
