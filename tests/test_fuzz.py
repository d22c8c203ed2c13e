"""Fuzzing the audited client against the bare one on Milvus Lite (Hypothesis).

The same random call runs on a bare client and on an audited client, each over its
own Milvus Lite database prepared identically. The audited client must return the
same kind of result, raise the same exception type with the same message, let no
instrumentation error escape, and record every call.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymilvus
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import milvus_audit
from tests.conftest import Telemetry

DIM = 4
METHODS = ("search", "query", "get", "insert", "upsert", "delete", "describe_collection", "has_collection",
           "create_partition", "list_partitions", "get_collection_stats", "create_collection", "drop_partition")

text = st.one_of(st.text(max_size=20), st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x2FFF),
                                                max_size=50),
                 st.just("x" * 70_000), st.just("docs"), st.just("id > 1 and \n\r\t\x00 == 'é'"))
scalar = st.one_of(st.none(), st.integers(-2**70, 2**70), st.floats(allow_nan=True), st.booleans(), text)
vector = st.one_of(st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=DIM, max_size=DIM),
                   st.just([math.nan] * DIM), st.lists(st.floats(), max_size=3))
value = st.recursive(scalar | vector, lambda inner: st.lists(inner, max_size=3) |
                     st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=8)
collection = st.one_of(st.just("docs"), text, st.none())
keyword = st.sampled_from(["filter", "limit", "output_fields", "ids", "data", "partition_name", "partition_names",
                           "timeout", "consistency_level", "filter_params", "anns_field"])
call = st.tuples(st.sampled_from(METHODS), st.lists(st.one_of(collection, value), max_size=3),
                 st.dictionaries(keyword, value, max_size=3))


def outcome(fn: Any, args: list[Any], kwargs: dict[str, Any]) -> tuple[str, str]:
    try:
        result = fn(*args, **kwargs)
    except Exception as exc:
        return type(exc).__name__, _stable(str(exc))
    return "ok", type(result).__name__


def _stable(message: str) -> str:
    """Messages minus what differs between two databases (paths, timings, object ids)."""
    import re

    message = re.sub(r"0x[0-9a-f]+", "0x?", message)
    return re.sub(r"elapsed:[0-9.]+ms", "elapsed:?", message)


@pytest.fixture
def pair(tmp_path: Path, telemetry: Telemetry) -> Iterator[tuple[Any, Any]]:
    clients = []
    for name, audited in (("bare", False), ("audited", True)):
        uri = str(tmp_path / f"{name}.db")
        client = milvus_audit.MilvusClient(uri, audit=telemetry.config()) if audited else pymilvus.MilvusClient(uri)
        client.create_collection("docs", dimension=DIM)
        client.insert("docs", [{"id": i, "vector": [i / 10] * DIM} for i in range(10)])
        clients.append(client)
    telemetry.clear()
    yield clients[0], clients[1]
    for client in clients:
        client.close()


@settings(max_examples=120, deadline=None, derandomize=True, database=None,  # the same examples in CI
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(calls=st.lists(call, min_size=1, max_size=4))
def test_audited_client_behaves_like_the_bare_one(pair: tuple[Any, Any], telemetry: Telemetry,
                                                  calls: list[tuple[str, list[Any], dict[str, Any]]]) -> None:
    bare, audited = pair
    errors_before = milvus_audit.internal_error_count()
    recorded_before = len(telemetry.records())
    for method, args, kwargs in calls:
        expected = outcome(getattr(bare, method), args, kwargs)
        actual = outcome(getattr(audited, method), args, kwargs)
        assert actual == expected, (method, args, kwargs)
    assert milvus_audit.internal_error_count() == errors_before
    records = telemetry.records()[recorded_before:]
    assert [r["db.operation.name"] for r in records] == [method for method, _, _ in calls]
