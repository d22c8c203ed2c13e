"""Fuzzing verify's reader: hostile files give findings or one clean error, in bounded time, never a crash."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import milvus_audit
from milvus_audit.export.jsonl import JsonlError, iter_jsonl
from milvus_audit.integrity.verify import verify

KEY = bytes(range(32))


@pytest.fixture(scope="module")
def lines(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The lines of a small real chained stream, to mutate."""
    tmp = tmp_path_factory.mktemp("fuzz-verify")
    jsonl = tmp / "audit.jsonl"
    pipeline = milvus_audit.configure(jsonl_path=jsonl, set_global=False)
    client = milvus_audit.MilvusClient(str(tmp / "m.db"), audit=pipeline.audit_config(integrity_key=KEY))
    for _ in range(5):
        client.list_collections()
    client.close()
    pipeline.shutdown()
    return jsonl.read_text().splitlines()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


def mutate(line: str, path: list[str], value: Any) -> str:
    """`line` with the value at a path of keys replaced (or added)."""
    record: Any = json.loads(line)
    target = record
    for key in path[:-1]:
        if not isinstance(target.get(key), dict):
            target[key] = {}
        target = target[key]
    target[path[-1]] = value
    return json.dumps(record)


def verdict(path: Path) -> str:
    """What verify says about a file, within a time bound: "ok", "findings" or "unreadable"."""
    start = time.perf_counter()
    try:
        for _ in iter_jsonl(path):
            pass
        reports = verify([path], key=KEY)
    except JsonlError as exc:
        assert str(path) in str(exc) and "\n" not in str(exc)  # one line naming the file
        return "unreadable"
    finally:
        assert time.perf_counter() - start < 5
    return "ok" if all(not report.findings for report in reports) else "findings"


@settings(max_examples=60, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(index=st.integers(min_value=0, max_value=6),
       path=st.lists(st.sampled_from(["timestamp", "event_name", "severity_text", "trace_id", "attributes",
                                      "resource", "milvus_audit.seq", "milvus_audit.chain", "extra"]),
                     min_size=1, max_size=2),
       value=json_values)
def test_promise_a_changed_field_never_verifies(lines: list[str], tmp_path: Path, index: int, path: list[str],
                                                value: Any) -> None:
    index %= len(lines)
    changed = mutate(lines[index], path, value)
    if changed == json.dumps(json.loads(lines[index])):
        return  # the same value as before: nothing changed
    target = tmp_path / f"mutated-{os.getpid()}-{time.perf_counter_ns()}.jsonl"
    target.write_text("\n".join([*lines[:index], changed, *lines[index + 1:]]) + "\n")
    assert verdict(target) in ("findings", "unreadable")


@settings(max_examples=60, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(garbage=st.binary(max_size=400), at=st.integers(min_value=0, max_value=6))
def test_promise_garbage_anywhere_is_a_finding_or_one_clean_error(lines: list[str], tmp_path: Path, garbage: bytes,
                                                                    at: int) -> None:
    at %= len(lines) + 1
    body = "\n".join(lines[:at]).encode() + b"\n" + garbage + b"\n" + "\n".join(lines[at:]).encode()
    target = tmp_path / f"garbage-{time.perf_counter_ns()}.jsonl"
    target.write_bytes(body)
    result = verdict(target)
    if garbage.strip():
        assert result in ("findings", "unreadable")
