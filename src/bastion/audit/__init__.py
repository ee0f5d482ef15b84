"""The tamper-evident audit log: security events, hash-chained so edits and deletions show."""

from bastion.audit.events import (
    GENESIS_HASH,
    AuditEventType,
    AuditRecord,
    Outcome,
    chain_hash,
)
from bastion.audit.service import (
    AuditChainError,
    ChainVerification,
    StoredAuditEvent,
    audit_context,
    list_events,
    record_event,
    request_record,
    verify_chain,
)

__all__ = [
    "GENESIS_HASH",
    "AuditChainError",
    "AuditEventType",
    "AuditRecord",
    "ChainVerification",
    "Outcome",
    "StoredAuditEvent",
    "audit_context",
    "chain_hash",
    "list_events",
    "record_event",
    "request_record",
    "verify_chain",
]
