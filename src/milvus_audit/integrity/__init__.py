"""Tamper evidence: the HMAC chain and signed checkpoints (`chain`), and `verify`."""

from milvus_audit.integrity.chain import CHECKPOINT_EVENT, SIGNATURE

__all__ = ["CHECKPOINT_EVENT", "SIGNATURE"]
