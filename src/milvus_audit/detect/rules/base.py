"""What every detection rule is made of, and the helpers they share.

A rule is one module under `milvus_audit/detect/rules/` with one `Rule` subclass that holds
its three parts:

1. **parameters**: `id`, `severity`, `attack`, `description` and `params` (each a `Param`:
   default and validation). The YAML rules file and `Rules.configure` are checked against
   them;
2. **streaming logic**: which events it sees (`failures`, `every_event`, `observes_success`)
   and `observe`, called once per such event, in O(1);
3. **Sigma form**: `sigma(params)`, the Sigma rules (spec v2) a SIEM runs for the same
   detection, built from the same parameters; `milvus_audit.siem.sigma` writes them.

The shared state of all rules (cooldowns, `--explain` peaks, the alert callback, the
bounded per-principal maps) is an `Alerting`, which the engine owns.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from milvus_audit.detect.windows import MAX_CONTRIBUTING, BoundedMap, Counted
from milvus_audit.model.catalog import Operation
from milvus_audit.semconv import (
    ALERT_ATTACK,
    ALERT_COUNT,
    ALERT_EVENTS,
    ALERT_ID,
    ALERT_PRINCIPAL,
    ALERT_PROCESSES,
    ALERT_RULE,
    ALERT_SEVERITY,
    ALERT_SUMMARY,
    ALERT_SUPPRESSED,
    ALERT_THRESHOLD,
    ALERT_WINDOW_S,
    AUTH_CREDENTIAL_ID,
    CLIENT_ADDRESS,
    DB_COLLECTION_NAME,
    HOST_NAME,
    PRINCIPAL_KEYS,
    USER_NAME,
)

if TYPE_CHECKING:
    from milvus_audit.detect.rules.settings import Rules, RuleSettings
    from milvus_audit.shared.fleet import Fleet

__all__ = ["MAX_CONTRIBUTING", "PRINCIPAL_KEYS", "SIGMA_PRINCIPAL", "Alert", "Alerting", "Observation", "Param",
           "Rule", "RuleInfo", "account_of", "client_of", "principal_of"]

# The field a Sigma correlation groups a principal by. Sigma's `group-by` takes fields, not a
# "first of these that is set": see docs/siem.md for where this and `principal_of` part ways.
SIGMA_PRINCIPAL = USER_NAME


@dataclass(frozen=True)
class RuleInfo:
    """A rule's identity and defaults: what `BUILTIN_RULES` maps each rule id to."""

    id: str
    severity: str
    attack: tuple[str, ...]
    description: str
    params: Mapping[str, float]


@dataclass(frozen=True)
class Param:
    """One tunable parameter: its default and what values it accepts.

    Every parameter is a number >= 0; `positive` ones (windows, thresholds that are divided by)
    must be > 0, and `at_most` caps a value (an EWMA weight)."""

    default: float
    positive: bool = False
    at_most: float | None = None

    def problem(self, value: float) -> str | None:
        """Why `value` is not acceptable, or None."""
        if self.positive and value <= 0:
            return f"must be greater than 0, got {value!r}"
        if self.at_most is not None and value > self.at_most:
            return f"must be at most {self.at_most:g}, got {value!r}"
        return None


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
    processes: int | None = None  # with shared state: how many processes saw the incident

    def attributes(self) -> dict[str, Any]:
        """The `milvus.alert` record's attributes."""
        attributes: dict[str, Any] = {
            ALERT_ID: self.id,
            ALERT_RULE: self.rule,
            ALERT_SEVERITY: self.severity,
            ALERT_SUMMARY: self.summary,
            ALERT_PRINCIPAL: self.principal,
            ALERT_COUNT: self.count,
            ALERT_THRESHOLD: self.threshold,
            ALERT_WINDOW_S: self.window_s,
            ALERT_ATTACK: list(self.attack),
            ALERT_EVENTS: list(self.events),
            ALERT_SUPPRESSED: self.suppressed,
        }
        attributes.update(self.principal_attributes)
        if self.collection:
            attributes[DB_COLLECTION_NAME] = self.collection
        if self.processes is not None:
            attributes[ALERT_PROCESSES] = self.processes
        return attributes


@dataclass(slots=True)
class Observation:
    """The parts of an audit event the rules read."""

    timestamp_s: float
    attributes: Mapping[str, Any]
    event_id: str


def principal_of(attributes: Mapping[str, Any]) -> str:
    """Who a call is attributed to: `enduser.id`, else `user.name`, else the credential id."""
    for key in PRINCIPAL_KEYS:
        value = attributes.get(key)
        if value:
            return str(value)
    return "anonymous"


def account_of(attributes: Mapping[str, Any]) -> str:
    """The Milvus account a login was for: `user.name`, else the credential id."""
    return str(attributes.get(USER_NAME) or attributes.get(AUTH_CREDENTIAL_ID) or "anonymous")


def client_of(attributes: Mapping[str, Any]) -> str:
    """Where a call came from: `client.address`, else `host.name`."""
    return str(attributes.get(CLIENT_ADDRESS) or attributes.get(HOST_NAME) or "this-client")


class Alerting:
    """The state every rule shares: cooldowns, `--explain` peaks, the bounded maps, the callback."""

    def __init__(self, cap: int, on_alert: Callable[[Alert], None] | None, explain: bool) -> None:
        self.cap = cap
        self.on_alert = on_alert
        self.explain = explain
        self.alerts_raised = 0
        self.maps: list[BoundedMap[Any]] = []
        self.cooldowns: BoundedMap[list[float]] = self.bounded(lambda: [float("-inf"), 0])
        self.peaks: BoundedMap[float] = self.bounded(float)
        # Shared state (`AuditConfig(shared_state=...)`): the fleet's counts as last synced, and
        # fleet-wide cooldowns. None: this engine sees only its own process.
        self.fleet: Fleet | None = None

    def bounded(self, factory: Callable[[], Any]) -> BoundedMap[Any]:
        """A per-principal map capped at `max_principals`, counted in the engine's evictions."""
        store: BoundedMap[Any] = BoundedMap(self.cap, factory)
        self.maps.append(store)
        return store

    def track(self, rule_id: str, principal: str, ratio: float) -> None:
        if not self.explain:
            return
        key = f"{rule_id}\x00{principal}"
        if ratio > self.peaks.get(key):
            self.peaks.set(key, ratio)


class Rule:
    """Base of every built-in rule; see the module docstring and docs/detection.md."""

    # -- parameters ---------------------------------------------------------------------
    id: ClassVar[str]
    severity: ClassVar[str]
    attack: ClassVar[tuple[str, ...]]
    description: ClassVar[str]
    params: ClassVar[Mapping[str, Param]]
    info: ClassVar[RuleInfo]  # set from the above for every subclass

    # -- which events `observe` sees ------------------------------------------------------
    failures: ClassVar[frozenset[str]] = frozenset()  # failed calls with these failure reasons
    every_event: ClassVar[bool] = False  # every event, failed or not
    joins_server_records: ClassVar[bool] = False  # the engine hands it server records to join (shadow_access)
    principal_keys: ClassVar[tuple[str, ...]] = PRINCIPAL_KEYS  # copied from the event into its alerts

    __slots__ = ("alerting", "rules")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.info = RuleInfo(cls.id, cls.severity, tuple(cls.attack), cls.description,
                            {name: param.default for name, param in cls.params.items()})

    def __init__(self, rules: Rules, alerting: Alerting) -> None:
        self.rules = rules
        self.alerting = alerting

    @classmethod
    def observes_success(cls, operation: Operation) -> bool:
        """Whether `observe` sees successful calls of `operation` (asked once per operation)."""
        return False

    def observe(self, observation: Observation, principal: str, operation: Operation,
                alerts: list[Alert]) -> None:
        """One event this rule sees; append what fires to `alerts` (through `fire`)."""
        raise NotImplementedError

    @classmethod
    def sigma(cls, params: Mapping[str, float]) -> list[dict[str, Any]]:
        """The Sigma rules for this detection, with the given (default) parameters."""
        return []

    # -- helpers --------------------------------------------------------------------------
    def settings_for(self, principal: str) -> RuleSettings | None:
        """The rule's settings, or None when it is off or the principal is allowlisted."""
        settings = self.rules.rule(self.id)
        if not settings.enabled or principal in settings.allowlist:
            return None
        return settings

    def bounded(self, factory: Callable[[], Any]) -> BoundedMap[Any]:
        return self.alerting.bounded(factory)

    def counted(self) -> BoundedMap[Counted]:
        """Per-principal sliding windows of this rule's `window_s` (read when a principal is first seen)."""
        return self.alerting.bounded(lambda: Counted(self.rules.rule(self.id).params["window_s"]))

    def track(self, principal: str, ratio: float) -> None:
        """For `--explain`: how close `principal` came to firing (value / threshold)."""
        if self.alerting.explain:
            self.alerting.track(self.id, principal, ratio)

    def fire(self, alerts: list[Alert], settings: RuleSettings, observation: Observation, principal: str,
             summary: str | Callable[[], str], count: float, threshold: float, window_s: float,
             events: list[str] | Callable[[], list[str]], severity: str | None = None,
             collection: str | None = None, cooldown_key: str | None = None) -> None:
        """Raise an alert unless this rule already alerted for this key within its cooldown.

        `summary` and `events` may be callables: a sustained attack keeps tripping a rule, and
        what only a raised alert needs is then built only when one is raised."""
        alerting = self.alerting
        if alerting.explain:
            alerting.track(self.id, principal, count / threshold if threshold else 1.0)
        key = f"{self.id}\x00{cooldown_key or principal}"
        cooldown = alerting.cooldowns.get(key)
        if observation.timestamp_s - cooldown[0] < settings.cooldown_s:
            cooldown[1] += 1
            return
        suppressed = int(cooldown[1])
        cooldown[0], cooldown[1] = observation.timestamp_s, 0
        attributes = observation.attributes
        principal_attributes = {k: attributes[k] for k in self.principal_keys if k in attributes}
        if callable(summary):
            summary = summary()
        if callable(events):
            events = events()
        alert = Alert(rule=self.id, severity=severity or settings.severity, summary=summary, principal=principal,
                      timestamp_ns=int(observation.timestamp_s * 1e9), count=count, threshold=threshold,
                      window_s=window_s, attack=self.attack, events=list(events)[-MAX_CONTRIBUTING:],
                      principal_attributes=principal_attributes, suppressed=suppressed, collection=collection)
        fleet = alerting.fleet
        if fleet is not None and fleet.claim(alert, self.id, cooldown_key or principal, settings.cooldown_s):
            return  # published by the shared state once its fleet-wide cooldown is claimed
        alerting.alerts_raised += 1
        alerts.append(alert)
        if alerting.on_alert is not None:
            alerting.on_alert(alert)

    def windowed(self, store: BoundedMap[Counted], principal: str, observation: Observation,
                 alerts: list[Alert], describe: str, value: float = 1.0, param: str = "threshold") -> None:
        """Add `value` to the principal's window; fire when the window's sum reaches `param`.

        `describe` is the summary, with `{principal}`, `{count}` and `{window}` filled in."""
        settings = self.settings_for(principal)
        if settings is None:
            return
        counted = store.get(principal)
        total = counted.add(observation.timestamp_s, observation.event_id, value)
        threshold = settings.param(param, observation.attributes.get(DB_COLLECTION_NAME))
        window = settings.params["window_s"]
        fleet = self.alerting.fleet
        if fleet is not None:  # the other processes' count as last synced; decided again after each sync
            total += fleet.count(self.id, principal, observation.timestamp_s, value, window, recheck=lambda alerts:
                                 self.recheck_window(store, principal, observation, alerts, describe, param))
        if self.alerting.explain:
            self.alerting.track(self.id, principal, total / threshold)
        if total >= threshold:
            now = observation.timestamp_s
            self.fire(alerts, settings, observation, principal,
                      lambda: describe.format(principal=principal, count=int(total), window=int(window)),
                      total, threshold, window, lambda: counted.events(now))

    def recheck_window(self, store: BoundedMap[Counted], principal: str, observation: Observation,
                       alerts: list[Alert], describe: str, param: str) -> None:
        """After a sync: the local window plus the fleet's fresh count, judged again (shared state)."""
        settings = self.settings_for(principal)
        counted = store.peek(principal)
        fleet = self.alerting.fleet
        if settings is None or counted is None or fleet is None:
            return
        window = settings.params["window_s"]
        now = observation.timestamp_s
        total = counted.window.add(now, 0.0) + fleet.others_sum((self.id, principal), int(now // (window / 12)), 12)
        threshold = settings.param(param, observation.attributes.get(DB_COLLECTION_NAME))
        if total >= threshold:
            self.fire(alerts, settings, observation, principal,
                      lambda: describe.format(principal=principal, count=int(total), window=int(window)),
                      total, threshold, window, lambda: counted.events(now))
