"""Rule settings: each built-in rule's tunable parameters, and the YAML rules file.

Every rule has `enabled`, `severity`, `cooldown_s`, an `allowlist` of principals, and
parameters of its own (thresholds, windows), declared with their defaults and validation
in the rule's module. `collections:` overrides parameters for one collection. Validation
errors name the file, the line and the bad key.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from milvus_audit.detect.rules.base import RuleInfo
from milvus_audit.detect.rules.registry import BUILTIN_RULES, RULE_CLASSES
from milvus_audit.semconv import ALERT_SEVERITIES

__all__ = ["BUILTIN_RULES", "SEVERITIES", "RuleInfo", "RuleSettings", "Rules", "RulesError"]

SEVERITIES = ALERT_SEVERITIES


class RulesError(ValueError):
    """A rules file or setting is invalid; the message names file, line and key."""


@dataclass
class RuleSettings:
    enabled: bool = True
    severity: str = "medium"
    cooldown_s: float = 300.0
    allowlist: frozenset[str] = frozenset()
    params: dict[str, float] = field(default_factory=dict)
    collections: dict[str, dict[str, float]] = field(default_factory=dict)
    _merged: dict[str | None, dict[str, float]] = field(default_factory=dict, repr=False, compare=False)

    def for_collection(self, collection: str | None) -> dict[str, float]:
        """The rule's parameters with the collection's overrides applied (cached)."""
        merged = self._merged.get(collection)
        if merged is None:
            merged = {**self.params, **self.collections.get(collection or "", {})}
            if len(self._merged) < 4096:
                self._merged[collection] = merged
        return merged

    def param(self, name: str, collection: str | None = None) -> float:
        return self.for_collection(collection)[name]


@dataclass
class Rules:
    """The detection configuration: settings for each built-in rule."""

    settings: dict[str, RuleSettings] = field(default_factory=dict)
    max_principals: int = 10_000
    source: str = "<defaults>"

    def __post_init__(self) -> None:
        for rule_id, info in BUILTIN_RULES.items():
            self.settings.setdefault(rule_id, RuleSettings(severity=info.severity, params=dict(info.params)))

    @classmethod
    def defaults(cls) -> Rules:
        return cls()

    def rule(self, rule_id: str) -> RuleSettings:
        return self.settings[rule_id]

    def configure(self, rule_id: str, **changes: Any) -> Rules:
        """Programmatic tuning: `Rules().configure("brute_force", threshold=10, cooldown_s=60)`."""
        if rule_id not in BUILTIN_RULES:
            raise RulesError(f"unknown rule {rule_id!r}; known: {', '.join(BUILTIN_RULES)}")
        _apply(self.settings[rule_id], rule_id, changes, lambda key: f"rule {rule_id!r}, key {key!r}")
        return self

    @classmethod
    def from_yaml(cls, path: str | Path) -> Rules:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise RulesError(f"{path}: cannot read rules file: {exc.strerror}") from exc
        return cls.from_yaml_text(text, str(path))

    @classmethod
    def from_yaml_text(cls, text: str, source: str = "<string>") -> Rules:
        try:
            root = yaml.compose(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = f":{mark.line + 1}" if mark is not None else ""
            raise RulesError(f"{source}{line}: not valid YAML: {getattr(exc, 'problem', exc)}") from exc
        rules = cls(source=source)
        if root is None:
            return rules
        if not isinstance(root, yaml.MappingNode):
            raise RulesError(f"{source}:{root.start_mark.line + 1}: the rules file must be a mapping")
        for key_node, value_node in root.value:
            key = key_node.value
            where = f"{source}:{key_node.start_mark.line + 1}"
            if key == "max_principals":
                rules.max_principals = int(_scalar(value_node, f"{where}: key 'max_principals'"))
            elif key == "rules":
                rules._load_rules(value_node, source)
            elif key in ("playbooks", "policy"):
                continue  # read by milvus_audit.respond and by the audit policy
            else:
                raise RulesError(f"{where}: unknown key {key!r} (expected 'rules', 'playbooks', 'policy' or "
                                 "'max_principals')")
        return rules

    def _load_rules(self, node: yaml.Node, source: str) -> None:
        if not isinstance(node, yaml.MappingNode):
            raise RulesError(f"{source}:{node.start_mark.line + 1}: 'rules' must be a mapping of rule ids")
        for key_node, value_node in node.value:
            rule_id = key_node.value
            line = key_node.start_mark.line + 1
            if rule_id not in BUILTIN_RULES:
                raise RulesError(f"{source}:{line}: unknown rule {rule_id!r}; known: {', '.join(BUILTIN_RULES)}")
            if not isinstance(value_node, yaml.MappingNode):
                raise RulesError(f"{source}:{line}: rule {rule_id!r} must be a mapping")
            changes: dict[str, Any] = {}
            lines: dict[str, int] = {}
            for setting_node, setting_value in value_node.value:
                lines[setting_node.value] = setting_node.start_mark.line + 1
                changes[setting_node.value] = yaml.safe_load(yaml.serialize(setting_value))
            _apply(self.settings[rule_id], rule_id, changes,
                   lambda key, rid=rule_id, ls=lines, at=line: f"{source}:{ls.get(key, at)}: rule {rid!r}, key {key!r}")


def _scalar(node: yaml.Node, where: str) -> Any:
    if not isinstance(node, yaml.ScalarNode):
        raise RulesError(f"{where} must be a single value")
    return yaml.safe_load(yaml.serialize(node))


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RulesError(f"{where}: expected a number, got {value!r}")
    if value < 0:
        raise RulesError(f"{where}: must not be negative, got {value!r}")
    return float(value)


def _param(rule_id: str, name: str, value: Any, where: str) -> float:
    number = _number(value, where)
    problem = RULE_CLASSES[rule_id].params[name].problem(number)
    if problem:
        raise RulesError(f"{where}: {problem}")
    return number


def _apply(settings: RuleSettings, rule_id: str, changes: Mapping[str, Any], where: Any) -> None:
    staged = copy.deepcopy(settings)
    for key, value in changes.items():
        if key == "enabled":
            if not isinstance(value, bool):
                raise RulesError(f"{where(key)}: expected true or false, got {value!r}")
            staged.enabled = value
        elif key == "severity":
            if value not in SEVERITIES:
                raise RulesError(f"{where(key)}: expected one of {', '.join(SEVERITIES)}, got {value!r}")
            staged.severity = value
        elif key == "cooldown_s":
            staged.cooldown_s = _number(value, where(key))
        elif key == "allowlist":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise RulesError(f"{where(key)}: expected a list of principal names")
            staged.allowlist = frozenset(value)
        elif key == "collections":
            if not isinstance(value, dict):
                raise RulesError(f"{where(key)}: expected a mapping of collection name to overrides")
            for collection, overrides in value.items():
                if not isinstance(overrides, dict):
                    raise RulesError(f"{where(key)}: overrides for {collection!r} must be a mapping")
                for name, number in overrides.items():
                    if name not in staged.params:
                        raise RulesError(f"{where(key)}: unknown parameter {name!r} for {collection!r}; "
                                         f"known: {', '.join(staged.params)}")
                    staged.collections.setdefault(str(collection), {})[name] = _param(rule_id, name, number,
                                                                                        where(key))
        elif key in staged.params:
            staged.params[key] = _param(rule_id, key, value, where(key))
        else:
            known = ["enabled", "severity", "cooldown_s", "allowlist", "collections", *staged.params]
            raise RulesError(f"{where(key)}: unknown key; known for {rule_id}: {', '.join(known)}")
    staged._merged = {}
    settings.__dict__.update(staged.__dict__)
