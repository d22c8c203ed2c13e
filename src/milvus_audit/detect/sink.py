"""Detection in the audit path: events in, alerts out to the handlers `wiring` gave it.

Handlers are plain callables on an `Alert`: the alert record (`record_alerts`), the
application's `on_alert` callbacks and the response playbooks. Detection never calls back
into the auditor that produced the event.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from milvus_audit import semconv
from milvus_audit.detect.engine import Alert, DetectionEngine, Observation
from milvus_audit.detect.rules import Rules
from milvus_audit.model.record import AuditEvent, event_id
from milvus_audit.otel.emitter import OTelEmitter
from milvus_audit.runtime.diagnostics import INTERNAL_ERRORS
from milvus_audit.runtime.worker import BACKGROUND

if TYPE_CHECKING:
    from milvus_audit.shared.fleet import Recheck
    from milvus_audit.shared.state import SharedState

AlertHandler = Callable[[Alert], object]
ALERT_EVENT = semconv.ALERT_EVENT
ALERT_SEVERITY_TEXT = semconv.ALERT_SEVERITY_TEXT


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


def record_alerts(emitter: OTelEmitter) -> AlertHandler:
    """The handler that writes each alert as a `milvus.alert` record and counts it."""
    def record(alert: Alert) -> None:
        emitter.emit_record(ALERT_EVENT, ALERT_SEVERITY_TEXT[alert.severity], alert.attributes(),
                            alert.timestamp_ns)
        emitter.count_alert(alert.rule, alert.severity)
    return record


class DetectionSink:
    """One per `AuditConfig`: every client built with that config shares the engine's state.

    Events are observed on milvus-audit's background worker (see `runtime/worker.py`), so
    the application's calls never wait on the rules, unless `inline` (a playbook can
    block): then each event is observed on the calling thread before the call returns,
    so that the very next call of a blocked principal is refused."""

    def __init__(self, rules: Rules, handlers: Sequence[AlertHandler], *, inline: bool = False) -> None:
        self.engine = DetectionEngine(rules)
        self.handlers = tuple(handlers)
        self.inline = inline
        self._lock = threading.Lock()  # the engine's state, for calling threads observing inline

    def __call__(self, event: AuditEvent) -> None:
        if self.inline:
            self.observe(event)
        else:
            BACKGROUND.submit(self.observe, event)

    def observe(self, event: AuditEvent) -> list[Alert]:
        observation = Observation(event.timestamp_ns / 1e9, event.attributes,
                                  event_id(event.trace_id, event.span_id))
        with self._lock:
            alerts = self.engine.observe(observation)
        for alert in alerts:  # outside the lock: callbacks and playbooks may call Milvus again
            self.publish(alert)
        return alerts

    def share(self, state: SharedState) -> None:
        """Shared state: the rules count with the fleet's last synced counts, alerts wait for
        their fleet-wide cooldown, and after each sync the rules decide again (`recheck`)."""
        self.engine._alerting.fleet = state.fleet
        state.attach_detection(self.recheck, self.publish)

    def recheck(self, rechecks: Sequence[Recheck]) -> list[Alert]:
        """Runs on the shared state's sync thread, under the engine's lock; the caller publishes."""
        alerts: list[Alert] = []
        with self._lock:
            for recheck in rechecks:
                recheck(alerts)
        return alerts

    def publish(self, alert: Alert) -> None:
        for handler in self.handlers:
            try:
                handler(alert)
            except Exception as exc:  # a handler's failure never reaches the application
                INTERNAL_ERRORS.report(f"alert handler {handler!r}", exc)


class StreamDetector:
    """Detection over records read from files (`milvus-audit ingest --follow` with detection on):
    events observed in order on the reading thread, time advanced by the reader, the server
    records still waiting for a client record judged when the stream ends."""

    def __init__(self, rules: Rules, handlers: Sequence[AlertHandler]) -> None:
        self.engine = DetectionEngine(rules)
        self.handlers = tuple(handlers)
        self.alerts: deque[Alert] = deque(maxlen=1000)  # the latest, for callers that read them

    def event(self, event: AuditEvent) -> None:
        self._publish(self.engine.observe(Observation(event.timestamp_ns / 1e9, event.attributes,
                                                      event_id(event.trace_id, event.span_id))))

    def tick(self, now_s: float) -> None:
        self._publish(self.engine.advance(now_s))

    def close(self) -> None:
        self._publish(self.engine.finish())

    def _publish(self, alerts: list[Alert]) -> None:
        for alert in alerts:
            self.alerts.append(alert)
            for handler in self.handlers:
                try:
                    handler(alert)
                except Exception as exc:
                    INTERNAL_ERRORS.report(f"alert handler {handler!r}", exc)
