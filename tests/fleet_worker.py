"""One process of a fleet, for tests/test_fleet.py: an application on Milvus Lite with shared
state, driven by JSON commands on stdin, one JSON reply per line on stdout.

    python -m tests.fleet_worker <lite db path> <redis url> <prefix> <block key hex> [<rules json>]
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

import pymilvus
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider

import milvus_audit
from milvus_audit.detect import Rules
from milvus_audit.exceptions import AccessBlocked
from milvus_audit.respond import Block, Playbook
from milvus_audit.wiring import runtime_for, shared_state_of


class RefusingClient(pymilvus.MilvusClient):
    """A Milvus Lite client that fails authentication as the real server does (Lite ignores
    credentials): `NeedAuthenticate` (code 1800) on every call."""

    def list_collections(self, **kwargs: Any) -> list[str]:
        raise pymilvus.MilvusException(code=1800, message="auth check failure, please check username and "
                                                          "password are correct")


class StubClient(pymilvus.MilvusClient):
    """Answers at once, without a server: the latency comparison then measures what auditing adds,
    not Milvus Lite's own scheduling noise."""

    def __init__(self) -> None:  # no connection
        pass

    def list_collections(self, **kwargs: Any) -> list[str]:
        return ["docs"]


def rules_from(spec: dict[str, Any]) -> Rules:
    rules = Rules()
    for rule_id, settings in rules.settings.items():
        settings.enabled = rule_id in spec
    for rule_id, values in spec.items():
        if values:
            rules.configure(rule_id, **values)
    return rules


def main() -> None:
    logging.disable(logging.CRITICAL)
    db, url, prefix, key = sys.argv[1:5]
    spec = json.loads(sys.argv[5]) if len(sys.argv) > 5 else {"brute_force": {"threshold": 20}}
    logs = InMemoryLogRecordExporter()
    logger_provider = LoggerProvider()
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(logs))
    metrics = InMemoryMetricReader()
    alerts: list[Any] = []
    blocking = [Playbook(rules=["unauthorized_access"], actions=[Block(ttl_s=30, scope="enduser")])]

    def config(shared: bool) -> milvus_audit.AuditConfig:
        return milvus_audit.AuditConfig(
            logger_provider=logger_provider, tracer_provider=TracerProvider(),
            meter_provider=MeterProvider(metric_readers=[metrics]) if shared else None,
            detection=rules_from(spec), on_alert=[alerts.append] if shared else [],
            playbooks=blocking, shared_state=url if shared else False,
            shared_state_prefix=prefix, block_key=key)

    started = time.monotonic()
    shared_config = config(True)
    client = milvus_audit.MilvusClient(db, audit=shared_config)  # loads the fleet's blocks first
    runtime = runtime_for(shared_config)
    state = shared_state_of(runtime)
    assert state is not None and runtime.blocks is not None
    stubs = (milvus_audit.instrument(StubClient(), shared_config),  # the same app with and without shared state
             milvus_audit.instrument(StubClient(), config(False)))
    refusing: dict[str, Any] = {}
    reply({"ready": True, "start_s": time.monotonic() - started})

    for line in sys.stdin:
        command = json.loads(line)
        op = command["op"]
        if op == "fail_login":
            user = command["user"]
            if user not in refusing:
                refusing[user] = milvus_audit.instrument(RefusingClient(db, token=f"{user}:wrong-password"),
                                                         shared_config)
            for _ in range(command.get("times", 1)):
                try:
                    refusing[user].list_collections()
                except pymilvus.MilvusException:
                    pass
            reply({"done": True})
        elif op == "call":
            reply(call(client, command["principal"]))
        elif op == "first_call":  # the first call of this process, as a principal
            reply(call(client, command["principal"]))
        elif op == "poll":  # call as `principal` until `want` (refused or served); when it happened
            deadline = time.time() + command.get("timeout_s", 5)
            want = command["want"]
            while time.time() < deadline:
                result = call(client, command["principal"])
                if ("blocked" in result) == (want == "refused"):
                    reply({"at": time.time(), **result})
                    break
                time.sleep(0.002)
            else:
                reply({"timeout": True})
        elif op == "block":
            entry = runtime.blocks.block(command["scope"], command["principal"], command["ttl_s"], "test", "t")
            reply({"at": time.time(), "until": entry.until})
        elif op == "lift":
            reply({"at": time.time(), "lifted": runtime.blocks.lift(command["scope"], command["principal"])})
        elif op == "latencies":  # interleaved: the shared-state client and the same app without it
            shared_us, local_us, failed = [], [], 0
            for _ in range(command["calls"]):
                for target, into in ((stubs[0], shared_us), (stubs[1], local_us)):
                    start = time.perf_counter_ns()
                    try:
                        target.list_collections()
                    except Exception:
                        failed += 1
                    into.append((time.perf_counter_ns() - start) / 1000)
            reply({"shared_us": shared_us, "local_us": local_us, "failed": failed})
        elif op == "sync":
            milvus_audit.flush()
            state.sync_once(force=True)
            reply({"up": state.up})
        elif op == "state":
            milvus_audit.flush()
            reply({"up": state.up, "round_trips": state.round_trips, "member": state.member})
        elif op == "records":
            milvus_audit.flush()
            records = [{"event": r.log_record.event_name, "at": r.log_record.timestamp,
                        **dict(r.log_record.attributes or {})} for r in logs.get_finished_logs()]
            reply({"records": [r for r in records if r["event"] != "milvus.audit"],
                   "alerts": [{"rule": a.rule, "principal": a.principal, "count": a.count,
                               "processes": a.processes, "timestamp_ns": a.timestamp_ns} for a in alerts],
                   "gauge": gauge(metrics)})
        elif op == "exit":
            reply({"bye": True})
            return


def gauge(reader: InMemoryMetricReader) -> list[float]:
    data = reader.get_metrics_data()
    values: list[float] = []
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == "milvus_audit.shared_state.up":
                    values.extend(point.value for point in metric.data.data_points)
    return values


def call(client: Any, principal: str) -> dict[str, Any]:
    with milvus_audit.enduser(principal):
        try:
            client.list_collections()
        except AccessBlocked:
            return {"blocked": True}
        except Exception as exc:
            return {"error": type(exc).__name__}
    return {"ok": True}


def reply(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
