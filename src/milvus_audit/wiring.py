"""Wiring: what each `AuditConfig` runs, built in one place, once, before its first client.

For a configuration this builds its one `OTelEmitter`, its gates (fail-closed, blocks),
its sinks (detection) and the handlers detection publishes alerts to (the alert record,
the `on_alert` callbacks, the playbooks). Nothing is attached to an auditor afterwards;
clients built with the same configuration share this runtime, and so their detection
state and blocks.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from milvus_audit.auditing.auditor import AuditRuntime
from milvus_audit.auditing.gates import BlockList, DurabilityGate, Durable, Gate
from milvus_audit.auditing.lifecycle import lifecycle_started
from milvus_audit.auditing.policy import holder_for
from milvus_audit.config import AuditConfig
from milvus_audit.detect.sink import AlertHandler, DetectionSink, record_alerts, rules_from
from milvus_audit.export.spool import active_spools
from milvus_audit.model.record import Sink
from milvus_audit.otel.emitter import OTelEmitter
from milvus_audit.respond.playbook import Responder, playbooks_from_yaml
from milvus_audit.shared import SharedState, shared_settings

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
    runtime.policy = holder_for(config.policy, config.detection if isinstance(config.detection, (str, Path)) else None,
                                spans_all=config.policy_spans == "all")
    runtime.policy.emit = emitter.emit_record
    shared = _shared_state(config, emitter)
    if shared is not None and config.fail_closed:
        gates.append(shared)  # fail-closed: refuse while the fleet's blocks cannot be known
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
        sink = DetectionSink(rules, handlers, inline=inline)
        if shared is not None:
            sink.share(shared)
        sinks: list[Sink] = [sink]
        runtime.sinks.extend(sinks)
    if shared is not None:
        if runtime.blocks is None:  # no playbook here blocks, but the fleet's blocks apply here too
            runtime.blocks = BlockList(config.clock)
            gates.append(runtime.blocks)
        shared.attach_blocks(runtime.blocks)
        runtime.shared = shared
        shared.start()  # loads the fleet's blocks before the first call (bounded by a short timeout)
    runtime.gates = tuple(gates)
    lifecycle_started(runtime)
    return runtime


def shared_state_of(runtime: AuditRuntime) -> SharedState | None:
    """The configuration's connection to the fleet (`AuditConfig(shared_state=...)`), if any."""
    state = runtime.shared
    return state if isinstance(state, SharedState) else None


def _shared_state(config: AuditConfig, emitter: OTelEmitter) -> SharedState | None:
    settings = shared_settings(config)
    if settings is None:
        return None
    if settings.block_key is None:
        logging.getLogger("milvus_audit").warning(
            "milvus-audit shared state: no block key (AuditConfig.block_key, MILVUS_AUDIT_BLOCK_KEY or the "
            "integrity key): counts and cooldowns are shared, blocks stay in the process that placed them")
    return SharedState(settings, emitter, clock=config.clock, meter_provider=config.meter_provider,
                       fail_closed=config.fail_closed)


def _durable_spools(config: AuditConfig) -> list[Durable]:
    """The spools fail-closed mode checks: the pipeline's, or every spool `configure()` set up."""
    if config.durable_spools is not None:
        return list(config.durable_spools)
    return list(active_spools())
