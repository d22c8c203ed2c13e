"""Classifying failures: which of a fixed set of reasons a Milvus call failed for.

Milvus reports the same failure in several shapes. A wrong password at connect time
is a `MilvusException` with code 2, exactly like a server that is down; only the gRPC
error in `__cause__` tells them apart. Permission denied and mid-session auth
failures arrive as raw `grpc.RpcError`s. This module turns all of them into one
`Failure`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import grpc

from milvus_audit.exceptions import AccessBlocked, AuditUnavailable
from milvus_audit.semconv import FailureReason

AUTHENTICATION = FailureReason.AUTHENTICATION
PERMISSION_DENIED = FailureReason.PERMISSION_DENIED
NOT_FOUND = FailureReason.NOT_FOUND
INVALID_ARGUMENT = FailureReason.INVALID_ARGUMENT
UNAVAILABLE = FailureReason.UNAVAILABLE
RESOURCE_EXHAUSTED = FailureReason.RESOURCE_EXHAUSTED
TIMEOUT = FailureReason.TIMEOUT
UNIMPLEMENTED = FailureReason.UNIMPLEMENTED
SERVER_ERROR = FailureReason.SERVER_ERROR
CLIENT_ERROR = FailureReason.CLIENT_ERROR
BLOCKED = FailureReason.BLOCKED


_GRPC_REASONS: dict[grpc.StatusCode, str] = {
    grpc.StatusCode.UNAUTHENTICATED: AUTHENTICATION,
    grpc.StatusCode.PERMISSION_DENIED: PERMISSION_DENIED,
    grpc.StatusCode.NOT_FOUND: NOT_FOUND,
    grpc.StatusCode.INVALID_ARGUMENT: INVALID_ARGUMENT,
    grpc.StatusCode.OUT_OF_RANGE: INVALID_ARGUMENT,
    grpc.StatusCode.FAILED_PRECONDITION: INVALID_ARGUMENT,
    grpc.StatusCode.UNAVAILABLE: UNAVAILABLE,
    grpc.StatusCode.RESOURCE_EXHAUSTED: RESOURCE_EXHAUSTED,
    grpc.StatusCode.DEADLINE_EXCEEDED: TIMEOUT,
    grpc.StatusCode.UNIMPLEMENTED: UNIMPLEMENTED,
    grpc.StatusCode.CANCELLED: CLIENT_ERROR,
}

# Milvus server error codes (pkg/util/merr): code -> (name, reason).
_MILVUS_CODES: dict[int, tuple[str, str]] = {
    2: ("ServiceUnavailable", UNAVAILABLE),
    3: ("MemoryLimitExceeded", RESOURCE_EXHAUSTED),
    4: ("TooManyRequests", RESOURCE_EXHAUSTED),
    7: ("DiskLimitExceeded", RESOURCE_EXHAUSTED),
    8: ("RateLimit", RESOURCE_EXHAUSTED),
    9: ("QuotaExceeded", RESOURCE_EXHAUSTED),
    10: ("ServiceUnimplemented", UNIMPLEMENTED),
    12: ("ServiceResourceInsufficient", RESOURCE_EXHAUSTED),
    100: ("CollectionNotFound", NOT_FOUND),
    101: ("CollectionNotLoaded", INVALID_ARGUMENT),
    102: ("CollectionNumLimitExceeded", RESOURCE_EXHAUSTED),
    105: ("CollectionIllegalSchema", INVALID_ARGUMENT),
    200: ("PartitionNotFound", NOT_FOUND),
    201: ("PartitionNotLoaded", INVALID_ARGUMENT),
    250: ("GeneralCapacityExceeded", RESOURCE_EXHAUSTED),
    300: ("ResourceGroupNotFound", NOT_FOUND),
    400: ("ReplicaNotFound", NOT_FOUND),
    600: ("SegmentNotFound", NOT_FOUND),
    700: ("IndexNotFound", NOT_FOUND),
    701: ("IndexNotSupported", INVALID_ARGUMENT),
    800: ("DatabaseNotFound", NOT_FOUND),
    801: ("DatabaseNumLimitExceeded", RESOURCE_EXHAUSTED),
    802: ("DatabaseInvalidName", INVALID_ARGUMENT),
    1100: ("ParameterInvalid", INVALID_ARGUMENT),
    1101: ("ParameterMissing", INVALID_ARGUMENT),
    1102: ("ParameterTooLarge", INVALID_ARGUMENT),
    1400: ("PrivilegeNotAuthenticated", AUTHENTICATION),
    1401: ("PrivilegeNotPermitted", PERMISSION_DENIED),
    1600: ("AliasNotFound", NOT_FOUND),
    1700: ("FieldNotFound", NOT_FOUND),
    1800: ("NeedAuthenticate", AUTHENTICATION),
    1807: ("HTTPRateLimit", RESOURCE_EXHAUSTED),
    3000: ("OperationNotSupported", UNIMPLEMENTED),
    10001: ("Timeout", TIMEOUT),
}

# Legacy `common.ErrorCode` values (MilvusException.compatible_code).
_LEGACY_CODES: dict[int, tuple[str, str]] = {
    3: ("PermissionDenied", PERMISSION_DENIED),
    4: ("CollectionNotExists", NOT_FOUND),
    5: ("IllegalArgument", INVALID_ARGUMENT),
    24: ("OutOfMemory", RESOURCE_EXHAUSTED),
    25: ("IndexNotExist", NOT_FOUND),
    28: ("CollectionNameNotFound", NOT_FOUND),
    48: ("ForceDeny", RESOURCE_EXHAUSTED),
    49: ("RateLimit", RESOURCE_EXHAUSTED),
    52: ("InsufficientMemoryToLoad", RESOURCE_EXHAUSTED),
    53: ("MemoryQuotaExhausted", RESOURCE_EXHAUSTED),
    54: ("DiskQuotaExhausted", RESOURCE_EXHAUSTED),
}

# Message fragments, lower-case, for servers that report failures only in text.
_MESSAGE_REASONS: tuple[tuple[str, str], ...] = (
    ("unauthenticated", AUTHENTICATION),
    ("auth check failure", AUTHENTICATION),
    ("incorrect password", AUTHENTICATION),
    ("user hasn't authenticated", AUTHENTICATION),
    ("permission deny", PERMISSION_DENIED),
    ("permission denied", PERMISSION_DENIED),
    ("privilege not permitted", PERMISSION_DENIED),
    ("rate limit", RESOURCE_EXHAUSTED),
    ("quota", RESOURCE_EXHAUSTED),
    ("memory limit", RESOURCE_EXHAUSTED),
    ("not found", NOT_FOUND),
    ("not exist", NOT_FOUND),
    ("can't find", NOT_FOUND),
    ("deadline exceeded", TIMEOUT),
    ("timeout", TIMEOUT),
    ("unimplemented", UNIMPLEMENTED),
    ("invalid", INVALID_ARGUMENT),
    ("illegal", INVALID_ARGUMENT),
)

# pymilvus's own client-side exceptions (code 1, raised before any request is sent).
_CLIENT_INPUT_ERRORS = frozenset({
    "ParamError", "AutoIDException", "CannotInferSchemaException", "ClusteringKeyException",
    "DataNotMatchException", "DataTypeNotMatchException", "DataTypeNotSupportException",
    "FieldTypeException", "FieldsTypeException", "FunctionsTypeException", "PartitionKeyException",
    "PrimaryKeyException", "ConnectionConfigException",
})
_CLIENT_NOT_FOUND = frozenset({"CollectionNotExistException", "IndexNotExistException"})
_CLIENT_UNAVAILABLE = frozenset({"ConnectError", "ConnectionNotExistException", "MilvusUnavailableException"})

_PRIVILEGE = re.compile(r"\bPrivilege[A-Z][A-Za-z]+")


@dataclass(frozen=True, slots=True)
class Failure:
    reason: str
    error_type: str
    status_code: str
    message: str
    missing_privilege: str | None = None


def _grpc_code(exc: BaseException) -> grpc.StatusCode | None:
    code = getattr(exc, "code", None)
    if isinstance(exc, grpc.RpcError) and callable(code):
        try:
            value = code()
        except Exception:
            return None
        return value if isinstance(value, grpc.StatusCode) else None
    return None


def _grpc_details(exc: BaseException) -> str:
    details = getattr(exc, "details", None)
    if callable(details):
        try:
            return str(details() or "")
        except Exception:
            return ""
    return ""


def _from_message(message: str, default: str) -> str:
    lowered = message.lower()
    for fragment, reason in _MESSAGE_REASONS:
        if fragment in lowered:
            return reason
    return default


def classify(exc: BaseException) -> Failure:
    """Turn any exception a pymilvus call raised into a `Failure`."""
    from pymilvus.exceptions import MilvusException

    grpc_status = _grpc_code(exc)
    if grpc_status is not None:
        message = _grpc_details(exc)
        reason = _GRPC_REASONS.get(grpc_status, SERVER_ERROR)
        if reason == SERVER_ERROR:
            reason = _from_message(message, SERVER_ERROR)
        return Failure(reason, grpc_status.name, grpc_status.name, message,
                       _missing_privilege(message, reason))

    if isinstance(exc, MilvusException):
        message = str(exc.message or "")
        code = exc.code if isinstance(exc.code, int) else -1
        cause = exc.__cause__ or exc.__context__
        cause_status = _grpc_code(cause) if cause is not None else None
        if cause_status is not None:
            # Connect failures: code 2 both for a bad password and a dead server.
            reason = _GRPC_REASONS.get(cause_status, SERVER_ERROR)
            name = cause_status.name
        elif (name := type(exc).__name__) in _CLIENT_INPUT_ERRORS:
            reason = INVALID_ARGUMENT
        elif name in _CLIENT_NOT_FOUND:
            reason = NOT_FOUND
        elif name in _CLIENT_UNAVAILABLE:
            reason = UNAVAILABLE
        elif code in _MILVUS_CODES:
            name, reason = _MILVUS_CODES[code]
        elif exc.compatible_code in _LEGACY_CODES:
            name, reason = _LEGACY_CODES[exc.compatible_code]
        else:
            name = type(exc).__name__
            reason = _from_message(message, SERVER_ERROR if code not in (-1, 1) else CLIENT_ERROR)
            if code == 2 and reason == CLIENT_ERROR:
                reason = UNAVAILABLE
        if code == 2 and cause_status is None and "fail connecting" in message.lower():
            reason = UNAVAILABLE
        return Failure(reason, name, str(code), message, _missing_privilege(message, reason))

    if isinstance(exc, AccessBlocked):
        return Failure(BLOCKED, "AccessBlocked", "blocked", str(exc))
    if isinstance(exc, AuditUnavailable):
        return Failure(CLIENT_ERROR, "AuditUnavailable", "audit_unavailable", str(exc))
    if isinstance(exc, TimeoutError):
        return Failure(TIMEOUT, type(exc).__name__, type(exc).__name__, str(exc))
    if isinstance(exc, (TypeError, ValueError, KeyError, AttributeError)):
        return Failure(INVALID_ARGUMENT, type(exc).__name__, type(exc).__name__, str(exc))
    if isinstance(exc, ConnectionError):
        return Failure(UNAVAILABLE, type(exc).__name__, type(exc).__name__, str(exc))
    return Failure(CLIENT_ERROR, type(exc).__name__, type(exc).__name__, str(exc))


def _missing_privilege(message: str, reason: str) -> str | None:
    if reason != PERMISSION_DENIED:
        return None
    found = _PRIVILEGE.search(message)
    return found.group(0) if found else None


# -- the server's access log -----------------------------------------------------------
# `$method_status` of a successful call: 2.3 logs "OK", newer servers "Successful".
SERVER_SUCCESS_STATUSES = frozenset({"OK", "Successful", "Success"})
_GRPC_STATUS_BY_CAMEL = {code.name.replace("_", "").lower(): code for code in grpc.StatusCode}


def server_failure_reason(status: str, code: str, message: str) -> str:
    """The failure reason of a failed call as the server's access log shows it: `$method_status`
    (`GrpcUnauthenticated`, `GrpcPermissionDenied`, ... or `Failed`), `$error_code` (a Milvus
    error code, 65535 when the gRPC status says it all) and `$error_msg`."""
    if status.startswith("Grpc"):
        grpc_status = _GRPC_STATUS_BY_CAMEL.get(status[4:].lower())
        if grpc_status is not None:
            reason = _GRPC_REASONS.get(grpc_status, SERVER_ERROR)
            return _from_message(message, SERVER_ERROR) if reason == SERVER_ERROR else reason
    number = int(code) if code.isdigit() else -1
    if number in _MILVUS_CODES:
        return _MILVUS_CODES[number][1]
    return _from_message(message, SERVER_ERROR)


def missing_privilege(message: str, reason: str) -> str | None:
    """The privilege a permission denial names (`PrivilegeDropCollection`), if any."""
    return _missing_privilege(message, reason)
