"""Sigma rules (spec v2) for the built-in detections, generated from the catalog and the rule defaults.

The rules are written into `milvus_audit/siem/rules/` by
`python -m milvus_audit.siem.sigma --write`; a test fails when they are stale. Which
operations are destructive or grants comes from the operation catalog; thresholds and
windows come from `milvus_audit.detect.rules.BUILTIN_RULES`, so the SIEM and the
in-process engine cannot drift apart.
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path
from typing import Any

import yaml

from milvus_audit.detect.rules import BUILTIN_RULES
from milvus_audit.model.catalog import Action, Shape, operations

RULES_DIR = Path(__file__).with_name("rules")
LOGSOURCE = {"product": "milvus", "service": "audit"}
_NAMESPACE = uuid.UUID("6f1c2d6e-4d7a-4f0a-9a55-0d6b9a1e3c10")
_LEVEL = {"low": "low", "medium": "medium", "high": "high", "critical": "critical"}


def _id(name: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, name))


def _tags(rule_id: str) -> list[str]:
    return [f"attack.{t.lower()}" for t in BUILTIN_RULES[rule_id].attack]


def _ops(action: Action) -> list[str]:
    return sorted(op.name for op in operations() if op.action is action)


def _shape_ops(shape: Shape) -> list[str]:
    return sorted(op.name for op in operations() if op.shape is shape)


def _seconds(value: float) -> str:
    value = int(value)
    return f"{value // 60}m" if value % 60 == 0 and value >= 60 else f"{value}s"


def _event_rule(name: str, rule_id: str, title: str, description: str, detection: dict[str, Any],
                falsepositives: list[str], level: str | None = None) -> dict[str, Any]:
    return {
        "title": title, "id": _id(name), "name": name, "status": "experimental", "description": description,
        "references": ["https://github.com/milvus-audit/milvus-audit/blob/main/docs/detection.md"],
        "author": "milvus-audit", "date": "2026-11-27", "tags": _tags(rule_id), "logsource": dict(LOGSOURCE),
        "detection": detection, "falsepositives": falsepositives,
        "level": level or _LEVEL[BUILTIN_RULES[rule_id].severity],
        "custom_attributes": {"milvus_audit_rule": rule_id},
    }


def _correlation(name: str, rule_id: str, title: str, kind: str, base: str, group_by: list[str],
                 timespan_s: float, gte: float, field: str | None = None,
                 falsepositives: list[str] | None = None) -> dict[str, Any]:
    correlation: dict[str, Any] = {"type": kind, "rules": [base], "generate": True, "group-by": group_by,
                                   "timespan": _seconds(timespan_s), "condition": {"gte": int(gte)}}
    if field:
        correlation["condition"]["field"] = field
    return {
        "title": title, "id": _id(name), "name": name, "status": "experimental", "author": "milvus-audit",
        "date": "2026-11-27", "tags": _tags(rule_id), "correlation": correlation,
        "falsepositives": falsepositives or ["see the base rule"], "level": _LEVEL[BUILTIN_RULES[rule_id].severity],
        "custom_attributes": {"milvus_audit_rule": rule_id},
    }


def build_rules() -> list[dict[str, Any]]:
    """Every shipped Sigma rule, base rules before the correlations that use them."""
    p = {rule_id: info.params for rule_id, info in BUILTIN_RULES.items()}
    audit = {"event_name": "milvus.audit"}
    rules = [
        _event_rule("milvus_authentication_failure", "brute_force", "Milvus authentication failure",
                    "A connection or call to Milvus was rejected for bad or missing credentials.",
                    {"selection": {**audit, "milvus_audit.failure_reason": "authentication"},
                     "condition": "selection"},
                    ["A service deployed with a stale password", "Password rotation in progress"], level="low"),
        _correlation("milvus_brute_force", "brute_force", "Milvus brute force against one account", "event_count",
                     "milvus_authentication_failure", ["user.name"], p["brute_force"]["window_s"],
                     p["brute_force"]["threshold"]),
        _correlation("milvus_password_spray", "password_spray", "Milvus password spray from one client",
                     "value_count", "milvus_authentication_failure", ["host.name"],
                     p["password_spray"]["window_s"], p["password_spray"]["distinct_users"], field="user.name"),
        _event_rule("milvus_permission_denied", "unauthorized_access", "Milvus permission denied",
                    "The server refused a call for a missing privilege.",
                    {"selection": {**audit, "milvus_audit.failure_reason": "permission_denied"},
                     "condition": "selection"},
                    ["An application probing its own privileges at start-up"], level="low"),
        _correlation("milvus_unauthorized_access", "unauthorized_access", "Milvus repeated permission denials",
                     "event_count", "milvus_permission_denied", ["user.name"],
                     p["unauthorized_access"]["window_s"], p["unauthorized_access"]["threshold"]),
        _event_rule("milvus_rbac_permission_denied", "unauthorized_access", "Milvus RBAC call refused",
                    "A principal tried to change users, roles or privileges without the right to.",
                    {"selection": {**audit, "milvus_audit.failure_reason": "permission_denied",
                                   "milvus_audit.category": "rbac"}, "condition": "selection"},
                    ["An administrator working under the wrong account"], level="high"),
        _event_rule("milvus_failed_call", "error_spike", "Milvus call failed",
                    "Any failed Milvus call (base of the error spike correlation).",
                    {"selection": {**audit, "milvus_audit.outcome": "failure"}, "condition": "selection"},
                    ["Deployments and outages"], level="informational"),
        _correlation("milvus_error_spike", "error_spike", "Milvus error spike", "event_count", "milvus_failed_call",
                     ["service.name"], p["error_spike"]["window_s"], p["error_spike"]["min_failures"],
                     falsepositives=["A Milvus outage; the in-process rule also compares with a learned baseline"]),
        _event_rule("milvus_slow_read", "slow_query", "Milvus slow read",
                    "A read slower than the absolute threshold.",
                    {"selection": {**audit, "milvus_audit.category": "data_read",
                                   "milvus_audit.duration_ms|gte": int(p["slow_query"]["absolute_ms"])},
                     "condition": "selection"},
                    ["Cold collections after a restart", "Large batch analytics"]),
        _event_rule("milvus_unusual_query_shape", "unusual_query", "Milvus unusually large query",
                    "A read asking for far more results or query vectors than applications usually do "
                    "(the absolute floors of the in-process rule; baselines are per principal there).",
                    {"limit": {**audit, "db.milvus.limit|gte": int(p["unusual_query"]["limit_floor"])},
                     "nq": {**audit, "db.milvus.nq|gte": int(p["unusual_query"]["nq_floor"])},
                     "rows": {**audit, "db.response.returned_rows|gte": int(p["unusual_query"]["rows_floor"])},
                     "condition": "limit or nq or rows"},
                    ["Exports and re-indexing jobs"]),
        _event_rule("milvus_large_read", "data_exfiltration", "Milvus large read",
                    "A read or iterator page returning many rows (base of the exfiltration correlation).",
                    {"selection": {**audit, "milvus_audit.category": "data_read",
                                   "db.response.returned_rows|gte": 1000}, "condition": "selection"},
                    ["Backups and migrations"], level="low"),
        _correlation("milvus_data_exfiltration", "data_exfiltration", "Milvus bulk read by one principal",
                     "event_count", "milvus_large_read", ["user.name"], p["data_exfiltration"]["window_s"],
                     max(1, p["data_exfiltration"]["rows"] // 1000),
                     falsepositives=["Backup jobs (allowlist them)"]),
        _event_rule("milvus_resource_exhausted", "resource_exhaustion", "Milvus resource exhausted",
                    "The server refused a call for rate limits, quotas or memory.",
                    {"selection": {**audit, "milvus_audit.failure_reason": "resource_exhausted"},
                     "condition": "selection"},
                    ["Load tests", "Undersized clusters during traffic peaks"], level="low"),
        _correlation("milvus_resource_exhaustion", "resource_exhaustion", "Milvus repeated resource exhaustion",
                     "event_count", "milvus_resource_exhausted", ["user.name"],
                     p["resource_exhaustion"]["window_s"], p["resource_exhaustion"]["threshold"]),
        _event_rule("milvus_destructive_operation", "destructive_operation", "Milvus destructive operation",
                    "A collection, partition or database was dropped, or a collection truncated.",
                    {"selection": {**audit, "milvus_audit.outcome": "success",
                                   "db.operation.name": _ops(Action.DESTROY)}, "condition": "selection"},
                    ["Planned schema migrations", "Test environments"]),
        _event_rule("milvus_mass_delete", "destructive_operation", "Milvus mass delete",
                    "A delete removed many rows.",
                    {"selection": {**audit, "milvus_audit.outcome": "success",
                                   "db.operation.name": _shape_ops(Shape.DELETE),
                                   "milvus_audit.affected_rows|gt": int(p["destructive_operation"]["delete_rows"])},
                     "condition": "selection"},
                    ["Retention jobs"]),
        _event_rule("milvus_admin_role_granted", "privilege_escalation", "Milvus admin role granted",
                    "A user was given the built-in admin role.",
                    {"selection": {**audit, "milvus_audit.outcome": "success",
                                   "db.operation.name": _ops(Action.ROLE_GRANT), "milvus_audit.target.role": "admin"},
                     "condition": "selection"},
                    ["Onboarding of a new administrator"]),
        _event_rule("milvus_global_privilege_granted", "privilege_escalation", "Milvus global privilege granted",
                    "A role was granted all privileges, or a privilege on every object.",
                    {"selection": {**audit, "milvus_audit.outcome": "success",
                                   "db.operation.name": _ops(Action.PRIVILEGE_GRANT)},
                     "wildcard": [{"milvus_audit.object_name": "\\*"},  # a literal *, not a Sigma wildcard
                                  {"milvus_audit.privilege": ["\\*", "All", "PrivilegeAll"]}],
                     "condition": "selection and wildcard"},
                    ["Initial cluster set-up"]),
    ]
    return rules


def rule_files() -> dict[str, str]:
    """File name -> YAML text for every rule."""
    return {f"{rule['name']}.yml": yaml.safe_dump(rule, sort_keys=False, width=120) for rule in build_rules()}


def load_rules_text() -> str:
    """The shipped rules as one multi-document YAML text (what pySigma reads)."""
    return "\n---\n".join((RULES_DIR / name).read_text() for name in sorted(rule_files()))


def write_rules(directory: Path = RULES_DIR) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in rule_files().items():
        (directory / name).write_text(text)


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        write_rules()
    else:
        print("\n---\n".join(rule_files().values()), end="")
