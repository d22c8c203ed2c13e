"""milvus-audit: who did what to your vector data, recorded as OpenTelemetry audit records.

A drop-in, audited `MilvusClient` and `AsyncMilvusClient`: every connection,
authentication, query, data change and admin call becomes one log record
(`event_name="milvus.audit"`), one span and metrics, exported over OTLP.
"""

from milvus_audit import detect, respond
from milvus_audit._version import __version__
from milvus_audit.audit import AuditEvent, internal_error_count
from milvus_audit.background import flush
from milvus_audit.client import AsyncMilvusClient, MilvusClient, instrument
from milvus_audit.config import AuditConfig
from milvus_audit.context import enduser
from milvus_audit.exceptions import AccessBlocked, AuditUnavailable
from milvus_audit.instrumentor import MilvusAuditInstrumentor
from milvus_audit.pipeline import AuditPipeline, configure

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
]
