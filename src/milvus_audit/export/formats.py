"""Audit records in the schemas SIEMs understand: ECS, OCSF and CEF.

Each function takes one record in the core JSONL format (a dict, as parsed from one
line) and returns the same event in another schema. Which OCSF class and activity a
call maps to comes from the operation catalog (`Category`, `Action`), not from method
names.

ECS and OCSF lines carry the whole core, so that `milvus-audit verify` can authenticate
every field of them: the timestamp, the event name and the raw attributes (ECS
`@timestamp`, `event.code`, `milvus`; OCSF `metadata.original_time`,
`metadata.log_name`, `unmapped`), and the OpenTelemetry envelope as written in the core
format (`severity_text`, `trace_id`, `span_id`, `resource`) under `otel` (ECS: a
top-level object; OCSF: `unmapped.otel`, since OCSF admits unknown members only in
`unmapped`; no attribute is named `otel`). Every other field is derived from these by
the functions below, and verify re-derives it.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any

from milvus_audit._version import __version__
from milvus_audit.export.jsonl import parse_rfc3339
from milvus_audit.model.catalog import Action, Category, Operation, Shape, lookup

OCSF_VERSION = "1.5.0"
PRODUCT = {"name": "milvus-audit", "vendor_name": "milvus-audit", "version": __version__}
_SEVERITY_ID = {"low": 2, "medium": 3, "high": 4, "critical": 5}
_SEVERITY_TEXT_ID = {"INFO": 1, "WARN": 3, "ERROR": 4, "FATAL": 6}
_CEF_SEVERITY = {"INFO": 3, "WARN": 6, "ERROR": 8, "FATAL": 10}

# OCSF classes.
AUTHENTICATION, ACCOUNT_CHANGE, USER_ACCESS = 3002, 3001, 3005
API_ACTIVITY, DATASTORE_ACTIVITY, DETECTION_FINDING = 6003, 6005, 2004
_CATEGORY_OF_CLASS = {3002: 3, 3001: 3, 3005: 3, 6003: 6, 6005: 6, 2004: 2}
_ACCOUNT_ACTIVITY = {Action.ACCOUNT_CREATE: 1, Action.PASSWORD_CHANGE: 3, Action.ACCOUNT_DELETE: 6}
_PRIVILEGE_ACTIVITY = {Action.ROLE_GRANT: 1, Action.PRIVILEGE_GRANT: 1, Action.ROLE_REVOKE: 2,
                       Action.PRIVILEGE_REVOKE: 2}


def _attributes(record: Mapping[str, Any]) -> Mapping[str, Any]:
    return record.get("attributes") or {}


ENVELOPE = "otel"  # ECS: a top-level object; OCSF: a member of `unmapped`, next to the attributes


def envelope(record: Mapping[str, Any]) -> dict[str, Any]:
    """The core fields ECS and OCSF have no faithful place for, verbatim (ECS `otel`, OCSF `unmapped.otel`)."""
    return {"severity_text": record.get("severity_text") or "", "trace_id": record.get("trace_id") or "",
            "span_id": record.get("span_id") or "", "resource": dict(record.get("resource") or {})}


def _operation(record: Mapping[str, Any]) -> Operation:
    return lookup(str(_attributes(record).get("db.operation.name", "")))


# -- ECS ------------------------------------------------------------------------------
def _ecs_category(record: Mapping[str, Any], operation: Operation) -> tuple[list[str], list[str]]:
    event_name = record.get("event_name")
    if event_name == "milvus.alert":
        return ["intrusion_detection"], ["indicator"]
    if operation.action is Action.LOGON:
        return ["authentication"], ["start"]
    if operation.category is Category.RBAC:
        if operation.action in (Action.ACCOUNT_CREATE,):
            return ["iam"], ["user", "creation"]
        if operation.action is Action.ACCOUNT_DELETE:
            return ["iam"], ["user", "deletion"]
        if operation.action is Action.CREATE:  # roles and privilege groups
            return ["iam"], ["group", "creation"]
        if operation.action in (Action.ROLE_GRANT, Action.ROLE_REVOKE, Action.PRIVILEGE_GRANT,
                                Action.PRIVILEGE_REVOKE, Action.PASSWORD_CHANGE):
            return ["iam"], ["user", "change"]
        return ["iam"], ["info"]
    if operation.action is Action.DESTROY:
        return ["database"], ["deletion"]
    if operation.category is Category.DATA_WRITE:
        return ["database"], ["deletion" if operation.shape is Shape.DELETE else "change"]
    if operation.mutating:
        return ["database", "configuration"], ["change"]
    return ["database"], ["access"]


def to_ecs(record: Mapping[str, Any]) -> dict[str, Any]:
    """Elastic Common Schema: `event.*`, `user.*`, `destination.*`, with the raw attributes under `milvus`."""
    attributes = _attributes(record)
    operation = _operation(record)
    category, kinds = _ecs_category(record, operation)
    event: dict[str, Any] = {
        "kind": "alert" if record.get("event_name") == "milvus.alert" else "event",
        "category": category, "type": kinds,
        "action": attributes.get("db.operation.name") or attributes.get("milvus_audit.alert.rule")
        or record.get("event_name"),
        "dataset": "milvus.audit", "module": "milvus", "provider": "milvus-audit",
        "code": record.get("event_name"),
    }
    outcome = attributes.get("milvus_audit.outcome")
    if outcome:
        event["outcome"] = outcome
    if attributes.get("milvus_audit.failure_reason"):
        event["reason"] = attributes["milvus_audit.failure_reason"]
    duration = attributes.get("milvus_audit.duration_ms")
    if isinstance(duration, (int, float)):
        event["duration"] = int(duration * 1_000_000)
    if "milvus_audit.seq" in attributes:
        event["sequence"] = attributes["milvus_audit.seq"]
    if "milvus_audit.chain" in attributes:
        event["hash"] = attributes["milvus_audit.chain"]
    if "milvus_audit.alert.severity" in attributes:
        event["severity"] = _SEVERITY_ID.get(attributes["milvus_audit.alert.severity"], 0)
    out: dict[str, Any] = {"@timestamp": record.get("timestamp"), "event": event, "ecs": {"version": "8.11.0"},
                           "log": {"level": (record.get("severity_text") or "").lower()}}
    if attributes.get("user.name"):
        out["user"] = {"name": attributes["user.name"]}
    target = {k: v for k, v in (("name", attributes.get("milvus_audit.target.user")),
                                ("roles", attributes.get("milvus_audit.target.role"))) if v}
    if target:
        out.setdefault("user", {})["target"] = target
    if attributes.get("enduser.id"):
        out.setdefault("user", {})["effective"] = {"id": attributes["enduser.id"]}
    if attributes.get("server.address"):
        out["destination"] = {"address": attributes["server.address"], "port": attributes.get("server.port")}
        out["server"] = dict(out["destination"])
    if attributes.get("error.type"):
        out["error"] = {"type": attributes["error.type"], "code": attributes.get("db.response.status_code")}
        if attributes.get("milvus_audit.error.message"):
            out["error"]["message"] = attributes["milvus_audit.error.message"]
    if record.get("trace_id"):
        out["trace"] = {"id": record["trace_id"]}
        out["span"] = {"id": record.get("span_id")}
    if attributes.get("milvus_audit.alert.rule"):
        out["rule"] = {"id": attributes["milvus_audit.alert.rule"], "name": attributes["milvus_audit.alert.rule"],
                       "description": attributes.get("milvus_audit.alert.summary")}
        out["threat"] = {"framework": "MITRE ATT&CK",
                         "technique": {"id": list(attributes.get("milvus_audit.alert.attack") or [])}}
    resource = record.get("resource") or {}
    if resource.get("service.name"):
        out["service"] = {"name": resource["service.name"]}
    if resource.get("host.name"):  # where the record was made (the application; `ingest` for server records)
        out["host"] = {"name": resource["host.name"]}
    if attributes.get("client.address"):  # a server record: the address the server saw the call from
        peer = {"address": attributes["client.address"], "port": attributes.get("client.port")}
        out["client"] = peer
        out["source"] = dict(peer)
    elif resource.get("host.name"):  # the audited application is the source of the Milvus call
        out["source"] = {"address": resource["host.name"], "domain": resource["host.name"]}
    out["milvus"] = dict(attributes)
    out[ENVELOPE] = envelope(record)
    return out


# -- OCSF -----------------------------------------------------------------------------
def _ocsf_class(record: Mapping[str, Any], operation: Operation) -> tuple[int, int]:
    """(class_uid, activity_id) for a record."""
    if record.get("event_name") == "milvus.alert":
        return DETECTION_FINDING, 1
    if operation.action is Action.LOGON:
        return AUTHENTICATION, 1
    if operation.action is Action.LOGOFF:
        return AUTHENTICATION, 2
    if operation.action in _ACCOUNT_ACTIVITY:
        return ACCOUNT_CHANGE, _ACCOUNT_ACTIVITY[operation.action]
    if operation.action in _PRIVILEGE_ACTIVITY:
        return USER_ACCESS, _PRIVILEGE_ACTIVITY[operation.action]
    if operation.category is Category.DATA_READ:
        return DATASTORE_ACTIVITY, 4 if operation.shape in (Shape.SEARCH, Shape.HYBRID_SEARCH, Shape.QUERY,
                                                             Shape.ITERATOR) else 1
    if operation.category is Category.DATA_WRITE:
        return DATASTORE_ACTIVITY, 7 if operation.shape is Shape.DELETE or operation.action is Action.DESTROY else 5
    if operation.action is Action.DESTROY:
        return API_ACTIVITY, 4
    if operation.mutating:
        return API_ACTIVITY, 1 if operation.action is Action.CREATE else 3
    return API_ACTIVITY, 2


def _endpoint(address: str, port: Any) -> dict[str, Any]:
    """An OCSF network endpoint: `ip` when the address is one, else `hostname`."""
    try:
        ipaddress.ip_address(address)
        endpoint: dict[str, Any] = {"ip": address}
    except ValueError:
        endpoint = {"hostname": address}
    if isinstance(port, int):
        endpoint["port"] = port
    return endpoint


def to_ocsf(record: Mapping[str, Any]) -> dict[str, Any]:
    """Open Cybersecurity Schema Framework 1.5.0: Authentication, Account Change, User Access
    Management, Datastore Activity, API Activity or Detection Finding."""
    attributes = _attributes(record)
    operation = _operation(record)
    class_uid, activity_id = _ocsf_class(record, operation)
    failed = attributes.get("milvus_audit.outcome") == "failure"
    severity_id = _SEVERITY_ID.get(str(attributes.get("milvus_audit.alert.severity")), 0) or \
        _SEVERITY_TEXT_ID.get(str(record.get("severity_text")), 1)
    event: dict[str, Any] = {
        "class_uid": class_uid, "category_uid": _CATEGORY_OF_CLASS[class_uid], "activity_id": activity_id,
        "type_uid": class_uid * 100 + activity_id, "severity_id": severity_id,
        "time": parse_rfc3339(str(record["timestamp"])) // 1_000_000,
        "metadata": {"version": OCSF_VERSION, "product": PRODUCT,
                     "log_name": str(record.get("event_name") or ""), "original_time": record.get("timestamp")},
        "unmapped": {**attributes, ENVELOPE: envelope(record)},  # OCSF admits nothing unknown elsewhere
    }
    if "milvus_audit.outcome" in attributes:
        event["status_id"] = 2 if failed else 1
        event["status"] = "Failure" if failed else "Success"
    if failed:
        event["status_code"] = str(attributes.get("db.response.status_code", ""))
        event["status_detail"] = str(attributes.get("milvus_audit.failure_reason", ""))
    if "milvus_audit.seq" in attributes:
        event["metadata"]["sequence"] = attributes["milvus_audit.seq"]
    if record.get("trace_id"):
        event["metadata"]["correlation_uid"] = record["trace_id"]
    if "milvus_audit.duration_ms" in attributes:
        event["duration"] = int(attributes["milvus_audit.duration_ms"])
    actor_user = {"name": str(attributes.get("user.name") or attributes.get("milvus_audit.auth.credential_id")
                              or "anonymous")}
    actor: dict[str, Any] = {"user": actor_user}
    if attributes.get("enduser.id"):
        actor["app_name"] = str((record.get("resource") or {}).get("service.name") or "")
        actor["user"] = {"name": actor_user["name"], "uid_alt": str(attributes["enduser.id"])}
    service = {"name": "milvus"}
    endpoint = {"hostname": str(attributes.get("server.address") or "embedded"),
                "port": attributes.get("server.port")} if attributes.get("server.address") else {"name": "embedded"}
    src: dict[str, Any] = {"name": str((record.get("resource") or {}).get("service.name") or "milvus-audit-client")}
    if attributes.get("client.address"):  # a server record: the address the server saw the call from
        src = _endpoint(str(attributes["client.address"]), attributes.get("client.port"))

    if class_uid == AUTHENTICATION:
        event.update(user=actor_user, service=service, dst_endpoint=endpoint, src_endpoint=src,
                     is_cleartext=not attributes.get("milvus_audit.tls", False),
                     auth_protocol=str(attributes.get("milvus_audit.auth.method", "")))
    elif class_uid == ACCOUNT_CHANGE:
        event.update(user={"name": str(attributes.get("milvus_audit.target.user", ""))}, actor=actor)
    elif class_uid == USER_ACCESS:
        privilege = attributes.get("milvus_audit.privilege") or attributes.get("milvus_audit.target.role") or ""
        privileges = [str(p) for p in privilege] if isinstance(privilege, (list, tuple)) else [str(privilege)]
        target = attributes.get("milvus_audit.target.user") or attributes.get("milvus_audit.target.role") or ""
        event.update(user={"name": str(target)}, privileges=privileges, actor=actor)
    elif class_uid == DATASTORE_ACTIVITY:
        event.update(actor=actor, src_endpoint=src, dst_endpoint=endpoint,
                     database={"name": str(attributes.get("db.namespace") or "default"), "type_id": 99,
                               "type": "Vector"},
                     table={"name": str(attributes.get("db.collection.name") or "")})
        if attributes.get("db.query.text"):
            event["query_info"] = {"query_string": str(attributes["db.query.text"])}
    elif class_uid == API_ACTIVITY:
        event.update(actor=actor, src_endpoint=src, api={"operation": str(attributes.get("db.operation.name", "")),
                                                         "service": service})
        if attributes.get("db.collection.name"):
            event["resources"] = [{"name": str(attributes["db.collection.name"]), "type": "collection"}]
    elif class_uid == DETECTION_FINDING:
        event.update(finding_info={"uid": str(attributes.get("milvus_audit.alert.id", "")),
                                   "title": str(attributes.get("milvus_audit.alert.rule", "")),
                                   "desc": str(attributes.get("milvus_audit.alert.summary", "")),
                                   "attacks": [{"technique": {"uid": str(t)}}
                                               for t in attributes.get("milvus_audit.alert.attack") or []]},
                     status_id=1)
    return event


# -- CEF ------------------------------------------------------------------------------
_CEF_HEADER_ESCAPE = re.compile(r"([|\\])")
_CEF_VALUE_ESCAPE = re.compile(r"([=\\])")


def _header(value: Any) -> str:
    return _CEF_HEADER_ESCAPE.sub(r"\\\1", str(value)).replace("\r", " ").replace("\n", " ")


def _value(value: Any) -> str:
    text = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
    return _CEF_VALUE_ESCAPE.sub(r"\\\1", text).replace("\r", "\\r").replace("\n", "\\n")


def to_cef(record: Mapping[str, Any]) -> str:
    """ArcSight Common Event Format, one line; header and extension values escaped so that
    hostile values cannot add fields or lines."""
    attributes = _attributes(record)
    name = attributes.get("db.operation.name") or attributes.get("milvus_audit.alert.rule") or record.get("event_name")
    signature = f"{record.get('event_name')}:{name}"
    severity = _SEVERITY_ID.get(str(attributes.get("milvus_audit.alert.severity")), 0) * 2 or \
        _CEF_SEVERITY.get(str(record.get("severity_text")), 3)
    extension: dict[str, Any] = {
        "rt": parse_rfc3339(str(record["timestamp"])) // 1_000_000,
        "act": name,
        "outcome": attributes.get("milvus_audit.outcome"),
        "suser": attributes.get("user.name"),
        "duser": attributes.get("milvus_audit.target.user"),
        "dhost": attributes.get("server.address"),
        "dpt": attributes.get("server.port"),
        "reason": attributes.get("milvus_audit.failure_reason"),
        "msg": attributes.get("milvus_audit.alert.summary") or attributes.get("milvus_audit.error.message"),
    }
    for slot, (label, attribute) in enumerate((("collection", "db.collection.name"), ("database", "db.namespace"),
                                               ("enduser", "enduser.id"), ("category", "milvus_audit.category"),
                                               ("filter", "db.query.text")), start=1):
        if attributes.get(attribute) is not None:
            extension[f"cs{slot}Label"] = label
            extension[f"cs{slot}"] = attributes[attribute]
    if attributes.get("milvus_audit.seq") is not None:
        extension.update(cn1Label="seq", cn1=attributes["milvus_audit.seq"])
    fields = " ".join(f"{key}={_value(value)}" for key, value in extension.items() if value is not None)
    return (f"CEF:0|milvus-audit|milvus-audit|{_header(__version__)}|{_header(signature)}|{_header(name)}|"
            f"{severity}|{fields}")


FORMATTERS = {"otel": None, "ecs": to_ecs, "ocsf": to_ocsf, "cef": to_cef}
