"""The detection engine: built-in security rules over the audit stream.

It observes one audit event at a time (the caller serializes: see `sink.py`), in O(1)
per rule, with no I/O, and raises alerts through a callback. Time is the event's own timestamp, so replaying a recorded
JSONL stream gives the same alerts as the live run. Per-principal state lives in
bounded maps.
"""

from __future__ import annotations

import itertools
import math
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from milvus_audit.detect.rules import BUILTIN_RULES, Rules, RuleSettings
from milvus_audit.detect.windows import BoundedMap, Window
from milvus_audit.model.catalog import Action, Category, Shape, lookup

MAX_CONTRIBUTING = 10
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OPERATOR_WORDS = {"and", "or", "not", "in", "like", "AND", "OR", "NOT", "IN", "LIKE"}
_ESCALATION_ACTIONS = frozenset({Action.ACCOUNT_CREATE, Action.ROLE_GRANT, Action.PRIVILEGE_GRANT,
                                 Action.PASSWORD_CHANGE})
_SHAPE_FLOORS = (("db.milvus.limit", "limit_floor"), ("db.milvus.nq", "nq_floor"),
                 ("db.response.returned_rows", "rows_floor"))
PRINCIPAL_KEYS = ("enduser.id", "user.name", "milvus_audit.auth.credential_id")


@dataclass
class Alert:
    """One rule firing for one principal."""

    rule: str
    severity: str
    summary: str
    principal: str
    timestamp_ns: int
    count: float
    threshold: float
    window_s: float
    attack: tuple[str, ...]
    events: list[str]
    principal_attributes: dict[str, Any]
    suppressed: int = 0
    id: str = field(default_factory=lambda: secrets.token_hex(8))
    collection: str | None = None

    def attributes(self) -> dict[str, Any]:
        """The `milvus.alert` record's attributes."""
        attributes: dict[str, Any] = {
            "milvus_audit.alert.id": self.id,
            "milvus_audit.alert.rule": self.rule,
            "milvus_audit.alert.severity": self.severity,
            "milvus_audit.alert.summary": self.summary,
            "milvus_audit.alert.principal": self.principal,
            "milvus_audit.alert.count": self.count,
            "milvus_audit.alert.threshold": self.threshold,
            "milvus_audit.alert.window_s": self.window_s,
            "milvus_audit.alert.attack": list(self.attack),
            "milvus_audit.alert.events": list(self.events),
            "milvus_audit.alert.suppressed": self.suppressed,
        }
        attributes.update(self.principal_attributes)
        if self.collection:
            attributes["db.collection.name"] = self.collection
        return attributes


@dataclass(slots=True)
class Observation:
    """The parts of an audit event the rules read."""

    timestamp_s: float
    attributes: Mapping[str, Any]
    event_id: str


class _Counted:
    """A sliding-window sum plus the ids of its latest contributing events."""

    __slots__ = ("_recent", "span_s", "window")

    def __init__(self, window_s: float) -> None:
        self.window = Window(window_s)
        self.span_s = window_s
        self._recent: list[tuple[float, str]] = []

    def add(self, now: float, event_id: str, value: float = 1.0) -> float:
        self._recent.append((now, event_id))
        if len(self._recent) > MAX_CONTRIBUTING:
            del self._recent[0]
        return self.window.add(now, value)

    def events(self, now: float) -> list[str]:
        """Up to ten contributing event ids still inside the window."""
        return [event for at, event in self._recent if now - at < self.span_s]


class _Baseline:
    """EWMA mean and variance: O(1) learned baselines."""

    __slots__ = ("alpha", "mean", "samples", "var")

    def __init__(self, alpha: float = 0.1) -> None:
        self.alpha = alpha
        self.mean = 0.0
        self.var = 0.0
        self.samples = 0

    def update(self, value: float) -> None:
        self.samples += 1
        if self.samples == 1:
            self.mean = value
            return
        delta = value - self.mean
        self.mean += self.alpha * delta
        self.var = (1 - self.alpha) * (self.var + self.alpha * delta * delta)

    def p99(self) -> float:
        return self.mean + 2.33 * math.sqrt(self.var)


class _PrincipalHistory:
    """What unusual_query learns of a principal: since when, how much, which collections."""

    __slots__ = ("collections", "events", "first")

    def __init__(self) -> None:
        self.first: float | None = None
        self.events = 0
        self.collections: set[str] = set()


def principal_of(attributes: Mapping[str, Any]) -> str:
    for key in PRINCIPAL_KEYS:
        value = attributes.get(key)
        if value:
            return str(value)
    return "anonymous"


def _account_of(attributes: Mapping[str, Any]) -> str:
    return str(attributes.get("user.name") or attributes.get("milvus_audit.auth.credential_id") or "anonymous")


def _client_of(attributes: Mapping[str, Any]) -> str:
    return str(attributes.get("client.address") or attributes.get("host.name") or "this-client")


def matches_everything(filter_shape: str | None) -> bool:
    """A delete filter with no field in it (`? == ?`, `true`) matches every row."""
    if filter_shape is None:
        return False
    fields = [word for word in _IDENTIFIER.findall(filter_shape) if word not in _OPERATOR_WORDS]
    return not fields


class DetectionEngine:
    """Runs the enabled built-in rules over events and calls `on_alert` for each alert."""

    def __init__(self, rules: Rules | None = None, on_alert: Callable[[Alert], None] | None = None,
                 *, explain: bool = False) -> None:
        self.rules = rules or Rules()
        self.on_alert = on_alert
        self.explain = explain  # track how close each principal came to each rule (replay --explain)
        cap = self.rules.max_principals
        self._maps: list[BoundedMap[Any]] = []

        def bounded(factory: Callable[[], Any]) -> BoundedMap[Any]:
            store: BoundedMap[Any] = BoundedMap(cap, factory)
            self._maps.append(store)
            return store

        s = self.rules.rule
        self._brute = bounded(lambda: _Counted(s("brute_force").params["window_s"]))
        self._spray = bounded(dict)
        self._denied = bounded(lambda: _Counted(s("unauthorized_access").params["window_s"]))
        self._exhausted = bounded(lambda: _Counted(s("resource_exhaustion").params["window_s"]))
        self._rows = bounded(lambda: _Counted(s("data_exfiltration").params["window_s"]))
        self._latency = bounded(_Baseline)
        self._shape = bounded(dict)
        self._principals = bounded(_PrincipalHistory)
        self._created = bounded(float)
        self._cooldowns = bounded(lambda: [float("-inf"), 0])
        self._peaks = bounded(float)
        self._spike_bucket = -1
        self._spike_count = 0.0
        self._spike_baseline: float | None = None
        self._spike_events: list[str] = []
        self.alerts_raised = 0

    @property
    def evictions(self) -> int:
        return sum(store.evictions for store in self._maps)

    @property
    def tracked_principals(self) -> int:
        return max(len(store) for store in self._maps)

    # -- entry point -----------------------------------------------------------------
    def observe(self, observation: Observation) -> list[Alert]:
        attributes = observation.attributes
        operation = lookup(str(attributes.get("db.operation.name", "")))
        failure = attributes.get("milvus_audit.failure_reason")
        principal = principal_of(attributes)
        alerts: list[Alert] = []
        if failure == "authentication":
            self._brute_force(observation, alerts)
            self._password_spray(observation, alerts)
        elif failure == "permission_denied":
            self._unauthorized(observation, principal, operation.category, alerts)
        elif failure == "resource_exhausted":
            self._resource_exhaustion(observation, principal, alerts)
        self._error_spike(observation, failure is not None, alerts)
        if failure is None and attributes.get("milvus_audit.outcome") == "success":
            if operation.category is Category.DATA_READ:
                self._slow_query(observation, principal, alerts)
                self._unusual_query(observation, principal, alerts)
                self._exfiltration(observation, principal, alerts)
            if operation.action is Action.DESTROY or operation.shape is Shape.DELETE:
                self._destructive(observation, principal, operation.action, alerts)
            if operation.action in _ESCALATION_ACTIONS:
                self._privilege_escalation(observation, principal, operation.action, alerts)
        return alerts

    # -- helpers ----------------------------------------------------------------------
    def _settings(self, rule_id: str, principal: str) -> RuleSettings | None:
        settings = self.rules.rule(rule_id)
        if not settings.enabled or principal in settings.allowlist:
            return None
        return settings

    def _track(self, rule_id: str, principal: str, ratio: float) -> None:
        if not self.explain:
            return
        key = f"{rule_id}\x00{principal}"
        if ratio > self._peaks.get(key):
            self._peaks.set(key, ratio)

    def peaks(self) -> dict[tuple[str, str], float]:
        """For `--explain`: the highest value/threshold ratio each principal reached per rule."""
        return {tuple(key.split("\x00", 1)): ratio for key, ratio in self._peaks.items()}  # type: ignore[misc]

    def _fire(self, alerts: list[Alert], rule_id: str, settings: RuleSettings, observation: Observation,
              principal: str, summary: str | Callable[[], str], count: float, threshold: float,
              window_s: float, events: list[str] | Callable[[], list[str]], severity: str | None = None,
              collection: str | None = None, cooldown_key: str | None = None) -> None:
        """Raise an alert unless this rule already alerted for this key within its cooldown.

        `summary` and `events` may be callables: a sustained attack keeps tripping a rule, and
        what only a raised alert needs is then built only when one is raised."""
        self._track(rule_id, principal, count / threshold if threshold else 1.0)
        key = f"{rule_id}\x00{cooldown_key or principal}"
        cooldown = self._cooldowns.get(key)
        if observation.timestamp_s - cooldown[0] < settings.cooldown_s:
            cooldown[1] += 1
            return
        suppressed = cooldown[1]
        cooldown[0], cooldown[1] = observation.timestamp_s, 0
        attributes = observation.attributes
        principal_attributes = {k: attributes[k] for k in PRINCIPAL_KEYS if k in attributes}
        if callable(summary):
            summary = summary()
        if callable(events):
            events = events()
        alert = Alert(rule=rule_id, severity=severity or settings.severity, summary=summary, principal=principal,
                      timestamp_ns=int(observation.timestamp_s * 1e9), count=count, threshold=threshold,
                      window_s=window_s, attack=BUILTIN_RULES[rule_id].attack, events=list(events)[-MAX_CONTRIBUTING:],
                      principal_attributes=principal_attributes, suppressed=suppressed, collection=collection)
        self.alerts_raised += 1
        alerts.append(alert)
        if self.on_alert is not None:
            self.on_alert(alert)

    def _windowed(self, rule_id: str, store: BoundedMap[Any], principal: str, observation: Observation,
                  alerts: list[Alert], describe: str, value: float = 1.0, param: str = "threshold") -> None:
        settings = self._settings(rule_id, principal)
        if settings is None:
            return
        counted: _Counted = store.get(principal)
        total = counted.add(observation.timestamp_s, observation.event_id, value)
        threshold = settings.param(param, observation.attributes.get("db.collection.name"))
        window = settings.params["window_s"]
        self._track(rule_id, principal, total / threshold)
        if total >= threshold:
            now = observation.timestamp_s
            self._fire(alerts, rule_id, settings, observation, principal,
                       lambda: describe.format(principal=principal, count=int(total), window=int(window)),
                       total, threshold, window, lambda: counted.events(now))

    # -- rules ------------------------------------------------------------------------
    def _brute_force(self, observation: Observation, alerts: list[Alert]) -> None:
        principal = _account_of(observation.attributes)
        self._windowed("brute_force", self._brute, principal, observation, alerts,
                       "{count} authentication failures for {principal} within {window} s")

    def _password_spray(self, observation: Observation, alerts: list[Alert]) -> None:
        client = _client_of(observation.attributes)
        settings = self._settings("password_spray", client)
        user = observation.attributes.get("user.name")
        if settings is None or not user:
            return
        now = observation.timestamp_s
        window = settings.params["window_s"]
        seen: dict[str, float] = self._spray.get(client)  # user -> last failure, oldest first
        seen.pop(str(user), None)
        seen[str(user)] = now
        threshold = settings.params["distinct_users"]
        for name, at in list(itertools.islice(seen.items(), 8)):  # expire from the oldest end
            if now - at <= window and len(seen) <= 4 * threshold + 64:
                break
            del seen[name]
        self._track("password_spray", client, len(seen) / threshold)
        if len(seen) >= threshold:
            self._fire(alerts, "password_spray", settings, observation, client,
                       f"authentication failures for {len(seen)} distinct users from {client} "
                       f"within {int(window)} s", len(seen), threshold, window, [observation.event_id])

    def _unauthorized(self, observation: Observation, principal: str, category: Category, alerts: list[Alert]) -> None:
        if category is Category.RBAC:
            settings = self._settings("unauthorized_access", principal)
            if settings is not None:
                operation = observation.attributes.get("db.operation.name")
                self._fire(alerts, "unauthorized_access", settings, observation, principal,
                           f"{principal} was refused the RBAC call {operation}", 1, 1,
                           settings.params["window_s"], [observation.event_id], severity="high",
                           cooldown_key=f"{principal}\x00rbac")
            return
        self._windowed("unauthorized_access", self._denied, principal, observation, alerts,
                       "{count} permission denials for {principal} within {window} s")

    def _resource_exhaustion(self, observation: Observation, principal: str, alerts: list[Alert]) -> None:
        self._windowed("resource_exhaustion", self._exhausted, principal, observation, alerts,
                       "{count} resource-exhausted failures for {principal} within {window} s")

    def _error_spike(self, observation: Observation, failed: bool, alerts: list[Alert]) -> None:
        settings = self._settings("error_spike", "*")
        if settings is None:
            return
        window = settings.params["window_s"]
        bucket = int(observation.timestamp_s // window)
        if bucket != self._spike_bucket:
            if self._spike_bucket >= 0:
                # Close the finished windows (empty ones count as zero failures).
                alpha = settings.params["alpha"]
                for _ in range(min(bucket - self._spike_bucket, 10)):
                    count, self._spike_count = self._spike_count, 0.0
                    base = self._spike_baseline
                    self._spike_baseline = count if base is None else base + alpha * (count - base)
            self._spike_bucket = bucket
            self._spike_count = 0.0
            self._spike_events = []
        if not failed:
            return
        self._spike_count += 1
        self._spike_events.append(observation.event_id)
        del self._spike_events[:-MAX_CONTRIBUTING]
        baseline = self._spike_baseline or 0.0
        threshold = max(settings.params["min_failures"], settings.params["factor"] * baseline)
        self._track("error_spike", "*", self._spike_count / threshold)
        if self._spike_count >= threshold:
            self._fire(alerts, "error_spike", settings, observation, "*",
                       f"{int(self._spike_count)} failures within {int(window)} s against a baseline of "
                       f"{baseline:.1f}", self._spike_count, threshold, window, self._spike_events)

    def _slow_query(self, observation: Observation, principal: str, alerts: list[Alert]) -> None:
        attributes = observation.attributes
        duration = attributes.get("milvus_audit.duration_ms")
        collection = attributes.get("db.collection.name")
        settings = self._settings("slow_query", principal)
        if settings is None or not isinstance(duration, (int, float)):
            return
        params = settings.for_collection(collection)
        baseline: _Baseline = self._latency.get(str(collection))
        limit = params["absolute_ms"]
        if baseline.samples >= params["min_samples"]:
            # relative to the learned p99, but never below min_ms: jitter on fast reads is noise
            limit = min(limit, max(params["k"] * baseline.p99(), params["min_ms"]))
        self._track("slow_query", principal, duration / limit if limit else 0.0)
        if duration > limit:
            self._fire(alerts, "slow_query", settings, observation, principal,
                       f"{attributes.get('db.operation.name')} on {collection} took {duration:.0f} ms "
                       f"(limit {limit:.0f} ms)", duration, limit, 0, [observation.event_id],
                       collection=str(collection) if collection else None)
        baseline.update(float(duration))

    def _unusual_query(self, observation: Observation, principal: str, alerts: list[Alert]) -> None:
        attributes = observation.attributes
        settings = self._settings("unusual_query", principal)
        collection = attributes.get("db.collection.name")
        if settings is None or not collection:
            return
        params = settings.for_collection(collection)
        now = observation.timestamp_s
        history: _PrincipalHistory = self._principals.get(principal)
        if history.first is None:
            history.first = now
        history.events += 1
        if collection not in history.collections:
            if now - history.first >= params["learning_s"] and history.events > params["learning_events"]:
                self._fire(alerts, "unusual_query", settings, observation, principal,
                           f"{principal} read collection {collection}, which it never touched before",
                           1, 1, 0, [observation.event_id], collection=str(collection),
                           cooldown_key=f"{principal}\x00{collection}\x00new")
            if len(history.collections) < 1024:
                history.collections.add(str(collection))
        shapes: dict[str, _Baseline] = self._shape.get(f"{principal}\x00{collection}")
        for attribute, floor_param in _SHAPE_FLOORS:
            value = attributes.get(attribute)
            if value is None or value.__class__ is bool:
                continue
            baseline = shapes.get(attribute)
            if baseline is None:
                baseline = shapes[attribute] = _Baseline()
            if baseline.samples >= params["min_samples"]:
                limit = max(params[floor_param], params["factor"] * max(baseline.mean, 1.0))
                self._track("unusual_query", principal, value / limit)
                if value > limit:
                    self._fire(alerts, "unusual_query", settings, observation, principal,
                               f"{principal} asked {attribute}={value} on {collection}, usually "
                               f"{baseline.mean:.0f}", value, limit, 0, [observation.event_id],
                               collection=str(collection), cooldown_key=f"{principal}\x00{collection}")
            baseline.update(float(value))

    def _exfiltration(self, observation: Observation, principal: str, alerts: list[Alert]) -> None:
        rows = observation.attributes.get("db.response.returned_rows")
        if not isinstance(rows, int) or rows <= 0:
            return
        self._windowed("data_exfiltration", self._rows, principal, observation, alerts,
                       "{principal} read {count} rows within {window} s", value=rows, param="rows")

    def _destructive(self, observation: Observation, principal: str, action: Action, alerts: list[Alert]) -> None:
        attributes = observation.attributes
        settings = self._settings("destructive_operation", principal)
        if settings is None:
            return
        operation = attributes.get("db.operation.name")
        collection = attributes.get("db.collection.name")
        target = collection or attributes.get("db.namespace") or ""
        if action is Action.DESTROY:
            summary = f"{principal} ran {operation} on {target}"
        else:
            deleted = attributes.get("milvus_audit.affected_rows")
            limit = settings.param("delete_rows", collection)
            everything = "db.query.text" in attributes and matches_everything(attributes.get("db.query.text"))
            if not everything and not (isinstance(deleted, int) and deleted > limit):
                return
            summary = (f"{principal} deleted every row of {target}" if everything
                       else f"{principal} deleted {deleted} rows from {target}")
        self._fire(alerts, "destructive_operation", settings, observation, principal, summary,
                   1, 1, 0, [observation.event_id], collection=str(collection) if collection else None,
                   cooldown_key=f"{principal}\x00{operation}\x00{target}")

    def _privilege_escalation(self, observation: Observation, principal: str, action: Action,
                              alerts: list[Alert]) -> None:
        attributes = observation.attributes
        settings = self._settings("privilege_escalation", principal)
        if settings is None:
            return
        now = observation.timestamp_s
        target_user = attributes.get("milvus_audit.target.user")
        role = attributes.get("milvus_audit.target.role")
        summary = None
        if action is Action.ACCOUNT_CREATE and target_user:
            self._created.set(str(target_user), now)
        elif action is Action.ROLE_GRANT:
            created = self._created.peek(str(target_user)) if target_user else None
            if role == "admin":
                summary = f"{principal} granted the admin role to {target_user}"
            elif created is not None and now - created <= settings.params["window_s"]:
                summary = f"{principal} created {target_user} and granted it role {role} within " \
                          f"{int(now - created)} s"
        elif action is Action.PRIVILEGE_GRANT:
            privilege = attributes.get("milvus_audit.privilege")
            privileges = privilege if isinstance(privilege, (list, tuple)) else [privilege]
            if attributes.get("milvus_audit.object_name") == "*" or any(p in ("*", "All", "PrivilegeAll")
                                                                        for p in privileges):
                summary = f"{principal} granted global privilege {privilege} on " \
                          f"{attributes.get('milvus_audit.object_type')} * to role {role}"
        elif action is Action.PASSWORD_CHANGE and target_user and target_user != attributes.get("user.name"):
            summary = f"{principal} changed the password of another user, {target_user}"
        if summary:
            target = target_user or role or ""
            self._fire(alerts, "privilege_escalation", settings, observation, principal, summary, 1, 1,
                       settings.params["window_s"], [observation.event_id],
                       cooldown_key=f"{principal}\x00{action.value}\x00{target}")
