"""`milvus-audit tune`: thresholds learned from your own traffic.

The baseline (JSONL of ordinary traffic, any format, plain or gzip) is replayed through the
engine with the current rules. While it runs, every value a rule compares with its threshold
(failures per window, rows per window, distinct users per window, durations, query shapes)
is sampled, per rule, per principal and per collection: the same numbers the rules see, with
no second implementation of their logic. From those:

- a rule that raised no alert keeps its threshold;
- a rule whose alerts come from a few outliers (a nightly export job reading a million rows)
  gets an allowlist entry for them, or an override for their collection when the outliers
  are one collection read by several principals, instead of a threshold raised for everyone;
- otherwise its threshold is raised above what the baseline reached (or, with
  `--alerts-per-day N`, to where about N alerts a day would remain).

The suggestion is replayed over the baseline to count the alerts it would raise; what still
fires on the baseline (learned rules: new collections, shapes) is allowlisted for the
principals it fired for, and checked again. The rules file written carries comments saying why.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from milvus_audit.detect.engine import DetectionEngine
from milvus_audit.detect.replay import PRIMARY_PARAM, in_time_order, merged
from milvus_audit.detect.rules import BUILTIN_RULES, Rules
from milvus_audit.export.console import printable
from milvus_audit.export.jsonl import Progress
from milvus_audit.semconv import DB_COLLECTION_NAME, DURATION_MS

__all__ = ["RuleTuning", "Tuning", "tune"]

RESERVOIR = 50_000  # samples kept per rule for its percentiles
MAX_OUTLIERS = 3  # principals allowlisted for a rule before its threshold is raised instead
MARGIN = 1.25  # a raised threshold sits this far above the baseline's maximum
# Per-collection parameters a collection override can set (the rule reads them per collection).
COLLECTION_PARAMS = {"data_exfiltration": "rows", "slow_query": "absolute_ms"}
# The rules whose watched quantity is sampled (the others fire on an event, not a quantity).
SAMPLED = frozenset({"brute_force", "password_spray", "unauthorized_access", "error_spike", "slow_query",
                     "data_exfiltration", "resource_exhaustion"})


class _Sampler:
    """The values one rule compared with its threshold: a reservoir, and maxima per key."""

    def __init__(self, seed: int) -> None:
        self.samples: list[float] = []
        self.seen = 0
        self.by_principal: dict[str, float] = {}
        self.by_collection: dict[str, float] = {}
        self.principals_of_collection: dict[str, set[str]] = defaultdict(set)
        self.by_principal_day: dict[tuple[str, int], float] = {}
        self._random = random.Random(seed)

    def add(self, value: float, principal: str, collection: str | None, day: int) -> None:
        self.seen += 1
        if len(self.samples) < RESERVOIR:
            self.samples.append(value)
        else:
            slot = self._random.randrange(self.seen)
            if slot < RESERVOIR:
                self.samples[slot] = value
        if len(self.by_principal) < 10_000 or principal in self.by_principal:
            self.by_principal[principal] = max(self.by_principal.get(principal, 0.0), value)
            key = (principal, day)
            self.by_principal_day[key] = max(self.by_principal_day.get(key, 0.0), value)
        if collection and (len(self.by_collection) < 10_000 or collection in self.by_collection):
            self.by_collection[collection] = max(self.by_collection.get(collection, 0.0), value)
            if len(self.principals_of_collection[collection]) < 64:
                self.principals_of_collection[collection].add(principal)

    def percentile(self, q: float) -> float:
        if not self.samples:
            return 0.0
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class RuleTuning:
    rule: str
    param: str | None
    current: float | None
    suggested: float | None
    p50: float = 0.0
    p99: float = 0.0
    max: float = 0.0
    samples: int = 0
    alerts_current: int = 0
    alerts_suggested: int = 0
    allowlist: list[str] = field(default_factory=list)
    collections: dict[str, dict[str, float]] = field(default_factory=dict)
    why: list[str] = field(default_factory=list)


@dataclass
class Tuning:
    rules: list[RuleTuning]
    records: int
    days: float
    tuned: Rules
    yaml_text: str


def _replay(paths: list[str], rules: Rules, samplers: dict[str, _Sampler] | None,
            progress: Progress | None = None) -> tuple[int, dict[str, dict[str, int]], float]:
    """Replay the baseline: (records, alerts per rule per principal, days covered)."""
    engine = DetectionEngine(rules, explain=samplers is not None)
    alerts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    current: list[Any] = [None]
    if samplers is not None:
        alerting = engine._alerting  # every value a rule compares with its threshold passes through track()

        def track(rule_id: str, principal: str, ratio: float) -> None:
            observation = current[0]
            if rule_id not in SAMPLED:  # event rules: what fires is routine or not, no quantity to learn
                return
            param = PRIMARY_PARAM[rule_id]
            value = ratio * rules.rule(rule_id).params.get(param, 1.0)
            if rule_id == "slow_query":  # compared with a learned limit: the duration itself is the quantity
                duration = observation.attributes.get(DURATION_MS) if observation is not None else None
                if not isinstance(duration, (int, float)):
                    return
                value = float(duration)
            collection = observation.attributes.get(DB_COLLECTION_NAME) if observation is not None else None
            day = int(observation.timestamp_s // 86_400) if observation is not None else 0
            sampler = samplers.get(rule_id)
            if sampler is None:
                sampler = samplers[rule_id] = _Sampler(len(samplers))
            sampler.add(value, principal, str(collection) if collection else None, day)

        alerting.track = track  # type: ignore[method-assign]
    count, first, last = 0, None, None
    for timestamp, _, observation in in_time_order(merged(paths, progress)):
        count += 1
        first = timestamp if first is None else first
        last = timestamp
        current[0] = observation
        for alert in engine.observe(observation):
            alerts[alert.rule][alert.principal] += 1
    for alert in engine.finish():
        alerts[alert.rule][alert.principal] += 1
    days = max(1.0, ((last or 0) - (first or 0)) / 86_400e9)
    return count, alerts, days


def _nice(value: float) -> float:
    """A round number at or above `value` (two significant digits)."""
    if value <= 0:
        return 1.0
    magnitude = 10 ** max(0, math.floor(math.log10(value)) - 1)
    return float(math.ceil(value / magnitude) * magnitude)


def _raised(sampler: _Sampler, per_day: int, days: float) -> float:
    if per_day <= 0:
        return _nice(max(sampler.by_principal.values(), default=0.0) * MARGIN)
    peaks = sorted(sampler.by_principal_day.values(), reverse=True)
    allowed = int(per_day * days)
    if allowed >= len(peaks):
        return _nice(min(peaks, default=1.0))
    return _nice(peaks[allowed] * 1.01)


def tune(files: Iterable[str | Path], *, current: Rules | None = None, alerts_per_day: int = 0,
         progress: Progress | None = None, current_text: str | None = None) -> Tuning:
    paths = [str(p) for p in files]
    current = current or Rules()
    samplers: dict[str, _Sampler] = {}
    records, alerts_now, days = _replay(paths, current, samplers, progress)
    tuned = Rules.from_yaml_text(current_text, current.source) if current_text else Rules()
    tunings: dict[str, RuleTuning] = {}
    for rule_id in BUILTIN_RULES:
        settings = current.rule(rule_id)
        param = PRIMARY_PARAM.get(rule_id)
        sampler = samplers.get(rule_id)
        value = settings.params.get(param) if param else None
        tuning = tunings[rule_id] = RuleTuning(rule_id, param, value, value)
        fired = alerts_now.get(rule_id, {})
        tuning.alerts_current = sum(fired.values())
        if sampler is not None:
            tuning.p50, tuning.p99 = sampler.percentile(0.5), sampler.percentile(0.99)
            tuning.max, tuning.samples = max(sampler.samples, default=0.0), sampler.seen
            tuning.max = max(tuning.max, max(sampler.by_principal.values(), default=0.0))
        if not settings.enabled or not fired:
            if settings.enabled and sampler is not None and value:
                tuning.why.append(f"no alert on the baseline (max {tuning.max:g} against {value:g}): unchanged")
            continue
        outliers = sorted(fired, key=lambda p: -fired[p])
        threshold = value
        if sampler is not None and threshold and alerts_per_day <= 0:
            outliers = [p for p, peak in sampler.by_principal.items() if peak >= threshold] or outliers
            others = max((peak for p, peak in sampler.by_principal.items() if p not in outliers), default=0.0)
        else:
            others = 0.0
        collection = _one_collection(rule_id, sampler, outliers, threshold) if alerts_per_day <= 0 else None
        if collection is not None or (len(outliers) <= MAX_OUTLIERS and (threshold is None or others < threshold)
                                      and alerts_per_day <= 0):
            if collection is not None and sampler is not None:
                limit = _nice(sampler.by_collection[collection] * MARGIN)
                tuning.collections[collection] = {COLLECTION_PARAMS[rule_id]: limit}
                tuning.why.append(
                    f"collection {printable(collection)} is the outlier ({sampler.by_collection[collection]:g}, read "
                    f"by {len(sampler.principals_of_collection[collection])} principals): its own {param} "
                    f"{limit:g}, everyone else keeps {threshold:g}")
            else:
                tuning.allowlist = outliers
                peaks = ", ".join(f"{printable(p)} ({sampler.by_principal.get(p, 0):g})" if sampler else printable(p)
                                  for p in outliers)
                rest = f"; every other principal stays below {threshold:g} (max {others:g})" \
                    if threshold and sampler is not None else ""
                tuning.why.append(f"outliers allowlisted instead of raising the threshold for everyone: {peaks}{rest}")
        elif sampler is not None and param is not None:
            tuning.suggested = _raised(sampler, alerts_per_day, days)
            goal = (f"about {alerts_per_day} alert(s) a day" if alerts_per_day > 0
                    else f"above the baseline's maximum ({tuning.max:g}) with a {MARGIN:g}x margin")
            tuning.why.append(f"{len(outliers)} principals reached {threshold:g}: {param} raised to "
                              f"{tuning.suggested:g}, {goal}")
        else:
            tuning.allowlist = outliers[:50]
            tuning.why.append("fired on the baseline for " + ", ".join(printable(p) for p in outliers[:50]) +
                              ": allowlisted (these principals do this routinely)")
        _apply(tuned, tuning)
    # Check the suggestion on the baseline; what still fires there is routine for those principals.
    for _ in range(3):
        _, alerts_after, _ = _replay(paths, tuned, None)
        still = {rule: principals for rule, principals in alerts_after.items() if principals}
        for rule_id, tuning in tunings.items():
            tuning.alerts_suggested = sum(alerts_after.get(rule_id, {}).values())
        if not still or alerts_per_day > 0:
            break
        for rule_id, principals in still.items():
            tuning = tunings[rule_id]
            extra = [p for p in principals if p not in tuning.allowlist]
            tuning.allowlist += extra
            tuning.why.append("still fired on the baseline with the above for " +
                              ", ".join(printable(p) for p in extra) + ": allowlisted")
            _apply(tuned, tuning)
    text = _yaml(tuned, tunings, paths, records, days, current_text)
    return Tuning(list(tunings.values()), records, days, Rules.from_yaml_text(text, "<tuned>"), text)


def _one_collection(rule_id: str, sampler: _Sampler | None, outliers: list[str], threshold: float | None) -> str | None:
    """The collection behind the alerts, when several principals reached the threshold and all of
    it happened on one collection (a heavy collection, not a heavy principal)."""
    if sampler is None or threshold is None or rule_id not in COLLECTION_PARAMS or len(outliers) < 2:
        return None
    over = [c for c, peak in sampler.by_collection.items() if peak >= threshold]
    if len(over) == 1 and set(outliers) <= sampler.principals_of_collection[over[0]]:
        return over[0]
    return None


def _apply(rules: Rules, tuning: RuleTuning) -> None:
    changes: dict[str, Any] = {}
    settings = rules.rule(tuning.rule)
    if tuning.allowlist:
        changes["allowlist"] = sorted(set(settings.allowlist) | set(tuning.allowlist))
    if tuning.collections:
        merged_collections = {name: dict(values) for name, values in settings.collections.items()}
        for name, values in tuning.collections.items():
            merged_collections.setdefault(name, {}).update(values)
        changes["collections"] = merged_collections
    if tuning.param and tuning.suggested is not None and tuning.suggested != tuning.current:
        changes[tuning.param] = tuning.suggested
    if changes:
        rules.configure(tuning.rule, **changes)


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def _comment(text: str) -> str:
    return "\n".join(f"    # {line}" for line in printable(text).split("\\n"))


def _yaml(rules: Rules, tunings: dict[str, RuleTuning], paths: list[str], records: int, days: float,
          current_text: str | None) -> str:
    defaults = Rules()
    lines = ["# milvus-audit tune: detection rules learned from the baseline",
             f"# {printable(', '.join(paths))}",
             f"# {records:,} records over {days:.1f} day(s). Review before deploying: an allowlisted principal",
             "# is not watched by that rule at all.", ""]
    root = yaml.safe_load(current_text) if current_text else None
    if isinstance(root, dict) and "max_principals" in root:
        lines += [yaml.safe_dump({"max_principals": root["max_principals"]}).strip(), ""]
    lines.append("rules:")
    for rule_id, tuning in tunings.items():
        settings, default = rules.rule(rule_id), defaults.rule(rule_id)
        body: dict[str, Any] = {}
        if settings.enabled != default.enabled:
            body["enabled"] = settings.enabled
        if settings.severity != default.severity:
            body["severity"] = settings.severity
        if settings.cooldown_s != default.cooldown_s:
            body["cooldown_s"] = _number(settings.cooldown_s)
        for name, value in settings.params.items():
            if value != default.params.get(name):
                body[name] = _number(value)
        if settings.allowlist:
            body["allowlist"] = sorted(settings.allowlist)
        if settings.collections:
            body["collections"] = {name: {k: _number(v) for k, v in values.items()}
                                   for name, values in settings.collections.items()}
        stats = (f"baseline: p50 {tuning.p50:g}, p99 {tuning.p99:g}, max {tuning.max:g} ({tuning.samples:,} values); "
                 f"alerts on the baseline: {tuning.alerts_current} now, {tuning.alerts_suggested} tuned")
        lines.append(f"  {rule_id}:")
        lines.append(_comment(stats))
        for why in tuning.why:
            lines.append(_comment(why))
        if body:
            dumped = yaml.safe_dump(body, sort_keys=False, default_flow_style=False, allow_unicode=False, width=1000)
            lines += [f"    {line}" for line in dumped.strip().splitlines()]
        else:
            lines.append("    enabled: true")
    if isinstance(root, dict) and root.get("playbooks") is not None:
        lines += ["", "# playbooks: kept as they were in the current rules file",
                  yaml.safe_dump({"playbooks": root["playbooks"]}, sort_keys=False).strip()]
    return "\n".join(lines) + "\n"
