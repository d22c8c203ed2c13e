"""`milvus-audit tune` (issue 17): a baseline of ordinary traffic plus a nightly export job.

With the default rules the export job raises false positives (a million rows read, slow pages,
its temp collection dropped). `tune` finds them; the rules file it writes raises no alert on
the baseline and still raises the attack's alerts on a recorded attack run, because the job is
allowlisted for what it does routinely instead of thresholds raised for everyone.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from milvus_audit.detect.rules import Rules
from tests.test_report import DAY, START, attack, cli, nightly_export, ordinary, record

ATTACK_RULES = {"brute_force", "data_exfiltration", "privilege_escalation", "destructive_operation"}


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("tune")
    baseline = ordinary(START, 48, seed=1) + nightly_export(START) + nightly_export(START + DAY)
    attack_day = START + 2 * DAY
    run = ordinary(attack_day, 12, seed=2) + nightly_export(attack_day) + attack(attack_day + 9 * 3600 * 10**9)
    return {"baseline": record(tmp / "baseline.jsonl", baseline, detection=False, key=None),
            "attack": record(tmp / "attack.jsonl", run, detection=False, key=None), "tmp": tmp}


def alerts_of(replay_stdout: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for line in replay_stdout.splitlines():
        match = re.match(r"\S+Z\s+(\w+)\s+\w+\s+(\S+)", line)
        if match:
            found.setdefault(match.group(1), set()).add(match.group(2))
    return found


def test_tune_removes_the_false_positives_and_keeps_the_attack(recorded: dict[str, Path]) -> None:
    baseline, attack_run, tmp = recorded["baseline"], recorded["attack"], recorded["tmp"]
    before = cli("replay", baseline)
    assert before.returncode == 0, before.stderr
    false_positives = alerts_of(before.stdout)
    assert {"data_exfiltration", "destructive_operation"} <= set(false_positives), before.stdout
    assert false_positives["data_exfiltration"] == {"export-job"}

    explained = cli("replay", baseline, "--explain")
    assert "rules that fired most" in explained.stdout and "milvus-audit tune" in explained.stdout
    assert re.search(r"data_exfiltration\s+export-job\s+value\s+[\d,]+\s+threshold\s+10,000", explained.stdout)

    tuned = tmp / "tuned.yaml"
    run = cli("tune", baseline, "-o", tuned)
    assert run.returncode == 0, run.stderr
    assert re.search(r"data_exfiltration\s+rows\s+10,000\s+\S+\s+\S+\s+[\d,]+\s+10,000 \+allowlist\s+[1-9]\d*\s+0",
                     run.stdout), run.stdout
    assert "outliers allowlisted" in run.stdout and "export-job" in run.stdout
    text = tuned.read_text()
    assert text.startswith("# milvus-audit tune") and "# baseline: p50" in text
    document = yaml.safe_load(text)
    assert "export-job" in document["rules"]["data_exfiltration"]["allowlist"]
    assert "rows" not in document["rules"]["data_exfiltration"]  # the threshold stays for everyone else
    rules = Rules.from_yaml(tuned)
    assert rules.rule("brute_force").params == Rules().rule("brute_force").params
    shown = cli("rules", "--rules", tuned)
    assert shown.returncode == 0 and "allowlist*: export-job" in shown.stdout

    after = cli("replay", baseline, "--rules", tuned)
    assert after.returncode == 0 and after.stdout.startswith(f"{after.stdout.split()[0]} audit records, 0 alerts"), \
        after.stdout
    caught = alerts_of(cli("replay", attack_run, "--rules", tuned).stdout)
    assert ATTACK_RULES <= set(caught), caught
    assert caught["data_exfiltration"] == {"mallory"} and "export-job" not in set().union(*caught.values())


def test_tune_alerts_per_day_and_current_rules(recorded: dict[str, Path], tmp_path: Path) -> None:
    current = tmp_path / "current.yaml"
    current.write_text("rules:\n  brute_force:\n    threshold: 4\n    cooldown_s: 30\n"
                       "playbooks:\n  - name: page-oncall\n    rules: [privilege_escalation]\n"
                       "    actions: [{webhook: {url: 'https://hooks.example/x'}}]\n")
    out = tmp_path / "tuned.yaml"
    run = cli("tune", recorded["baseline"], "--rules", current, "-o", out, "--alerts-per-day", "1")
    assert run.returncode == 0, run.stderr
    document = yaml.safe_load(out.read_text())
    assert document["rules"]["brute_force"]["threshold"] == 4 and document["rules"]["brute_force"]["cooldown_s"] == 30
    assert document["playbooks"][0]["name"] == "page-oncall"
    assert document["rules"]["data_exfiltration"]["rows"] > 10_000  # raised, to about one alert a day
    Rules.from_yaml(out)
    shown = cli("rules", "--rules", out)
    assert "page-oncall" in shown.stdout and "# effective detection rules" in shown.stdout
    assert cli("tune", recorded["baseline"], "-o", out).returncode == 2  # never overwritten silently


def test_sigma_export_uses_the_tuned_rules_and_version(tmp_path: Path) -> None:
    pytest.importorskip("sigma.backends.splunk")
    tuned = tmp_path / "tuned.yaml"
    tuned.write_text("rules:\n  data_exfiltration:\n    rows: 630000\n    allowlist: [export-job]\n"
                     "  slow_query:\n    enabled: false\n")
    run = cli("sigma", "export", "--backend", "splunk", "--rules", tuned)
    assert run.returncode == 0, run.stderr
    assert "value_sum >= 630000" in run.stdout and "milvus_slow_read" not in run.stdout
    assert "data_exfiltration: its allowlist" in run.stderr
    shipped = cli("sigma", "export", "--backend", "splunk")
    assert "value_sum >= 10000" in shipped.stdout and "milvus_slow_read" in shipped.stdout
    version = cli("--version")
    assert version.returncode == 0 and re.fullmatch(r"milvus-audit \d+\.\d+\.\d+\S*\n", version.stdout)
