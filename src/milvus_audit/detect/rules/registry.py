"""The built-in rules, in the order the engine runs them and `milvus-audit rules` lists them.

Adding a rule: write its module (see `base.py` and docs/detection.md), then add its class here.
"""

from __future__ import annotations

from collections.abc import Mapping

from milvus_audit.detect.rules.base import Rule, RuleInfo
from milvus_audit.detect.rules.brute_force import BruteForce
from milvus_audit.detect.rules.data_exfiltration import DataExfiltration
from milvus_audit.detect.rules.destructive_operation import DestructiveOperation
from milvus_audit.detect.rules.error_spike import ErrorSpike
from milvus_audit.detect.rules.password_spray import PasswordSpray
from milvus_audit.detect.rules.privilege_escalation import PrivilegeEscalation
from milvus_audit.detect.rules.resource_exhaustion import ResourceExhaustion
from milvus_audit.detect.rules.shadow_access import ShadowAccess
from milvus_audit.detect.rules.slow_query import SlowQuery
from milvus_audit.detect.rules.unauthorized_access import UnauthorizedAccess
from milvus_audit.detect.rules.unusual_query import UnusualQuery

RULES: tuple[type[Rule], ...] = (
    BruteForce,
    PasswordSpray,
    UnauthorizedAccess,
    ErrorSpike,
    SlowQuery,
    UnusualQuery,
    DataExfiltration,
    DestructiveOperation,
    PrivilegeEscalation,
    ResourceExhaustion,
    ShadowAccess,
)

RULE_CLASSES: Mapping[str, type[Rule]] = {rule.id: rule for rule in RULES}
BUILTIN_RULES: Mapping[str, RuleInfo] = {rule.id: rule.info for rule in RULES}
