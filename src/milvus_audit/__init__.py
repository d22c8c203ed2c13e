"""milvus-audit: who did what to your vector data, recorded as OpenTelemetry audit records.

A drop-in, audited `MilvusClient` and `AsyncMilvusClient`: every connection,
authentication, query, data change and admin call becomes one log record
(`event_name="milvus.audit"`), one span and metrics, exported over OTLP.
"""

from milvus_audit import detect, respond
from milvus_audit._version import __version__
from milvus_audit.auditing.policy import set_policy
from milvus_audit.config import AuditConfig
from milvus_audit.exceptions import AccessBlocked, AuditUnavailable
from milvus_audit.instrumentation.client import AsyncMilvusClient, MilvusClient, instrument
from milvus_audit.instrumentation.instrumentor import MilvusAuditInstrumentor
from milvus_audit.model.record import AuditEvent
from milvus_audit.otel.setup import AuditPipeline, configure
from milvus_audit.runtime.context import enduser
from milvus_audit.runtime.diagnostics import internal_error_count
from milvus_audit.runtime.worker import flush

__all__ = [
    "AccessBlocked",
    "AsyncMilvusClient",
    "AuditConfig",
    "AuditEvent",
    "AuditPipeline",
    "AuditUnavailable",
    "MilvusAuditInstrumentor",
    "MilvusClient",
    "__version__",
    "configure",
    "detect",
    "enduser",
    "flush",
    "instrument",
    "internal_error_count",
    "respond",
    "set_policy",
]
