"""The benchmark runs every variant for a few iterations, so it never rots (no timing assertions)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_benchmark_quick_run(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--json", str(out),
                          "--chart", str(tmp_path / "chart.png")], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(out.read_text())
    assert set(report["stub"]) == {"bare", "milvus_audit", "with_detection", "alert_every_call", "alert_dead_webhook",
                                    "floor", "spool_never", "spool_interval", "spool_always", "with_shared_state"}
    assert report["detection_engine"]["events"] == 2000
    assert set(report["spool"]) == {"never", "interval", "always"}
    for workload in ("search", "query", "insert"):
        assert set(report["lite"][workload]) == {"bare", "milvus_audit", "openllmetry", "floor"}
    for variant in ("milvus_audit", "floor"):
        (offered,) = report["throughput"][variant]["runs"]
        assert offered["calls"] > 0 and offered["received"] == offered["calls"]
    assert "targets:" in run.stdout
