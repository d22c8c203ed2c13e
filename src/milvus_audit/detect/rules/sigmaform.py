"""Building blocks of the rules' Sigma forms (Sigma spec v2), as plain dicts.

Each rule module's `sigma()` builds its Sigma rules with these; `milvus_audit.siem.sigma`
writes them to `siem/rules/*.yml`. Only data here: converting them needs pySigma, which
lives in `milvus_audit.siem`.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from milvus_audit.detect.rules.base import RuleInfo
from milvus_audit.model.catalog import Action, Shape, operations
from milvus_audit.semconv import AUDIT_EVENT, SERVER_ACCESS_EVENT, SOURCE, SOURCE_SERVER

LOGSOURCE = {"product": "milvus", "service": "audit"}
EVENT_NAME = "event_name"  # the record's event name, as the collector ships it
AUDIT: Mapping[str, str] = {EVENT_NAME: AUDIT_EVENT}  # the audited clients' records
# The server's access log (`milvus-audit ingest`): the server-access variants of the rules select
# these. Sigma cannot join them to client records by trace id, so a variant counts every client
# of the server, audited or not (docs/siem.md).
SERVER: Mapping[str, str] = {EVENT_NAME: SERVER_ACCESS_EVENT, SOURCE: SOURCE_SERVER}
_NAMESPACE = uuid.UUID("6f1c2d6e-4d7a-4f0a-9a55-0d6b9a1e3c10")
_DATE = "2026-11-27"
_REFERENCES = ["https://github.com/milvus-audit/milvus-audit/blob/main/docs/detection.md"]


def sigma_id(name: str) -> str:
    """A Sigma rule's id: stable, derived from its name."""
    return str(uuid.uuid5(_NAMESPACE, name))


def tags(info: RuleInfo) -> list[str]:
    return [f"attack.{t.lower()}" for t in info.attack]


def ops(action: Action) -> list[str]:
    """The catalog's operations with this action (what is destructive, what grants)."""
    return sorted(op.name for op in operations() if op.action is action)


def shape_ops(shape: Shape) -> list[str]:
    return sorted(op.name for op in operations() if op.shape is shape)


def seconds(value: float) -> str:
    value = int(value)
    return f"{value // 60}m" if value % 60 == 0 and value >= 60 else f"{value}s"


def event_rule(info: RuleInfo, name: str, title: str, description: str, detection: dict[str, Any],
               falsepositives: list[str], level: str | None = None) -> dict[str, Any]:
    """A single-event Sigma rule for the rule `info`."""
    return {
        "title": title, "id": sigma_id(name), "name": name, "status": "experimental", "description": description,
        "references": list(_REFERENCES), "author": "milvus-audit", "date": _DATE, "tags": tags(info),
        "logsource": dict(LOGSOURCE), "detection": detection, "falsepositives": falsepositives,
        "level": level or info.severity, "custom_attributes": {"milvus_audit_rule": info.id},
    }


def correlation(info: RuleInfo, name: str, title: str, kind: str, base: str, group_by: list[str],
                timespan_s: float, gte: float, field: str | None = None,
                falsepositives: list[str] | None = None) -> dict[str, Any]:
    """A Sigma correlation over the base rule `base`: `kind` (event_count, value_count,
    value_sum) of `field` within `timespan_s` per `group_by`, at least `gte`."""
    condition: dict[str, Any] = {"gte": int(gte)}
    if field:
        condition["field"] = field
    body: dict[str, Any] = {"type": kind, "rules": [base], "generate": True, "group-by": group_by,
                            "timespan": seconds(timespan_s), "condition": condition}
    return {
        "title": title, "id": sigma_id(name), "name": name, "status": "experimental", "author": "milvus-audit",
        "date": _DATE, "tags": tags(info), "correlation": body,
        "falsepositives": falsepositives or ["see the base rule"], "level": info.severity,
        "custom_attributes": {"milvus_audit_rule": info.id},
    }
