"""In-process detection: the built-in security rules, their settings, and alerts."""

from milvus_audit.detect.engine import Alert, DetectionEngine, Observation
from milvus_audit.detect.rules import BUILTIN_RULES, Rules, RulesError, RuleSettings

__all__ = ["BUILTIN_RULES", "Alert", "DetectionEngine", "Observation", "RuleSettings", "Rules", "RulesError"]
