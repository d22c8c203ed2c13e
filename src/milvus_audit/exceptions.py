"""Exceptions milvus-audit itself raises into the application, by design.

`MilvusAuditError` is the base of the ones that are about auditing itself; `AccessBlocked`
and `AuditUnavailable` refuse a call before it reaches Milvus, `ConfigError` refuses a
configuration at construction.
"""

from __future__ import annotations


class MilvusAuditError(Exception):
    """Base of the exceptions milvus-audit raises for reasons of its own."""


class ConfigError(MilvusAuditError, ValueError):
    """A configuration mistake, reported at construction with what to change."""


class AccessBlocked(MilvusAuditError):
    """A response playbook blocked this principal; the call never reached Milvus."""

    def __init__(self, message: str, *, scope: str = "", principal: str = "", until: float = 0.0):
        super().__init__(message)
        self.scope = scope
        self.principal = principal
        self.until = until


class AuditUnavailable(MilvusAuditError):
    """Fail-closed mode: the audit record could not be written, so the call was refused."""
