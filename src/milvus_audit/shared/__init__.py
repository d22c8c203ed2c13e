"""Shared detection state and blocks across the processes of a deployment, through Redis.

`AuditConfig(shared_state="redis://...")`; see docs/deployment.md and `state.py`.
"""

from milvus_audit.shared.fleet import Fleet
from milvus_audit.shared.settings import SharedSettings, redacted, shared_settings
from milvus_audit.shared.state import SharedState

__all__ = ["Fleet", "SharedSettings", "SharedState", "redacted", "shared_settings"]
