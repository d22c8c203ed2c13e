"""Sigma rules (spec v2) for the built-in detections, generated from the rule modules.

Each rule module of `milvus_audit.detect.rules` carries its Sigma form next to its
parameters and streaming logic, built from the same defaults and the operation catalog,
so the SIEM and the in-process engine cannot drift apart. The rules are written into
`milvus_audit/siem/rules/` by `python -m milvus_audit.siem.sigma --write`; a test fails
when they are stale.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from milvus_audit.detect.rules.registry import RULES
from milvus_audit.detect.rules.sigmaform import LOGSOURCE, sigma_id

__all__ = ["LOGSOURCE", "RULES_DIR", "build_rules", "load_rules_text", "rule_files", "write_rules"]

RULES_DIR = Path(__file__).with_name("rules")
_id = sigma_id


def build_rules() -> list[dict[str, Any]]:
    """Every shipped Sigma rule, rule module by rule module (base rules before their correlations)."""
    return [sigma for rule in RULES for sigma in rule.sigma(rule.info.params)]


def rule_fields(rules: list[dict[str, Any]] | None = None) -> set[str]:
    """Every record field the rules read: in detections, correlation groups and conditions."""
    fields: set[str] = set()
    for rule in build_rules() if rules is None else rules:
        for block in (rule.get("detection") or {}).values():
            for item in block if isinstance(block, list) else [block]:
                if isinstance(item, dict):
                    fields.update(key.split("|")[0] for key in item)
        correlation = rule.get("correlation") or {}
        fields.update(correlation.get("group-by", []))
        if correlation.get("condition", {}).get("field"):
            fields.add(correlation["condition"]["field"])
    return fields


def rule_files() -> dict[str, str]:
    """File name -> YAML text for every rule."""
    return {f"{rule['name']}.yml": yaml.safe_dump(rule, sort_keys=False, width=120) for rule in build_rules()}


def load_rules_text() -> str:
    """The shipped rules as one multi-document YAML text (what pySigma reads)."""
    return "\n---\n".join((RULES_DIR / name).read_text() for name in sorted(rule_files()))


def write_rules(directory: Path = RULES_DIR) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in rule_files().items():
        (directory / name).write_text(text)


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        write_rules()
    else:
        print("\n---\n".join(rule_files().values()), end="")
