"""SIEM integration: Sigma rules and conversion to SIEM queries (`milvus-audit sigma ...`)."""
