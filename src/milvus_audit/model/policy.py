"""The audit policy: which calls are recorded, sampled or excluded (pure: no I/O but reading text).

The form is pinned (docs/policy.md); the same list works as YAML under `policy:` or as
Python dicts given to `AuditConfig(policy=[...])`:

    policy:
      - match: {category: data_read, outcome: success}
        sample: 0.01
      - match: {collection: "scratch_*"}
        action: exclude
      - match: {operation: query, collection: "pii_*"}
        drop_attributes: [db.query.text]
      - match: {}
        action: record

Rules are tried in order; the first whose `match` holds decides. No rule matching means
record. `sample` applies to successful calls only: a failure is always recorded.

Some events are never excluded, whatever the policy says (`protected_operation`,
`PROTECTED_FAILURES`): connects and authentication failures, permission denials, RBAC and
credential changes, destructive operations (drop, delete, truncate), refused and blocked
calls. Alerts, responses and the policy's own records never pass through the policy. A
rule that names such events explicitly (by operation, category or mutating, by
`outcome: failure`, or by matching everything) is rejected at load with file, line and
reason; a rule narrowed by data (collection, database, user) is accepted, and what it
matches of them is recorded anyway.

The catalog is the only truth about operations: a rule's operation, category and mutating
selectors are resolved against it once per operation (`Policy.for_operation`), so the call
path only evaluates what depends on the call's data.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import yaml

from milvus_audit import semconv
from milvus_audit.model.catalog import Action, Operation, Shape, lookup, operations
from milvus_audit.semconv import FailureReason

MATCH_KEYS = semconv.POLICY_MATCH_KEYS
OPERATION_KEYS = ("category", "operation", "mutating")  # known before the call: resolved per operation
DATA_KEYS = ("database", "collection", "user", "enduser")  # known when the call starts
RECORD, EXCLUDE, SAMPLE = "record", "exclude", "sample"
RULE_KEYS = ("match", "action", "sample", "drop_attributes")
PACKS = ("pci-dss", "soc2", "hipaa", "minimal")

# Failures recorded whatever the policy says.
PROTECTED_FAILURES = frozenset({FailureReason.AUTHENTICATION, FailureReason.PERMISSION_DENIED,
                                FailureReason.BLOCKED})
PROTECTED_ERROR_TYPES = frozenset({"AuditUnavailable", "AccessBlocked"})  # refused by a gate
_DESTRUCTIVE_VERBS = frozenset({"drop", "delete", "truncate"})
_DESTRUCTIVE_ACTIONS = frozenset({Action.DESTROY, Action.ACCOUNT_DELETE})

# Attributes a rule may never drop: who, what, where, how it ended, and the chain's own.
REQUIRED_ATTRIBUTES = frozenset({
    semconv.DB_SYSTEM_NAME, semconv.DB_OPERATION_NAME, semconv.DB_COLLECTION_NAME, semconv.DB_NAMESPACE,
    semconv.SERVER_ADDRESS, semconv.SERVER_PORT, semconv.USER_NAME, semconv.ENDUSER_ID, semconv.ERROR_TYPE,
    semconv.DB_RESPONSE_STATUS_CODE, semconv.OUTCOME, semconv.FAILURE_REASON, semconv.CATEGORY,
    semconv.MUTATING, semconv.DURATION_MS, semconv.AUTH_METHOD, semconv.AUTH_CREDENTIAL_ID,
    semconv.TARGET_USER, semconv.TARGET_ROLE, semconv.PRIVILEGE, semconv.OBJECT_TYPE, semconv.OBJECT_NAME,
    semconv.MISSING_PRIVILEGE, semconv.STREAM, semconv.SEQ, semconv.SAMPLE_RATE, "milvus_audit.chain",
    "milvus_audit.key_id",
})


class PolicyError(ValueError):
    """A policy that cannot be loaded: names the source, the line (when known) and why."""

    def __init__(self, source: str, line: int | None, reason: str) -> None:
        where = f"{source}:{line}" if line else source
        super().__init__(f"{where}: {reason}")
        self.source = source
        self.line = line
        self.reason = reason


def protected_operation(operation: Operation) -> str | None:
    """Why every call of `operation` is recorded whatever the policy says, or None."""
    if operation.action is Action.LOGON:
        return "connects are never excluded"
    if operation.category is semconv.Category.RBAC and operation.mutating:
        return "RBAC and credential changes are never excluded"
    if operation.action in _DESTRUCTIVE_ACTIONS or operation.shape is Shape.DELETE \
            or operation.name.split("_", 1)[0] in _DESTRUCTIVE_VERBS:
        return "destructive operations (drop, delete, truncate) are never excluded"
    return None


def protected_failure(reason: str | None, error_type: str | None) -> bool:
    """Whether a failure is one the policy can never exclude (authentication, denial, refusal)."""
    return reason in PROTECTED_FAILURES or error_type in PROTECTED_ERROR_TYPES


# -- matching ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Selector:
    """One `match` key: exact values and globs (`*`, `?`, `[...]`), any of which may match."""

    key: str
    values: tuple[str, ...]
    exact: frozenset[str]
    pattern: re.Pattern[str] | None

    @classmethod
    def of(cls, key: str, values: tuple[str, ...]) -> Selector:
        globs = [v for v in values if any(c in v for c in "*?[")]
        exact = frozenset(v for v in values if v not in globs)
        pattern = re.compile("|".join(fnmatch.translate(g) for g in globs)) if globs else None
        return cls(key, values, exact, pattern)

    def matches(self, value: object) -> bool:
        if value is None:
            return False
        text = value if isinstance(value, str) else str(value)
        if text in self.exact:
            return True
        return self.pattern is not None and self.pattern.match(text) is not None


@dataclass(frozen=True)
class Rule:
    """One policy rule, as loaded (with where it came from)."""

    match: Mapping[str, Any]  # key -> tuple of strings, or a bool for `mutating`
    action: str  # record | exclude | sample
    rate: float
    drop_attributes: tuple[str, ...]
    source: str = "<policy>"
    line: int | None = None
    selectors: tuple[Selector, ...] = field(default=(), compare=False, repr=False)

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}" if self.line else self.source

    def selector(self, key: str) -> Selector | None:
        for selector in self.selectors:
            if selector.key == key:
                return selector
        return None

    def matches_operation(self, operation: Operation) -> bool:
        mutating = self.match.get("mutating")
        if mutating is not None and operation.mutating is not mutating:
            return False
        for key, value in (("operation", operation.name), ("category", operation.category.value)):
            selector = self.selector(key)
            if selector is not None and not selector.matches(value):
                return False
        return True

    def outcome_matches(self, outcome: str) -> bool:
        selector = self.selector("outcome")
        return selector is None or selector.matches(outcome)

    def data_selectors(self) -> tuple[Selector, ...]:
        return tuple(s for s in self.selectors if s.key in DATA_KEYS)

    def to_data(self) -> dict[str, Any]:
        """The rule in the pinned form."""
        match = {key: (list(value) if isinstance(value, tuple) and len(value) != 1 else
                       value[0] if isinstance(value, tuple) else value)
                 for key, value in self.match.items()}
        data: dict[str, Any] = {"match": match}
        if self.action == SAMPLE:
            data["sample"] = self.rate
        elif self.action == EXCLUDE or "action" in self.match:
            data["action"] = self.action
        if self.drop_attributes:
            data["drop_attributes"] = list(self.drop_attributes)
        return data


@dataclass(frozen=True)
class Verdict:
    """What happens to a call: `record` (rate 1), `exclude`, or `sample` at `rate`; attributes to drop."""

    action: str
    rate: float = 1.0
    drop: tuple[str, ...] = ()
    rule: int | None = None  # index of the deciding rule, None: no rule matched


RECORD_ALL = Verdict(RECORD)


@dataclass(frozen=True)
class OperationPolicy:
    """The policy resolved for one operation: the rules whose operation selectors hold, in order.

    `success` and `failure` are the verdicts when no data selector is involved before the
    first data-independent rule (None: they depend on the call's data, see `verdicts`)."""

    operation: Operation
    protected: str | None
    rules: tuple[tuple[int, Rule], ...]
    success: Verdict | None
    failure: Verdict | None

    def verdicts(self, data: Mapping[str, object]) -> tuple[Verdict, Verdict]:
        """(verdict if the call succeeds, verdict if it fails) given its data (database,
        collection, user, enduser)."""
        return self.success_for(data), self.failure_for(data)

    def success_for(self, data: Mapping[str, object]) -> Verdict:
        return self.success or _first(self.rules, semconv.SUCCESS, data)

    def failure_for(self, data: Mapping[str, object]) -> Verdict:
        return self.failure or _first(self.rules, semconv.FAILURE, data)


def _verdict(index: int, rule: Rule, outcome: str) -> Verdict:
    action = rule.action
    if action == SAMPLE and outcome == semconv.FAILURE:
        action = RECORD  # failures are always recorded
    return Verdict(action, rule.rate if action == SAMPLE else 1.0, rule.drop_attributes, index)


def _first(rules: tuple[tuple[int, Rule], ...], outcome: str, data: Mapping[str, object]) -> Verdict:
    for index, rule in rules:
        if not rule.outcome_matches(outcome):
            continue
        if all(selector.matches(data.get(selector.key)) for selector in rule.data_selectors()):
            return _verdict(index, rule, outcome)
    return RECORD_ALL


def _static(rules: tuple[tuple[int, Rule], ...], outcome: str) -> Verdict | None:
    """The verdict if it does not depend on data: the first rule for this outcome has no data selector."""
    for index, rule in rules:
        if not rule.outcome_matches(outcome):
            continue
        if rule.data_selectors():
            return None
        return _verdict(index, rule, outcome)
    return RECORD_ALL


class Policy:
    """An ordered list of rules, first match wins; its hash names it in records."""

    def __init__(self, rules: Sequence[Rule] = (), source: str = "<policy>") -> None:
        self.rules = tuple(rules)
        self.source = source
        canonical = json.dumps([rule.to_data() for rule in self.rules], sort_keys=True, separators=(",", ":"))
        self.hash = hashlib.sha256(canonical.encode()).hexdigest()[:16]
        self.resolved: dict[str, OperationPolicy] = {}  # by operation name (the call path reads it directly)

    def __bool__(self) -> bool:
        return bool(self.rules)

    def __repr__(self) -> str:
        return f"<Policy {self.hash} from {self.source}: {len(self.rules)} rules>"

    def to_data(self) -> list[dict[str, Any]]:
        return [rule.to_data() for rule in self.rules]

    def for_operation(self, operation: Operation) -> OperationPolicy:
        """The policy resolved for `operation` (computed once per operation and cached)."""
        cached = self.resolved.get(operation.name)
        if cached is not None and cached.operation is operation:
            return cached
        protected = protected_operation(operation)
        rules = tuple((i, r) for i, r in enumerate(self.rules) if r.matches_operation(operation))
        if protected is not None:
            drop = _static(rules, semconv.SUCCESS)
            verdict = Verdict(RECORD, 1.0, drop.drop if drop is not None else (), None)
            resolved = OperationPolicy(operation, protected, rules, verdict, verdict)
        else:
            resolved = OperationPolicy(operation, None, rules, _static(rules, semconv.SUCCESS),
                                       _static(rules, semconv.FAILURE))
        if len(self.resolved) < 4096:
            self.resolved[operation.name] = resolved
        return resolved

    def decide_record(self, attributes: Mapping[str, Any]) -> Verdict:
        """The verdict for a recorded `milvus.audit` record (what `policy check --sample` asks).

        Never-excluded events come back as `record` whatever the rules say."""
        operation = lookup(str(attributes.get(semconv.DB_OPERATION_NAME, "")))
        if operation.summary == "Not in the catalog.":
            category = attributes.get(semconv.CATEGORY)
            try:
                operation = Operation(name=operation.name, category=semconv.Category(category),
                                      mutating=bool(attributes.get(semconv.MUTATING)))
            except ValueError:
                pass
        resolved = self.for_operation(operation)
        outcome = str(attributes.get(semconv.OUTCOME, semconv.SUCCESS))
        success, failure = resolved.verdicts(data_of(attributes))
        if outcome == semconv.FAILURE:
            if failure.action == EXCLUDE and protected_failure(attributes.get(semconv.FAILURE_REASON),
                                                               attributes.get(semconv.ERROR_TYPE)):
                return Verdict(RECORD, 1.0, failure.drop, failure.rule)
            return failure
        return success


def data_of(attributes: Mapping[str, Any]) -> dict[str, object]:
    """A record's values for the data selectors."""
    return {"database": attributes.get(semconv.DB_NAMESPACE), "collection": attributes.get(semconv.DB_COLLECTION_NAME),
            "user": attributes.get(semconv.USER_NAME), "enduser": attributes.get(semconv.ENDUSER_ID)}


# -- loading ----------------------------------------------------------------------------
class _Located:
    """A value from YAML with the line it started on (plain Python values have none)."""

    def __init__(self, value: Any, line: int | None) -> None:
        self.value = value
        self.line = line


def _from_node(node: yaml.Node) -> Any:
    """Plain values from a composed YAML node, mappings and lists as `_Located` (with lines)."""
    line = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        return _Located({k.value: _from_node(v) for k, v in node.value}, line)
    if isinstance(node, yaml.SequenceNode):
        return _Located([_from_node(item) for item in node.value], line)
    return _Located(yaml.safe_load(yaml.serialize(node)), line)


def _plain(value: Any) -> Any:
    if isinstance(value, _Located):
        value = value.value
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def _line(value: Any, default: int | None) -> int | None:
    return value.line if isinstance(value, _Located) and value.line else default


def _strings(source: str, line: int | None, key: str, value: Any) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (str, int)) or item == "":
            raise PolicyError(source, line, f"match key {key!r} takes a string or a list of strings, not {item!r}")
        out.append(str(item))
    if not out:
        raise PolicyError(source, line, f"match key {key!r}: an empty list matches nothing")
    return tuple(out)


_CATEGORIES = tuple(c.value for c in semconv.Category)


def _rule(raw: Any, source: str, index: int) -> Rule:
    line = _line(raw, None)
    where = f"rule {index + 1}"
    value = _plain(raw)
    if not isinstance(value, dict):
        raise PolicyError(source, line, f"{where}: a rule is a mapping with `match` (and `action`, `sample` or "
                                        f"`drop_attributes`), not {type(value).__name__}")
    unknown = [key for key in value if key not in RULE_KEYS]
    if unknown:
        raise PolicyError(source, line, f"{where}: unknown key {unknown[0]!r} (expected one of {', '.join(RULE_KEYS)})")
    if "match" not in value:
        raise PolicyError(source, line, f"{where}: no `match` (use `match: {{}}` to match every call)")
    match_raw = value["match"] if value["match"] is not None else {}
    match_line = _line(raw.value.get("match") if isinstance(raw, _Located) else None, line)
    if not isinstance(match_raw, dict):
        raise PolicyError(source, match_line, f"{where}: `match` is a mapping of {', '.join(MATCH_KEYS)}")
    match: dict[str, Any] = {}
    selectors = []
    for key, item in match_raw.items():
        if key not in MATCH_KEYS:
            raise PolicyError(source, match_line, f"{where}: unknown match key {key!r} (expected one of "
                                                  f"{', '.join(MATCH_KEYS)})")
        if key == "mutating":
            if not isinstance(item, bool):
                raise PolicyError(source, match_line, f"{where}: `mutating` is true or false, not {item!r}")
            match[key] = item
            continue
        values = _strings(source, match_line, key, item)
        if key == "outcome" and not set(values) <= {semconv.SUCCESS, semconv.FAILURE}:
            raise PolicyError(source, match_line, f"{where}: `outcome` is success or failure, not {item!r}")
        if key == "category":
            for each in values:
                if not any(fnmatch.fnmatchcase(c, each) for c in _CATEGORIES):
                    raise PolicyError(source, match_line, f"{where}: unknown category {each!r} (one of "
                                                          f"{', '.join(_CATEGORIES)})")
        match[key] = values
        selectors.append(Selector.of(key, values))
    if "action" in value and "sample" in value:
        raise PolicyError(source, line, f"{where}: a rule has at most one of `action` and `sample`")
    action, rate = RECORD, 1.0
    if "action" in value:
        action = value["action"]
        if action not in semconv.POLICY_ACTIONS:
            raise PolicyError(source, line, f"{where}: `action` is record or exclude, not {action!r}")
        rate = 1.0 if action == RECORD else 0.0
    elif "sample" in value:
        rate = value["sample"]
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate <= 1:
            raise PolicyError(source, line, f"{where}: `sample` is a rate, 0 < RATE <= 1, not {rate!r}")
        rate = float(rate)
        action = RECORD if rate == 1.0 else SAMPLE
    drop = value.get("drop_attributes") or []
    if isinstance(drop, str) or not isinstance(drop, list) or not all(isinstance(d, str) and d for d in drop):
        raise PolicyError(source, line, f"{where}: `drop_attributes` is a list of attribute names")
    for name in drop:
        if name in REQUIRED_ATTRIBUTES:
            raise PolicyError(source, line, f"{where}: {name!r} cannot be dropped: it says who did what, where "
                                            "and how it ended (only optional attributes can be dropped)")
    rule = Rule(match, action, rate, tuple(drop), source, line, tuple(selectors))
    if action in (EXCLUDE, SAMPLE):
        _check_protected(rule, where)
    return rule


def _check_protected(rule: Rule, where: str) -> None:
    """Refuse a rule that tries to exclude (or sample) what is never excluded."""
    verb = "exclude" if rule.action == EXCLUDE else "sample"
    outcome = rule.selector("outcome")
    if outcome is not None and outcome.matches(semconv.FAILURE):
        if rule.action == SAMPLE:
            raise PolicyError(rule.source, rule.line, f"{where}: `sample` applies to successful calls only "
                                                      "(failures are always recorded): drop `outcome: failure`")
        raise PolicyError(rule.source, rule.line, f"{where}: cannot {verb} failures: authentication failures, "
                                                  "permission denials and refused calls are never excluded "
                                                  "(match `outcome: success`, or narrow the rule by data)")
    names_operations = any(key in rule.match for key in OPERATION_KEYS)
    names_data = any(key in rule.match for key in DATA_KEYS)
    if not names_operations and not names_data:
        raise PolicyError(rule.source, rule.line, f"{where}: cannot {verb} every call: connects, RBAC changes and "
                                                  "destructive operations are never excluded (select what to "
                                                  f"{verb} by category, operation or data)")
    if names_operations:
        protected = [op for op in operations() if not op.local and rule.matches_operation(op)
                     and protected_operation(op)]
        if protected:
            op = protected[0]
            more = f" (and {len(protected) - 1} more)" if len(protected) > 1 else ""
            raise PolicyError(rule.source, rule.line,
                              f"{where}: cannot {verb} {op.name}{more}: {protected_operation(op)}")


def _rules_of(raw: Any, source: str) -> Policy:
    line = _line(raw, 1)
    value = raw.value if isinstance(raw, _Located) else raw
    if isinstance(value, dict):
        if "policy" not in value:
            raise PolicyError(source, line, "no `policy:` list in this file")
        raw = value["policy"]
        value = raw.value if isinstance(raw, _Located) else raw
        line = _line(raw, line)
    if value is None:
        return Policy((), source)
    if not isinstance(value, list):
        raise PolicyError(source, line, f"the policy is a list of rules, not {type(value).__name__}")
    return Policy([_rule(item, source, index) for index, item in enumerate(value)], source)


def parse_policy(rules: Iterable[Mapping[str, Any]] | Mapping[str, Any], source: str = "<policy>") -> Policy:
    """A policy from Python values: the list of rules, or a mapping with a `policy` list."""
    if isinstance(rules, Mapping):
        return _rules_of(dict(rules), source)
    if isinstance(rules, (str, bytes)):
        raise PolicyError(source, None, "a policy is a list of rules (or a YAML file's path)")
    return _rules_of(list(rules), source)


def parse_policy_yaml(text: str, source: str = "<string>") -> Policy:
    """A policy from YAML text: a list of rules, or a mapping whose `policy:` key holds one
    (a rules file, or a compliance pack). Errors name `source` and the line."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise PolicyError(source, mark.line + 1 if mark is not None else None,
                          f"not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if node is None:
        return Policy((), source)
    return _rules_of(_from_node(node), source)


def policy_section(text: str, source: str = "<string>") -> Policy | None:
    """The `policy:` section of a rules file, or None when it has none."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return None  # the rules loader reports it
    if not isinstance(node, yaml.MappingNode):
        return None
    for key, value in node.value:
        if key.value == "policy":
            located = _from_node(value)
            return _rules_of(_Located({"policy": located}, key.start_mark.line + 1), source)
    return None


# -- packs --------------------------------------------------------------------------------
def pack_text(name: str) -> str:
    """The YAML of a shipped compliance pack (pci-dss, soc2, hipaa, minimal)."""
    if name not in PACKS:
        raise ValueError(f"unknown policy pack {name!r}; shipped: {', '.join(PACKS)}")
    return resources.files("milvus_audit.model").joinpath("packs", f"{name}.yaml").read_text(encoding="utf-8")


def pack(name: str) -> Policy:
    return parse_policy_yaml(pack_text(name), f"pack:{name}")


def pack_requirements(name: str) -> list[dict[str, Any]]:
    """The requirements a pack maps (id, title, framework, events, fields, settings)."""
    data = yaml.safe_load(pack_text(name)) or {}
    requirements: list[dict[str, Any]] = data.get("requirements") or []
    return requirements
