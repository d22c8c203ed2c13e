"""Wiring: what each `AuditConfig` runs, built in one place, once, before its first client.

For a configuration this builds its one `OTelEmitter`, its gates (fail-closed, blocks),
its sinks (detection) and the handlers detection publishes alerts to (the alert record,
the `on_alert` callbacks, the playbooks). Nothing is attached to an auditor afterwards;
clients built with the same configuration share this runtime, and so their detection
state and blocks.
"""

from __future__ import annotations

import threading
from pathlib import Path

from milvus_audit.auditing.auditor import AuditRuntime
from milvus_audit.auditing.gates import BlockList, DurabilityGate, Durable, Gate
from milvus_audit.config import AuditConfig
from milvus_audit.detect.sink import AlertHandler, DetectionSink, record_alerts, rules_from
from milvus_audit.export.spool import active_spools
from milvus_audit.model.record import Sink
from milvus_audit.otel.emitter import OTelEmitter
from milvus_audit.respond.playbook import Responder, playbooks_from_yaml

_LOCK = threading.Lock()


def runtime_for(config: AuditConfig) -> AuditRuntime:
    """The runtime of `config`, built on first use and shared by every client of it."""
    runtime = config._runtime
    if runtime is None:
        with _LOCK:
            runtime = config._runtime
            if runtime is None:
                runtime = config._runtime = build_runtime(config)
    assert isinstance(runtime, AuditRuntime)
    return runtime


def build_runtime(config: AuditConfig) -> AuditRuntime:
    emitter = OTelEmitter(config)
    gates: list[Gate] = []
    if config.fail_closed:
        gates.append(DurabilityGate(lambda: _durable_spools(config), emitter.count_refusal))
    runtime = AuditRuntime(config, emitter)
    rules = rules_from(config.detection)
    if rules is not None:
        handlers: list[AlertHandler] = [record_alerts(emitter), *config.alert_callbacks()]
        playbooks = list(config.playbooks)
        if isinstance(config.detection, (str, Path)):
            playbooks.extend(playbooks_from_yaml(config.detection))
        inline = False
        if playbooks:
            blocks = BlockList(config.clock)
            responder = Responder(playbooks, blocks, emitter)
            handlers.append(responder.handle)
            gates.append(blocks)
            runtime.blocks, runtime.responder = blocks, responder
            inline = responder.can_block
        sinks: list[Sink] = [DetectionSink(rules, handlers, inline=inline)]
        runtime.sinks.extend(sinks)
    runtime.gates = tuple(gates)
    return runtime


def _durable_spools(config: AuditConfig) -> list[Durable]:
    """The spools fail-closed mode checks: the pipeline's, or every spool `configure()` set up."""
    if config.durable_spools is not None:
        return list(config.durable_spools)
    return list(active_spools())
