"""Appending to, verifying and reading the hash-chained audit log.

``record_event`` writes inside the caller's transaction, so a change and its audit event
commit or roll back together. Appends are serialised by locking the single chain-head row
(``SELECT ... FOR UPDATE`` on PostgreSQL; on SQLite every write transaction already holds the
database's write lock from ``BEGIN IMMEDIATE``). The lock is held until the caller commits, so
call ``record_event`` as the last write of a unit of work: it keeps the lock short and every
transaction takes its row locks before the head's, in the same order, so none deadlock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict
from sqlalchemy import Row, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bastion.audit.events import (
    GENESIS_HASH,
    AuditEventType,
    AuditRecord,
    as_utc,
    chain_hash,
)
from bastion.storage.tables import AuditChainHead, AuditEvent

HEAD_ID = 1  # the one row of audit_chain_head, seeded by migration 0003
VERIFY_BATCH = 1000

# The fields of an ``AuditRecord``, which are also columns of ``audit_events``.
RECORD_FIELDS = (
    "occurred_at",
    "type",
    "outcome",
    "actor_id",
    "subject_id",
    "client_ip",
    "request_id",
    "details",
)
_EVENT_COLUMNS = (
    AuditEvent.seq,
    *(getattr(AuditEvent, name) for name in RECORD_FIELDS),
    AuditEvent.prev_hash,
    AuditEvent.hash,
)


class AuditChainError(Exception):
    """The chain cannot be appended to: its head row is missing (run ``bastion migrate``)."""


@dataclass(frozen=True, slots=True)
class ChainVerification:
    ok: bool
    checked: int  # events verified intact (before the break, when there is one)
    broken_seq: int | None = None
    reason: str | None = None


class AuditEventFields(BaseModel):
    """An event as stored, without its chain hashes: what the admin API shows. Type and
    outcome stay strings so a damaged row can still be read."""

    model_config = ConfigDict(frozen=True, from_attributes=True)

    seq: int
    occurred_at: datetime
    type: str
    outcome: str
    actor_id: str | None
    subject_id: str | None
    client_ip: str | None
    request_id: str | None
    details: dict[str, Any]


class StoredAuditEvent(AuditEventFields):
    """An event as stored, with the hashes that chain it."""

    prev_hash: str
    hash: str


async def record_event(session: AsyncSession, record: AuditRecord) -> int:
    """Appends ``record`` to the chain within the caller's transaction; returns its seq."""
    locked_head = select(AuditChainHead.last_seq, AuditChainHead.last_hash).where(
        AuditChainHead.id == HEAD_ID
    )
    head = (await session.execute(locked_head.with_for_update())).one_or_none()
    if head is None:
        raise AuditChainError("the audit chain head is missing; run `bastion migrate`")
    seq: int = head.last_seq + 1
    digest = chain_hash(head.last_hash, seq, record)
    await session.execute(
        insert(AuditEvent).values(
            seq=seq,
            **{name: getattr(record, name) for name in RECORD_FIELDS},
            prev_hash=head.last_hash,
            hash=digest,
        )
    )
    await session.execute(
        update(AuditChainHead)
        .where(AuditChainHead.id == HEAD_ID)
        .values(last_seq=seq, last_hash=digest)
        .execution_options(synchronize_session=False)
    )
    return seq


async def _use_snapshot(session: AsyncSession) -> None:
    """On PostgreSQL, one snapshot for the whole walk: under the default READ COMMITTED an
    append committed between two batches would look like a break. SQLite transactions are
    serialised already. Only effective as the first use of the session's transaction."""
    if session.get_bind().dialect.name == "postgresql":
        await session.connection(
            execution_options={"isolation_level": "REPEATABLE READ", "postgresql_readonly": True}
        )


def _record_of(row: Row[Any]) -> AuditRecord:
    return AuditRecord(**{name: getattr(row, name) for name in RECORD_FIELDS})


def _break_in(row: Row[Any], expected_seq: int, prev_hash: str) -> tuple[int, str] | None:
    """Why ``row`` does not continue the chain at ``expected_seq``, or None when it does."""
    if row.seq > expected_seq:
        return expected_seq, f"event {expected_seq} is missing (deleted)"
    if row.seq < expected_seq:
        return row.seq, "sequence number below 1 (inserted outside the chain)"
    if row.prev_hash != prev_hash:
        return row.seq, (
            f"prev_hash does not match event {row.seq - 1} "
            "(an event before it was removed, reordered or rewritten)"
        )
    try:
        record = _record_of(row)
    except (TypeError, ValueError):
        return row.seq, "stored fields are not a valid event (edited)"
    if chain_hash(prev_hash, row.seq, record) != row.hash:
        return row.seq, "hash does not match the event's contents (edited)"
    return None


def _break_at_end(
    head: Row[int, str] | None, last_seq: int, last_hash: str
) -> tuple[int, str] | None:
    if head is None:
        return last_seq + 1, "the chain head is missing, so the end of the chain is unknown"
    if head.last_seq > last_seq:
        return last_seq + 1, (
            f"event {last_seq + 1} is missing: the chain head records {head.last_seq} events "
            "(truncated)"
        )
    if head.last_seq < last_seq:
        return head.last_seq + 1, "event is not recorded in the chain head (appended outside)"
    if head.last_hash != last_hash:
        return last_seq, "hash does not match the chain head (last event replaced)"
    return None


async def verify_chain(
    session: AsyncSession, *, batch_size: int = VERIFY_BATCH
) -> ChainVerification:
    """Walks every event in seq order, ``batch_size`` at a time, recomputing the chain.

    Run it in a transaction of its own (on PostgreSQL it asks for a read-only REPEATABLE READ
    snapshot, which must be the transaction's first use). Reports the first broken event.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be positive")
    await _use_snapshot(session)
    head = (
        await session.execute(
            select(AuditChainHead.last_seq, AuditChainHead.last_hash).where(
                AuditChainHead.id == HEAD_ID
            )
        )
    ).one_or_none()
    checked = 0
    expected_seq = 1
    prev_hash = GENESIS_HASH
    last_seen: int | None = None
    while True:
        query = select(*_EVENT_COLUMNS).order_by(AuditEvent.seq).limit(batch_size)
        if last_seen is not None:
            query = query.where(AuditEvent.seq > last_seen)
        rows: Sequence[Row[Any]] = (await session.execute(query)).all()
        for row in rows:
            broken = _break_in(row, expected_seq, prev_hash)
            if broken is not None:
                return ChainVerification(False, checked, *broken)
            checked += 1
            expected_seq += 1
            prev_hash = row.hash
        if len(rows) < batch_size:
            break
        last_seen = rows[-1].seq
    broken = _break_at_end(head, expected_seq - 1, prev_hash)
    if broken is not None:
        broken_seq, reason = broken
        return ChainVerification(False, min(checked, max(broken_seq - 1, 0)), broken_seq, reason)
    return ChainVerification(True, checked)


async def list_events(
    session: AsyncSession,
    *,
    type: AuditEventType | None = None,
    user_id: str | None = None,
    since: datetime | None = None,
    limit: int,
    before_seq: int | None = None,
) -> list[StoredAuditEvent]:
    """Events newest first; ``user_id`` matches the actor or the subject; ``before_seq`` is
    the keyset cursor (the seq of the last event of the previous page)."""
    if limit < 1:
        raise ValueError("limit must be positive")
    query = select(*_EVENT_COLUMNS).order_by(AuditEvent.seq.desc()).limit(limit)
    if type is not None:
        query = query.where(AuditEvent.type == AuditEventType(type).value)
    if user_id is not None:
        query = query.where(or_(AuditEvent.actor_id == user_id, AuditEvent.subject_id == user_id))
    if since is not None:
        # SQLite compares the stored UTC wall-clock text: the bound value must be UTC too.
        query = query.where(AuditEvent.occurred_at >= as_utc(since))
    if before_seq is not None:
        query = query.where(AuditEvent.seq < before_seq)
    rows = (await session.execute(query)).all()
    return [
        StoredAuditEvent(
            **{
                **row._asdict(),
                "occurred_at": as_utc(row.occurred_at),
                "details": dict(row.details),
            }
        )
        for row in rows
    ]
