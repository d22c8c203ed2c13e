"""Review and tuning for people: `milvus-audit report` and `milvus-audit tune`."""
