"""Automated response: playbooks that notify, contain and revoke when an alert fires."""

from milvus_audit.auditing.gates import BlockEntry, BlockList
from milvus_audit.exceptions import AccessBlocked
from milvus_audit.respond.playbook import Block, Callback, Playbook, Responder, Revoke, Webhook
from milvus_audit.respond.webhook import sign, target_of, verify

__all__ = ["AccessBlocked", "Block", "BlockEntry", "BlockList", "Callback", "Playbook", "Responder", "Revoke",
           "Webhook", "sign", "target_of", "verify"]
