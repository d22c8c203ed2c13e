"""Wiring detection into the audit path: events in, `milvus.alert` records and callbacks out."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from milvus_audit.background import BACKGROUND
from milvus_audit.detect.engine import Alert, DetectionEngine, Observation
from milvus_audit.detect.rules import Rules

if TYPE_CHECKING:
    from milvus_audit.audit import AuditEvent, Auditor, Sink
    from milvus_audit.config import AuditConfig
    from milvus_audit.respond.playbook import Responder

log = logging.getLogger("milvus_audit")
ALERT_EVENT = "milvus.alert"
ALERT_SEVERITY_TEXT = {"low": "INFO", "medium": "WARN", "high": "ERROR", "critical": "FATAL"}


def event_id(trace_id: int | str, span_id: int | str) -> str:
    if isinstance(trace_id, int):
        return f"{trace_id:032x}:{span_id:016x}" if trace_id else ""
    return f"{trace_id}:{span_id}" if trace_id else ""


def rules_from(setting: Any) -> Rules | None:
    """`AuditConfig.detection` → `Rules`: True, a `Rules`, or a path to a YAML file."""
    if setting is None or setting is False:
        return None
    if setting is True:
        return Rules()
    if isinstance(setting, Rules):
        return setting
    if isinstance(setting, (str, Path)):
        return Rules.from_yaml(setting)
    raise TypeError(f"AuditConfig.detection takes True, a milvus_audit.detect.Rules or a YAML path, "
                    f"not {type(setting).__name__}")


class DetectionSink:
    """One per `AuditConfig`: every client built with that config shares the engine's state.

    Events are observed on milvus-audit's background thread (see `background.py`), so the
    application's calls never wait on the rules, unless a playbook can block: then each
    event is observed on the calling thread before the call returns, so that the very next
    call of a blocked principal is refused."""

    def __init__(self, config: AuditConfig, rules: Rules, responder: Responder | None = None) -> None:
        self.config = config
        self.engine = DetectionEngine(rules)
        self.responder = responder
        self._lock = threading.Lock()  # the engine's state, for calling threads observing inline

    def sink_for(self, auditor: Auditor) -> Sink:
        """The sink `auditor` calls with each of its events."""
        observe = self.observe
        if self.responder is not None and self.responder.can_block:
            return lambda event: observe(event, auditor)
        return lambda event: BACKGROUND.submit(observe, event, auditor)

    def observe(self, event: AuditEvent, auditor: Auditor) -> list[Alert]:
        observation = Observation(event.timestamp_ns / 1e9, event.attributes,
                                  event_id(event.trace_id, event.span_id))
        with self._lock:
            alerts = self.engine.observe(observation)
        for alert in alerts:  # outside the lock: callbacks and playbooks may call Milvus again
            self.publish(alert, auditor)
        return alerts

    def publish(self, alert: Alert, auditor: Auditor) -> None:
        attributes = alert.attributes()
        auditor.emit_record(ALERT_EVENT, ALERT_SEVERITY_TEXT[alert.severity], attributes, alert.timestamp_ns)
        auditor.emitter.count_alert(alert.rule, alert.severity)
        for callback in self.config.on_alert:
            try:
                callback(alert)
            except Exception as exc:  # a callback's failure never reaches the application
                from milvus_audit.audit import INTERNAL_ERRORS

                INTERNAL_ERRORS.report(f"on_alert callback {callback!r}", exc)
        if self.responder is not None:
            self.responder.handle(alert, auditor)
