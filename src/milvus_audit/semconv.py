"""Every name milvus-audit exports: event names, attribute names, outcomes, failure reasons, severities.

These are contracts read by collectors, SIEM rules and tests outside this repository;
change none of them. Where an OpenTelemetry semantic convention exists (`db.*`,
`server.*`, `user.*`, `enduser.*`, `error.type`) it is used as is; the rest live under
`milvus_audit.*`.
"""

from __future__ import annotations

import enum
from typing import Final

# -- event names (`LogRecord.event_name`) ----------------------------------------------
AUDIT_EVENT: Final = "milvus.audit"
ALERT_EVENT: Final = "milvus.alert"
RESPONSE_EVENT: Final = "milvus.response"
CHECKPOINT_EVENT: Final = "milvus.audit.checkpoint"
GAP_EVENT: Final = "milvus.audit.gap"
SERVER_ACCESS_EVENT: Final = "milvus.server.access"  # one line of the Milvus proxy's access log
DEGRADED_EVENT: Final = "milvus.audit.degraded"  # shared detection state lost, or restored
POLICY_EVENT: Final = "milvus.audit.policy"  # the audit policy changed (set_policy, file reload, SIGHUP)
RETENTION_EVENT: Final = "milvus.audit.retention"  # a rotated JSONL file deleted by jsonl_retention_days
LIFECYCLE_EVENT: Final = "milvus.audit.lifecycle"  # auditing started or stopped in this process
EVENT_PREFIX: Final = "milvus."

# -- severities (`severity_text`) -----------------------------------------------------
INFO: Final = "INFO"
WARN: Final = "WARN"
ERROR: Final = "ERROR"
FATAL: Final = "FATAL"
ALERT_SEVERITIES: Final = ("low", "medium", "high", "critical")
ALERT_SEVERITY_TEXT: Final = {"low": INFO, "medium": WARN, "high": ERROR, "critical": FATAL}

# -- outcomes (`milvus_audit.outcome`) ------------------------------------------------
SUCCESS: Final = "success"
FAILURE: Final = "failure"


class Category(str, enum.Enum):
    """`milvus_audit.category`: what kind of call an operation is."""

    CONNECTION = "connection"
    DATA_READ = "data_read"
    DATA_WRITE = "data_write"
    SCHEMA = "schema"
    DATABASE = "database"
    RBAC = "rbac"
    RESOURCE = "resource"
    MAINTENANCE = "maintenance"
    OTHER = "other"


class FailureReason:
    """`milvus_audit.failure_reason`: the fixed set of reasons a call fails for."""

    AUTHENTICATION: Final = "authentication"
    PERMISSION_DENIED: Final = "permission_denied"
    NOT_FOUND: Final = "not_found"
    INVALID_ARGUMENT: Final = "invalid_argument"
    UNAVAILABLE: Final = "unavailable"
    RESOURCE_EXHAUSTED: Final = "resource_exhausted"
    TIMEOUT: Final = "timeout"
    UNIMPLEMENTED: Final = "unimplemented"
    SERVER_ERROR: Final = "server_error"
    CLIENT_ERROR: Final = "client_error"
    BLOCKED: Final = "blocked"


# -- attributes: OpenTelemetry semantic conventions ---------------------------------------
DB_SYSTEM_NAME: Final = "db.system.name"
DB_OPERATION_NAME: Final = "db.operation.name"
DB_COLLECTION_NAME: Final = "db.collection.name"
DB_NAMESPACE: Final = "db.namespace"
DB_QUERY_TEXT: Final = "db.query.text"
DB_RESPONSE_STATUS_CODE: Final = "db.response.status_code"
DB_RESPONSE_RETURNED_ROWS: Final = "db.response.returned_rows"
DB_OPERATION_BATCH_SIZE: Final = "db.operation.batch.size"
SERVER_ADDRESS: Final = "server.address"
SERVER_PORT: Final = "server.port"
CLIENT_ADDRESS: Final = "client.address"
HOST_NAME: Final = "host.name"
USER_NAME: Final = "user.name"
ENDUSER_ID: Final = "enduser.id"
ERROR_TYPE: Final = "error.type"
CODE_FUNCTION_NAME: Final = "code.function.name"
CLIENT_PORT: Final = "client.port"
RPC_METHOD: Final = "rpc.method"

# -- attributes: Milvus request shape (db.milvus.*) ------------------------------------
DB_MILVUS_NQ: Final = "db.milvus.nq"
DB_MILVUS_LIMIT: Final = "db.milvus.limit"
DB_MILVUS_IDS: Final = "db.milvus.ids"
DB_MILVUS_PARTITION_NAMES: Final = "db.milvus.partition_names"
DB_MILVUS_OUTPUT_FIELDS: Final = "db.milvus.output_fields"

# -- attributes: milvus_audit.* ---------------------------------------------------------
OUTCOME: Final = "milvus_audit.outcome"
FAILURE_REASON: Final = "milvus_audit.failure_reason"
CATEGORY: Final = "milvus_audit.category"
MUTATING: Final = "milvus_audit.mutating"
DURATION_MS: Final = "milvus_audit.duration_ms"
ERROR_MESSAGE: Final = "milvus_audit.error.message"
MISSING_PRIVILEGE: Final = "milvus_audit.missing_privilege"
AFFECTED_ROWS: Final = "milvus_audit.affected_rows"
API: Final = "milvus_audit.api"
TLS: Final = "milvus_audit.tls"
AUTH_METHOD: Final = "milvus_audit.auth.method"
AUTH_CREDENTIAL_ID: Final = "milvus_audit.auth.credential_id"
TARGET_USER: Final = "milvus_audit.target.user"
TARGET_ROLE: Final = "milvus_audit.target.role"
PRIVILEGE: Final = "milvus_audit.privilege"
OBJECT_TYPE: Final = "milvus_audit.object_type"
OBJECT_NAME: Final = "milvus_audit.object_name"
ITERATOR_PAGE: Final = "milvus_audit.iterator.page"
SESSION_CLUSTER_ID: Final = "milvus_audit.session.cluster_id"
CLIENT_REQUEST_ID: Final = "milvus_audit.client_request_id"
STREAM: Final = "milvus_audit.stream"
SEQ: Final = "milvus_audit.seq"

# -- attributes of server access records (`milvus.server.access`, milvus_audit.serverlog) ----
SOURCE: Final = "milvus_audit.source"  # "server" on records parsed from the server's access log
SOURCE_SERVER: Final = "server"
SERVER_STATUS: Final = "milvus_audit.server.status"  # the access log's $method_status, raw
SDK: Final = "milvus_audit.sdk"  # the access log's $sdk_version
SERVER_RECORD_ID: Final = "milvus_audit.server.record_id"  # stable per line: duplicates share it

ALERT_ID: Final = "milvus_audit.alert.id"
ALERT_RULE: Final = "milvus_audit.alert.rule"
ALERT_SEVERITY: Final = "milvus_audit.alert.severity"
ALERT_SUMMARY: Final = "milvus_audit.alert.summary"
ALERT_PRINCIPAL: Final = "milvus_audit.alert.principal"
ALERT_COUNT: Final = "milvus_audit.alert.count"
ALERT_THRESHOLD: Final = "milvus_audit.alert.threshold"
ALERT_WINDOW_S: Final = "milvus_audit.alert.window_s"
ALERT_ATTACK: Final = "milvus_audit.alert.attack"
ALERT_EVENTS: Final = "milvus_audit.alert.events"
ALERT_SUPPRESSED: Final = "milvus_audit.alert.suppressed"

RESPONSE_ACTION: Final = "milvus_audit.response.action"
RESPONSE_TARGET: Final = "milvus_audit.response.target"
RESPONSE_OUTCOME: Final = "milvus_audit.response.outcome"
RESPONSE_DRY_RUN: Final = "milvus_audit.response.dry_run"
RESPONSE_ERROR: Final = "milvus_audit.response.error"
RESPONSE_SOURCE: Final = "milvus_audit.response.source"  # "shared_state": an entry read from Redis
REJECTED: Final = "rejected"  # response outcome: an unsigned or forged shared block entry, ignored
ALERT_PROCESSES: Final = "milvus_audit.alert.processes"  # with shared state: processes that saw the incident

# -- shared detection state (`AuditConfig(shared_state=...)`, milvus_audit.shared) ----------
DEGRADED_COMPONENT: Final = "milvus_audit.degraded.component"  # "shared_state"
DEGRADED_STATE: Final = "milvus_audit.degraded.state"  # "lost" or "restored"
DEGRADED_REASON: Final = "milvus_audit.degraded.reason"  # the error's type, never its text (it may hold the URL)
DEGRADED_DURATION_S: Final = "milvus_audit.degraded.duration_s"  # on "restored": how long sharing was lost
SHARED_STATE_UP: Final = "milvus_audit.shared_state.up"  # gauge: 1 while Redis answers, else 0
REDIS_URL_ENV: Final = "MILVUS_AUDIT_REDIS_URL"
REDIS_PREFIX_ENV: Final = "MILVUS_AUDIT_REDIS_PREFIX"
BLOCK_KEY_ENV: Final = "MILVUS_AUDIT_BLOCK_KEY"

# Who a call is attributed to, most specific first (detection's principal).
PRINCIPAL_KEYS: Final = (ENDUSER_ID, USER_NAME, AUTH_CREDENTIAL_ID)

# -- audit policy (`AuditConfig(policy=...)`, docs/policy.md) --------------------------------
POLICY_FILE_ENV: Final = "MILVUS_AUDIT_POLICY_FILE"
SAMPLE_RATE: Final = "milvus_audit.sample_rate"  # on sampled records: weight each as 1 / rate
POLICY_HASH: Final = "milvus_audit.policy.hash"
POLICY_PREVIOUS_HASH: Final = "milvus_audit.policy.previous_hash"
POLICY_SOURCE: Final = "milvus_audit.policy.source"
POLICY_RULES: Final = "milvus_audit.policy.rules"  # how many rules
POLICY_CHANGED_BY: Final = "milvus_audit.policy.changed_by"
POLICY_TRIGGER: Final = "milvus_audit.policy.trigger"  # set_policy | file_change | sighup
POLICY_OUTCOME: Final = "milvus_audit.policy.outcome"  # applied | rejected
POLICY_ERROR: Final = "milvus_audit.policy.error"
POLICY_ACTIONS: Final = ("record", "exclude")
POLICY_MATCH_KEYS: Final = ("category", "operation", "database", "collection", "user", "enduser", "outcome",
                            "mutating")

# -- lifecycle records (`milvus.audit.lifecycle`) --------------------------------------------
LIFECYCLE_STATE: Final = "milvus_audit.lifecycle.state"  # start | stop
LIFECYCLE_REASON: Final = "milvus_audit.lifecycle.reason"  # configured | shutdown | uninstrument
LIFECYCLE_VERSION: Final = "milvus_audit.lifecycle.version"
LIFECYCLE_SINKS: Final = "milvus_audit.lifecycle.sinks"
LIFECYCLE_PID: Final = "milvus_audit.lifecycle.pid"

# -- retention records (`milvus.audit.retention`) --------------------------------------------
RETENTION_FILE: Final = "milvus_audit.retention.file"
RETENTION_REASON: Final = "milvus_audit.retention.reason"  # age | backups
RETENTION_STREAMS: Final = "milvus_audit.retention.streams"  # per stream in the file, in order:
RETENTION_SEQ_FIRST: Final = "milvus_audit.retention.seq_first"
RETENTION_SEQ_LAST: Final = "milvus_audit.retention.seq_last"
RETENTION_FINAL_CHAIN: Final = "milvus_audit.retention.final_chain"  # each stream's last chain value in it
RETENTION_RECORDS: Final = "milvus_audit.retention.records"
RETENTION_MTIME: Final = "milvus_audit.retention.mtime"
