"""The detection engine: runs the registered rules over the audit stream.

It observes one audit event at a time (the caller serializes: see `sink.py`), in O(1)
per rule, with no I/O, and raises alerts through a callback. Time is the event's own
timestamp, so replaying a recorded JSONL stream gives the same alerts as the live run.
The rules themselves (parameters, streaming logic, Sigma form) are the modules of
`milvus_audit.detect.rules`; the engine only routes each event to the rules that see it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from milvus_audit.detect.rules.base import (
    MAX_CONTRIBUTING,
    PRINCIPAL_KEYS,
    Alert,
    Alerting,
    Observation,
    Rule,
    principal_of,
)
from milvus_audit.detect.rules.destructive_operation import matches_everything
from milvus_audit.detect.rules.registry import BUILTIN_RULES, RULES
from milvus_audit.detect.rules.settings import Rules, RuleSettings
from milvus_audit.model.catalog import lookup
from milvus_audit.semconv import DB_OPERATION_NAME, FAILURE_REASON, OUTCOME, SOURCE, SOURCE_SERVER, SUCCESS

__all__ = ["BUILTIN_RULES", "MAX_CONTRIBUTING", "PRINCIPAL_KEYS", "Alert", "DetectionEngine", "Observation",
           "RuleSettings", "Rules", "matches_everything", "principal_of"]

_MAX_CACHED_OPERATIONS = 1024


class DetectionEngine:
    """Runs the enabled built-in rules over events and calls `on_alert` for each alert."""

    def __init__(self, rules: Rules | None = None, on_alert: Callable[[Alert], None] | None = None,
                 *, explain: bool = False) -> None:
        self.rules = rules or Rules()
        # explain: track how close each principal came to each rule (replay --explain)
        self._alerting = Alerting(self.rules.max_principals, on_alert, explain)
        self._rules: tuple[Rule, ...] = tuple(rule(self.rules, self._alerting) for rule in RULES)
        # Which rules see which events, decided once: failures by reason, then every event,
        # then successful calls by operation (cached per operation name).
        by_failure: dict[str, list[Rule]] = {}
        for rule in self._rules:
            for reason in rule.failures:
                by_failure.setdefault(reason, []).append(rule)
        self._on_failure = {reason: tuple(rules) for reason, rules in by_failure.items()}
        self._on_every = tuple(rule for rule in self._rules if rule.every_event)
        self._on_success: dict[str, tuple[Rule, ...]] = {}
        # shadow_access: server records (milvus_audit.source="server") are held until a client
        # record claims them (dropped: the client record was counted) or their grace ends (an
        # alert, then the other rules see them once).
        self._join: Any = next((rule for rule in self._rules if rule.joins_server_records), None)

    @property
    def on_alert(self) -> Callable[[Alert], None] | None:
        return self._alerting.on_alert

    @on_alert.setter
    def on_alert(self, callback: Callable[[Alert], None] | None) -> None:
        self._alerting.on_alert = callback

    @property
    def explain(self) -> bool:
        return self._alerting.explain

    @explain.setter
    def explain(self, value: bool) -> None:
        self._alerting.explain = value

    @property
    def alerts_raised(self) -> int:
        return self._alerting.alerts_raised

    @property
    def evictions(self) -> int:
        return sum(store.evictions for store in self._alerting.maps)

    @property
    def tracked_principals(self) -> int:
        return max(len(store) for store in self._alerting.maps)

    def peaks(self) -> dict[tuple[str, str], float]:
        """For `--explain`: the highest value/threshold ratio each principal reached per rule."""
        return {tuple(key.split("\x00", 1)): ratio for key, ratio in self._alerting.peaks.items()}  # type: ignore[misc]

    # -- entry point -----------------------------------------------------------------
    def observe(self, observation: Observation) -> list[Alert]:
        join = self._join
        if join is None:
            return self._route(observation)
        if observation.attributes.get(SOURCE) == SOURCE_SERVER:
            join.server(observation)
            alerts: list[Alert] = []
        else:
            join.client(observation)
            alerts = self._route(observation)
        self._release(join.expired(observation.timestamp_s), alerts)
        return alerts

    def advance(self, now_s: float) -> list[Alert]:
        """Time passed with no event (a live stream): server records whose grace ended are shadow."""
        alerts: list[Alert] = []
        if self._join is not None:
            self._release(self._join.expired(now_s), alerts)
        return alerts

    def finish(self) -> list[Alert]:
        """The stream ended: every server record still waiting for a client record is shadow."""
        alerts: list[Alert] = []
        if self._join is not None:
            self._release(self._join.expired(None), alerts)
        return alerts

    def _release(self, observations: list[Observation], alerts: list[Alert]) -> None:
        for observation in observations:
            self._join.shadow(observation, alerts)
            alerts.extend(self._route(observation))

    def _route(self, observation: Observation) -> list[Alert]:
        attributes = observation.attributes
        name = str(attributes.get(DB_OPERATION_NAME, ""))
        operation = lookup(name)
        failure = attributes.get(FAILURE_REASON)
        principal = principal_of(attributes)
        alerts: list[Alert] = []
        if failure is not None:
            for rule in self._on_failure.get(failure, ()) if failure.__class__ is str else ():
                rule.observe(observation, principal, operation, alerts)
        for rule in self._on_every:
            rule.observe(observation, principal, operation, alerts)
        if failure is None and attributes.get(OUTCOME) == SUCCESS:
            rules = self._on_success.get(name)
            if rules is None:
                rules = tuple(rule for rule in self._rules if rule.observes_success(operation))
                if len(self._on_success) < _MAX_CACHED_OPERATIONS:
                    self._on_success[name] = rules
            for rule in rules:
                rule.observe(observation, principal, operation, alerts)
        return alerts
