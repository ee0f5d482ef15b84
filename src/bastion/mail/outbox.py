"""The outbox table's statements: queue a mail in the caller's transaction, and the leased
claim, confirm and release that let senders in any number of processes share it.

A mail is queued in the same transaction as the change that causes it (a sign-up, a reset
request): if that transaction rolls back, no mail exists; if it commits, the mail will be
sent, whatever the mail server is doing. Every step after the queueing is a conditional
``UPDATE`` whose ``WHERE`` is the whole rule (due, not sent, lease free or expired; or: this
claim still holds the lease), so two senders can never both hold a mail, on SQLite's single
writer or under PostgreSQL's row locks alike.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bastion.mail.message import build_message, new_message_id, serialize
from bastion.security.encryption import EncryptionKeys
from bastion.storage.tables import OutboxMail

# The widths of the table's columns: a value that does not fit is cut, never refused.
LAST_ERROR_LENGTH = 200


def content_context(message_id: str) -> str:
    """The associated data of a queued message's encryption: its ciphertext opens only as
    the content of this very mail."""
    return f"mail:{message_id}"


async def enqueue_mail(
    session: AsyncSession,
    *,
    keys: EncryptionKeys,
    sender: str,
    recipient: str,
    subject: str,
    text: str,
    now: datetime,
) -> str:
    """Adds one OutboxMail row in the caller's transaction; returns its Message-ID.

    The message is built and serialized now (``ValueError`` for a header with a line break
    or an address that is not one address) and stored encrypted: it holds single-use links,
    which must never lie in the database in clear. Call ``MailSender.wake()`` after the
    transaction commits, so the mail leaves at once rather than at the next poll."""
    message_id = new_message_id(sender)
    message = build_message(
        sender=sender,
        recipient=recipient,
        subject=subject,
        text=text,
        message_id=message_id,
        date=now,
    )
    session.add(
        OutboxMail(
            id=uuid.uuid4(),
            message_id=message_id,
            recipient=recipient,
            content=keys.encrypt(serialize(message), context=content_context(message_id)),
            created_at=now,
            attempts=0,
            next_attempt_at=now,
        )
    )
    return message_id


def _claimable(now: datetime) -> Any:
    return (
        OutboxMail.sent_at.is_(None),
        OutboxMail.next_attempt_at <= now,
        or_(OutboxMail.lease_expires_at.is_(None), OutboxMail.lease_expires_at < now),
    )


async def due_mail_ids(session: AsyncSession, *, now: datetime, limit: int) -> list[uuid.UUID]:
    """Up to ``limit`` mails that may be claimed now, the longest waiting first. Only
    candidates: another sender may claim any of them first."""
    statement = (
        select(OutboxMail.id)
        .where(*_claimable(now))
        .order_by(OutboxMail.next_attempt_at)
        .limit(limit)
    )
    return list((await session.scalars(statement)).all())


@dataclass(frozen=True, slots=True)
class Claim:
    """One mail held by one sender until ``expires_at`` (``lease`` is the token written in
    ``lease_owner``, fresh for every claim)."""

    row_id: uuid.UUID
    lease: str
    expires_at: datetime
    message_id: str
    recipient: str
    content: str | None
    attempts: int


async def claim_mail(
    session: AsyncSession, row_id: uuid.UUID, *, lease: str, now: datetime, duration: timedelta
) -> Claim | None:
    """Takes the lease on one mail if it is still due and free; None when another sender
    has it, or it was sent meanwhile."""
    expires_at = now + duration
    taken = await session.execute(
        update(OutboxMail)
        .where(OutboxMail.id == row_id, *_claimable(now))
        .values(lease_owner=lease, lease_expires_at=expires_at)
        .execution_options(synchronize_session=False)
    )
    if taken.rowcount != 1:  # type: ignore[attr-defined]
        return None
    row = (
        await session.execute(
            select(
                OutboxMail.message_id,
                OutboxMail.recipient,
                OutboxMail.content,
                OutboxMail.attempts,
            ).where(OutboxMail.id == row_id)
        )
    ).one()
    return Claim(
        row_id=row_id,
        lease=lease,
        expires_at=expires_at,
        message_id=row.message_id,
        recipient=row.recipient,
        content=row.content,
        attempts=row.attempts,
    )


async def mark_sent(session: AsyncSession, claim: Claim, *, now: datetime) -> bool:
    """Records the delivery and drops the message (its links are no one's business once
    sent). False when the lease was lost: another sender took the mail over (this one
    outlived its lease), and may send it again: at least once, never silently lost."""
    done = await session.execute(
        update(OutboxMail)
        .where(
            OutboxMail.id == claim.row_id,
            OutboxMail.lease_owner == claim.lease,
            OutboxMail.sent_at.is_(None),
        )
        .values(
            sent_at=now,
            content=None,
            lease_owner=None,
            lease_expires_at=None,
            last_error=None,
        )
        .execution_options(synchronize_session=False)
    )
    return bool(done.rowcount == 1)  # type: ignore[attr-defined]


async def mark_failed(
    session: AsyncSession, claim: Claim, *, error: str, next_attempt_at: datetime
) -> bool:
    """Counts a failed attempt, schedules the next and frees the mail; False when the lease
    was lost meanwhile (the other sender's outcome stands)."""
    done = await session.execute(
        update(OutboxMail)
        .where(OutboxMail.id == claim.row_id, OutboxMail.lease_owner == claim.lease)
        .values(
            attempts=OutboxMail.attempts + 1,
            next_attempt_at=next_attempt_at,
            last_error=error[:LAST_ERROR_LENGTH],
            lease_owner=None,
            lease_expires_at=None,
        )
        .execution_options(synchronize_session=False)
    )
    return bool(done.rowcount == 1)  # type: ignore[attr-defined]


async def purge_sent(session: AsyncSession, *, before: datetime) -> int:
    """Deletes mails delivered before ``before`` (their content is gone already; the row
    only told when it left); how many."""
    done = await session.execute(
        delete(OutboxMail)
        .where(OutboxMail.sent_at.is_not(None), OutboxMail.sent_at < before)
        .execution_options(synchronize_session=False)
    )
    return int(done.rowcount)  # type: ignore[attr-defined]


async def pending_count(session: AsyncSession) -> int:
    """How many mails are not delivered yet (for checks and tests)."""
    statement = select(func.count()).select_from(OutboxMail).where(OutboxMail.sent_at.is_(None))
    return int((await session.scalar(statement)) or 0)
