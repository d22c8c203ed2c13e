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
    operations = [json.loads(line)["attributes"]["db.operation.name"] for line in jsonl.read_text().splitlines()]
    for expected in ("connect", "create_collection", "insert", "search", "query", "delete", "drop_collection"):
        assert expected in operations
