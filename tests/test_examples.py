"""The examples run, and do what their docstrings say."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_quickstart_runs_and_writes_the_audit_trail(tmp_path: Path) -> None:
    jsonl = tmp_path / "audit.jsonl"
    run = subprocess.run([sys.executable, str(EXAMPLES / "quickstart.py"), "--db", str(tmp_path / "q.db"),
                          "--jsonl", str(jsonl)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "milvus.audit search success collection=articles" in run.stdout
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    operations = [r["attributes"]["db.operation.name"] for r in records if r["event_name"] == "milvus.audit"]
    assert {r["attributes"]["milvus_audit.alert.rule"] for r in records if r["event_name"] == "milvus.alert"} == {
        "data_exfiltration", "destructive_operation"}
    for expected in ("connect", "create_collection", "insert", "search", "query", "delete", "drop_collection"):
        assert expected in operations
    assert "[high] data_exfiltration: intruder read" in run.stdout
    assert "[high] destructive_operation: intruder ran drop_collection on articles" in run.stdout
    assert "milvus.alert" in run.stdout
