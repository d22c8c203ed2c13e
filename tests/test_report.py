"""`milvus-audit report` (issue 17): every format, every section, escaping, and the HTML page
in a real browser (Debian's chromium, headless, network off) on a recorded attack scenario.

The scenario is recorded through the product's own writer (`configure(jsonl_path=...)`, the
emitter with an integrity key and a signing key, the detection engine with its alerts recorded
as `milvus.alert` records), with timestamps of its own so a day of traffic takes a second.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import milvus_audit
from milvus_audit.detect.engine import DetectionEngine, Observation
from milvus_audit.detect.sink import record_alerts
from milvus_audit.model.record import event_id
from milvus_audit.otel.emitter import OTelEmitter

KEY = bytes(range(32))
DAY = 86_400 * 10**9
# The writer stamps its checkpoints with the real clock: scenarios end shortly before now.
START = time.time_ns() // DAY * DAY - 4 * DAY  # a midnight (UTC), four days ago
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
HOSTILE = "eve\n00:00:00 INFO forged <script>alert(1)</script>\x1b[8m\u202e"

Call = tuple[int, dict[str, Any]]


def call(operation: str, category: str, user: str, *, enduser: str | None = None, collection: str | None = "docs",
         ok: bool = True, reason: str | None = None, duration: float = 8.0, address: str = "10.0.0.5",
         **extra: Any) -> dict[str, Any]:
    """The attributes the product writes for one call."""
    attributes: dict[str, Any] = {"db.system.name": "milvus", "db.operation.name": operation,
                                  "user.name": user, "server.address": "milvus.internal", "server.port": 19530,
                                  "client.address": address, "milvus_audit.category": category,
                                  "milvus_audit.outcome": "success" if ok else "failure",
                                  "milvus_audit.duration_ms": duration, "milvus_audit.api": "MilvusClient"}
    if collection:
        attributes["db.collection.name"] = collection
    if enduser:
        attributes["enduser.id"] = enduser
    if not ok:
        attributes["milvus_audit.failure_reason"] = reason or "server_error"
        attributes["error.type"] = "MilvusException"
    attributes.update(extra)
    return attributes


def ordinary(start_ns: int, hours: float, seed: int = 7) -> list[Call]:
    """An application serving three end users: searches and queries every ~30 s, a few inserts
    and the odd not-found."""
    rng = random.Random(seed)
    calls: list[Call] = []
    t = start_ns
    end = start_ns + int(hours * 3600e9)
    while t < end:
        t += int(rng.uniform(10, 50) * 1e9)
        user = rng.choice(["alice", "bob", "carol"])
        kind = rng.random()
        if kind < 0.6:
            calls.append((t, call("search", "data_read", "app", enduser=user, duration=rng.uniform(4, 25),
                                  **{"db.milvus.nq": 1, "db.milvus.limit": 10, "db.response.returned_rows": 10})))
        elif kind < 0.85:
            calls.append((t, call("query", "data_read", "app", enduser=user, duration=rng.uniform(3, 20),
                                  **{"db.milvus.limit": 20, "db.response.returned_rows": rng.randint(0, 20),
                                     "db.query.text": "tag == ?"})))
        elif kind < 0.98:
            calls.append((t, call("insert", "data_write", "app", enduser=user, duration=rng.uniform(5, 20),
                                  **{"db.operation.batch.size": 5, "milvus_audit.mutating": True})))
        else:
            calls.append((t, call("describe_collection", "schema", "app", enduser=user, collection="old",
                                  ok=False, reason="not_found")))
    return calls


def nightly_export(day_start_ns: int) -> list[Call]:
    """The batch job at 02:00: a million rows in 100 pages over ten minutes, then its temp collection dropped."""
    calls: list[Call] = []
    t = day_start_ns + 2 * 3600 * 10**9
    for page in range(100):
        calls.append((t + page * 6 * 10**9, call("query_iterator", "data_read", "export-job", duration=800.0,
                                                  address="10.0.0.9",
                                                  **{"db.response.returned_rows": 10_000, "db.milvus.limit": 10_000,
                                                     "milvus_audit.iterator.page": page + 1})))
    calls.append((t + 601 * 10**9, call("drop_collection", "schema", "export-job", collection="export_tmp",
                                        address="10.0.0.9", **{"milvus_audit.mutating": True})))
    return calls


def attack(start_ns: int) -> list[Call]:
    """Brute force on admin, then mallory (in with stolen credentials) reads 60,000 rows, grants
    itself the admin role and drops the collection; a hostile end-user id on the way."""
    calls: list[Call] = []
    t = start_ns
    for i in range(8):
        calls.append((t + i * 2 * 10**9, call("connect", "connection", "admin", collection=None, ok=False,
                                              reason="authentication", address="203.0.113.9")))
    t += 60 * 10**9
    for i in range(6):
        calls.append((t + i * 10 * 10**9, call("query", "data_read", "mallory", duration=40.0, address="203.0.113.9",
                                               **{"db.response.returned_rows": 10_000, "db.milvus.limit": 10_000})))
    t += 120 * 10**9
    calls.append((t, call("search", "data_read", "app", enduser=HOSTILE, duration=9.0,
                          **{"db.response.returned_rows": 10})))
    calls.append((t + 5 * 10**9, call("grant_role", "rbac", "mallory", collection=None, address="203.0.113.9",
                                      **{"milvus_audit.target.user": "mallory", "milvus_audit.target.role": "admin",
                                         "milvus_audit.mutating": True})))
    calls.append((t + 20 * 10**9, call("drop_collection", "schema", "mallory", address="203.0.113.9",
                                       **{"milvus_audit.mutating": True})))
    return calls


def record(path: Path, calls: list[Call], *, fmt: str = "otel", signing: Ed25519PrivateKey | None = None,
           detection: bool = True, key: bytes | None = KEY) -> Path:
    """Write `calls` (time-ordered) through the product's writer; alerts of the built-in rules too."""
    pipeline = milvus_audit.configure(jsonl_path=path, jsonl_format=fmt, service_name="shop",  # type: ignore[arg-type]
                                      set_global=False)
    config = pipeline.audit_config(integrity_key=key, signing_key=signing)
    emitter = OTelEmitter(config)
    engine = DetectionEngine(on_alert=record_alerts(emitter)) if detection else None
    tracer = pipeline.tracer_provider.get_tracer("scenario")  # type: ignore[union-attr]
    for timestamp, attributes in sorted(calls, key=lambda item: item[0]):
        with tracer.start_as_current_span(str(attributes["db.operation.name"])) as span:
            context = span.get_span_context()
            observed = dict(attributes)
            emitter.emit_record("milvus.audit", "WARN" if "milvus_audit.failure_reason" in attributes else "INFO",
                                attributes, timestamp)
        if engine is not None:
            engine.observe(Observation(timestamp / 1e9, observed,
                                       event_id(f"{context.trace_id:032x}", f"{context.span_id:016x}")))
    if engine is not None:
        engine.finish()
    pipeline.shutdown()
    return path


def cli(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "milvus_audit", *map(str, args)], capture_output=True, text=True,
                          timeout=300, env=env)


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("report")
    signing = Ed25519PrivateKey.generate()
    begin = time.time_ns() - 3 * 3600 * 10**9
    calls = ordinary(begin, 2) + attack(begin + 3600 * 10**9)
    audit = record(tmp / "attack.jsonl", calls, signing=signing)
    keys = tmp / "keys"
    keys.mkdir()
    (keys / "integrity.key").write_text(KEY.hex() + "\n")
    (keys / "checkpoint-verify.pem").write_bytes(signing.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return {"audit": audit, "keys": keys, "tmp": tmp}


def test_report_has_every_section_in_every_format(scenario: dict[str, Path]) -> None:
    tmp, audit, keys = scenario["tmp"], scenario["audit"], scenario["keys"]
    data_run = cli("report", audit, "--format", "json", "--key-file", keys / "integrity.key",
                   "--public-key", keys / "checkpoint-verify.pem")
    assert data_run.returncode == 0, data_run.stderr
    data = json.loads(data_run.stdout)
    counts = data["counts"]
    assert counts["audit_records"] > 100 and counts["alerts"] >= 4 and counts["principals"] >= 5
    assert data["period"]["first"] < data["period"]["last"]
    assert len(data["timeline"]["buckets"]) >= 20 and data["timeline"]["interval_s"] in (60, 300, 600)
    rules = {a["rule"] for a in data["alerts_by_rule"]}
    assert {"brute_force", "data_exfiltration", "privilege_escalation", "destructive_operation"} <= rules, rules
    grant = [c for c in data["rbac_changes"]["items"] if c["operation"] == "grant_role"]
    assert grant and grant[0]["target_role"] == "admin" and grant[0]["target_user"] == "mallory"
    assert re.search(r"attack\.jsonl:\d+ \([0-9a-f]+/\d+\)$", grant[0]["where"]), grant[0]["where"]
    drops = [d for d in data["destructive"]["items"] if d["operation"] == "drop_collection"]
    assert drops and drops[0]["principal"] == "mallory" and drops[0]["target"] == "docs"
    assert {"principal": "admin", "source": "203.0.113.9"}.items() <= data["auth_failures"][0].items()
    assert data["auth_failures"][0]["count"] == 8
    assert {f["reason"] for f in data["failures"]} == {"authentication", "not_found"}
    mallory = next(p for p in data["principals"] if p["user"] == "mallory")
    assert mallory["rows_read"] == 60_000 and mallory["reads"] == 6
    assert data["slowest"][0]["duration_ms"] >= 25
    exfil = next(a for a in data["alerts"]["items"] if a["rule"] == "data_exfiltration")
    assert exfil["value"] >= exfil["threshold"] == 10_000
    assert exfil["evidence"] and all(re.search(r"attack\.jsonl:\d+", e["where"]) for e in exfil["evidence"])
    integrity = data["integrity"]
    assert integrity["checked"] and integrity["problems"] == 0 and integrity["streams"][0]["status"] == "ok"
    assert integrity["records_verified"] == counts["records"]

    for fmt, needles in (("md", ["## Destructive operations", "grant\\_role", "mallory"]),
                         ("text", ["RBAC AND PRIVILEGE CHANGES", "DESTRUCTIVE OPERATIONS", "grant_role"])):
        run = cli("report", audit, "--format", fmt)
        assert run.returncode == 0, run.stderr
        for needle in needles:
            assert needle in run.stdout, (fmt, needle)
        assert "\x1b" not in run.stdout and "\u202e" not in run.stdout
        assert "eve\n00:00:00" not in run.stdout and "00:00:00 INFO forged" in run.stdout  # escaped, one line
        assert ("eve\\\\n00" if fmt == "md" else "eve\\n00") in run.stdout
    html_path = tmp / "report.html"
    run = cli("report", audit, "-o", html_path, "--key-file", keys / "integrity.key")
    assert run.returncode == 0, run.stderr
    assert "wrote" in run.stderr and "\r" not in run.stderr  # no progress bar when stderr is not a terminal
    page = html_path.read_text()
    assert page.count("<svg") >= 3 and "Content-Security-Policy" in page and "default-src 'none'" in page
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert not re.search(r"(src|href)=\"(https?:)?//", page) and "@import" not in page
    assert cli("report", audit, "-o", html_path).returncode == 2  # never overwritten silently
    assert cli("report", audit, "-o", html_path, "--force").returncode == 0
    window = cli("report", audit, "--format", "json", "--since", data["period"]["last"][:13] + ":00:00Z")
    assert json.loads(window.stdout)["counts"]["outside_period"] > 0


def test_report_reads_gzip_stdin_and_every_format(scenario: dict[str, Path], tmp_path: Path) -> None:
    import gzip

    calls = attack(START + 9 * 3600 * 10**9)
    summaries = []
    for fmt in ("otel", "ecs", "ocsf"):
        path = record(tmp_path / f"a.{fmt}.jsonl", calls, fmt=fmt)
        data = json.loads(cli("report", path, "--format", "json").stdout)
        summaries.append((data["counts"]["audit_records"], data["counts"]["alerts"],
                          len(data["rbac_changes"]["items"]), len(data["destructive"]["items"])))
    assert len(set(summaries)) == 1 and summaries[0][1] >= 4, summaries
    gz = tmp_path / "a.jsonl.gz"
    gz.write_bytes(gzip.compress((tmp_path / "a.otel.jsonl").read_bytes()))
    from_gz = json.loads(cli("report", gz, "--format", "json").stdout)
    piped = subprocess.run([sys.executable, "-m", "milvus_audit", "report", "-", "--format", "json"],
                           input=(tmp_path / "a.otel.jsonl").read_bytes(), capture_output=True, timeout=120)
    assert from_gz["counts"] == json.loads(piped.stdout)["counts"]
    torn = tmp_path / "torn.jsonl"
    torn.write_bytes((tmp_path / "a.otel.jsonl").read_bytes()[:-30])
    data = json.loads(cli("report", torn, "--format", "json").stdout)
    assert data["torn"] and data["counts"]["records"] == from_gz["counts"]["records"] - 1


# -- the page in a real browser ------------------------------------------------------------
def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def run_chromium(*args: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    binary = chromium()
    assert binary is not None
    home = tmp / "home"
    home.mkdir(exist_ok=True)
    env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home), "XDG_CACHE_HOME": str(home)}
    return subprocess.run([binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                           "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                           "--disable-background-networking", "--disable-component-update", "--disable-sync",
                           "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9",
                           f"--user-data-dir={tmp / 'profile'}", *args],
                          capture_output=True, text=True, timeout=240, env=env)


def pixels(png: Path) -> Iterator[tuple[int, int, int]]:
    from matplotlib import image

    data = image.imread(str(png))
    height, width = data.shape[0], data.shape[1]
    for y in range(0, height, 2):
        for x in range(0, width, 2):
            r, g, b = data[y, x][:3]
            yield int(r * 255), int(g * 255), int(b * 255)


def page_requests(netlog: Path, page_url: str) -> list[str]:
    """The URLs of the requests a page made, from chromium's net log (not the browser's own)."""
    log = json.loads(netlog.read_text(errors="replace"))
    names = {number: name for name, number in log["constants"]["logEventTypes"].items()}
    found = []
    for event in log["events"]:
        params = event.get("params") or {}
        if names.get(event["type"]) != "URL_REQUEST_START_JOB" or "url" not in params:
            continue
        from_page = "file://" in str(params.get("network_isolation_key", "")) or \
            params.get("initiator") not in (None, "not an origin")
        if from_page and params["url"] != page_url:
            found.append(params["url"])
    return found


@pytest.mark.skipif(chromium() is None, reason="chromium is not installed (make test installs it)")
def test_report_html_in_headless_chromium(scenario: dict[str, Path], tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    run = cli("report", scenario["audit"], "-o", page, "--key-file", scenario["keys"] / "integrity.key")
    assert run.returncode == 0, run.stderr
    url = page.resolve().as_uri()
    netlog = tmp_path / "netlog.json"
    dom = run_chromium("--dump-dom", f"--log-net-log={netlog}", "--net-log-capture-mode=Everything", url,
                       tmp=tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    text = dom.stdout
    assert "privilege_escalation" in text and "mallory granted the admin role to mallory" in text  # the alert
    assert "drop_collection" in text and "mallory ran drop_collection on docs" in text  # the destructive operation
    assert "grant_role" in text and ">admin<" in text  # the RBAC change
    assert 'class="js"' in text  # the sorting script ran under the page's CSP
    # no request was attempted by the page (the browser's own background requests are told apart by
    # their initiator and network isolation key; the control page shows the check sees a page's request)
    assert page_requests(netlog, url) == []
    control = tmp_path / "control.html"
    control.write_text('<html><body><img src="http://example.invalid/x.png"><p>control</p></body></html>')
    control_log = tmp_path / "control-netlog.json"
    run_chromium("--dump-dom", f"--log-net-log={control_log}", "--net-log-capture-mode=Everything",
                 control.resolve().as_uri(), tmp=tmp_path)
    assert page_requests(control_log, control.resolve().as_uri()) == ["http://example.invalid/x.png"]

    shot = tmp_path / "report.png"
    taken = run_chromium(f"--screenshot={shot}", "--window-size=1280,1700", "--hide-scrollbars", url, tmp=tmp_path)
    assert taken.returncode == 0 and shot.exists(), taken.stderr[-2000:]
    colors = list(pixels(shot))
    white = sum(1 for p in colors if min(p) > 245)
    assert white < 0.97 * len(colors), "blank screenshot"
    # the charts rendered: the timeline's bar colour (#4c78a8) and the failures' (#e45756) are on screen
    near = {name: sum(1 for p in colors if all(abs(a - b) <= 12 for a, b in zip(p, rgb, strict=True)))
            for name, rgb in (("calls", (0x4C, 0x78, 0xA8)), ("failures", (0xE4, 0x57, 0x56)))}
    assert near["calls"] > 200 and near["failures"] > 20, near
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(shot, ARTIFACTS / "report-screenshot.png")
    shutil.copy(page, ARTIFACTS / "report.html")
