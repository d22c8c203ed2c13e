"""Exceptions milvus-audit itself raises into the application, by design."""

from __future__ import annotations


class AccessBlocked(Exception):
    """A response playbook blocked this principal; the call never reached Milvus."""

    def __init__(self, message: str, *, scope: str = "", principal: str = "", until: float = 0.0):
        super().__init__(message)
        self.scope = scope
        self.principal = principal
        self.until = until


class AuditUnavailable(Exception):
    """Fail-closed mode: the audit record could not be written, so the call was refused."""
