"""The tamper-evident audit log: security events, hash-chained so edits and deletions show."""

from bastion.audit.context import SYSTEM, AuditContext
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
    list_events,
    record_event,
    verify_chain,
)

__all__ = [
    "GENESIS_HASH",
    "SYSTEM",
    "AuditChainError",
    "AuditContext",
    "AuditEventType",
    "AuditRecord",
    "ChainVerification",
    "Outcome",
    "StoredAuditEvent",
    "chain_hash",
    "list_events",
    "record_event",
    "verify_chain",
]
