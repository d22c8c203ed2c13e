"""The built-in detection rules: one module per rule (parameters, streaming logic, Sigma form),
the registry that lists them, and their settings (`Rules`, the YAML rules file)."""

from milvus_audit.detect.rules.base import Param, Rule, RuleInfo
from milvus_audit.detect.rules.registry import BUILTIN_RULES, RULE_CLASSES, RULES
from milvus_audit.detect.rules.settings import SEVERITIES, Rules, RulesError, RuleSettings

__all__ = ["BUILTIN_RULES", "RULES", "RULE_CLASSES", "SEVERITIES", "Param", "Rule", "RuleInfo", "RuleSettings",
           "Rules", "RulesError"]
