"""`milvus.audit.lifecycle`: auditing started or stopped in this process (PCI DSS 10.2.1.6).

Written when `AuditConfig(lifecycle=True)`, or by default when an audit policy is in
effect (every compliance pack is one). A `start` record is written when a configuration's
runtime is built (before its first call), a `stop` record when the process's audit
pipeline shuts down (before the chains are sealed, so the stop is covered by the final
checkpoint) and when `uninstrument()` runs. Each carries the version, the policy's hash and the sinks records go to.
"""

from __future__ import annotations

import os
import weakref
from typing import TYPE_CHECKING, Any

from opentelemetry import _logs

from milvus_audit import semconv
from milvus_audit._version import __version__
from milvus_audit.runtime.diagnostics import INTERNAL_ERRORS
from milvus_audit.runtime.worker import LIFECYCLE, Stage

if TYPE_CHECKING:
    from milvus_audit.auditing.auditor import AuditRuntime

_RUNNING: weakref.WeakValueDictionary[int, AuditRuntime] = weakref.WeakValueDictionary()


def sinks_of(runtime: AuditRuntime) -> list[str]:
    """Where this configuration's records go: the log processors' exporters, and detection."""
    provider: Any = runtime.config.logger_provider or _logs.get_logger_provider()
    names: list[str] = []
    multi = getattr(provider, "_multi_log_record_processor", None)
    for processor in getattr(multi, "_log_record_processors", ()):
        exporter = getattr(processor, "_exporter", None)
        batch = getattr(processor, "_batch", None)
        if exporter is None and batch is not None:
            exporter = getattr(batch, "_exporter", None) or getattr(getattr(batch, "_batch_processor", None),
                                                                    "_exporter", None)
        if exporter is None:
            exporter = getattr(getattr(processor, "_batch_processor", None), "_exporter", None)
        target = exporter if exporter is not None else processor
        name = type(target).__name__
        path = getattr(target, "path", None)
        names.append(f"{name}({path})" if path is not None else name)
    if runtime.sinks:
        names.append("detection")
    return names


def _record(runtime: AuditRuntime, state: str, reason: str) -> None:
    try:
        runtime.emitter.emit_record(semconv.LIFECYCLE_EVENT, semconv.INFO, {
            semconv.LIFECYCLE_STATE: state, semconv.LIFECYCLE_REASON: reason,
            semconv.LIFECYCLE_VERSION: __version__, semconv.POLICY_HASH: runtime.policy.hash,
            semconv.LIFECYCLE_SINKS: sinks_of(runtime), semconv.LIFECYCLE_PID: os.getpid(),
        })
    except Exception as exc:
        INTERNAL_ERRORS.report(f"lifecycle {state}", exc)


def wanted(runtime: AuditRuntime) -> bool:
    """`AuditConfig.lifecycle`: forced on or off, else on when a policy is in effect."""
    setting = runtime.config.lifecycle
    return bool(runtime.policy.policy.rules) if setting is None else setting


def lifecycle_started(runtime: AuditRuntime) -> None:
    if not wanted(runtime) or not runtime.emitter.listening():
        return
    _record(runtime, "start", "configured")
    _RUNNING[id(runtime)] = runtime


def lifecycle_stopped(runtime: AuditRuntime, reason: str) -> None:
    """The stop record of one configuration (once per start)."""
    if _RUNNING.pop(id(runtime), None) is runtime:
        _record(runtime, "stop", reason)


def _stop_all(_seconds_left: float) -> None:
    for runtime in list(_RUNNING.values()):
        lifecycle_stopped(runtime, "shutdown")


# After the calls' work, before the chains are sealed.
LIFECYCLE.register(Stage.RESPONSES, _stop_all)
