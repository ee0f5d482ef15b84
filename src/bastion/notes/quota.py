"""Per-user limits on stored notes: how many, and how many bytes.

A note's size is the UTF-8 length of what is stored: its title and its sanitized body
(``Note.size_bytes``). Shares store nothing of the note and do not count.

The check is decided inside the write's transaction, on fresh state, after serialising the
owner's writers: the owner's user row is locked (``FOR NO KEY UPDATE`` on PostgreSQL: it
excludes the same lock of a concurrent create, but not the key-share locks that other
tables' foreign-key checks take, e.g. a login inserting a session), and on SQLite every
transaction is ``BEGIN IMMEDIATE`` already, which admits one writer at a time. Two creates at
the limit therefore cannot both pass. The usage is summed rather than kept in a counter: the
sum reads only the ``(owner_id, size_bytes)`` index (at most ``max_count`` entries) and
cannot drift from the notes, whoever deletes them (a cascade from a deleted user included).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bastion.config import Settings
from bastion.errors import QuotaExceeded
from bastion.storage.tables import Note, User


@dataclass(frozen=True, slots=True)
class NoteQuota:
    """``BASTION_NOTES_MAX_COUNT`` and ``BASTION_NOTES_MAX_BYTES``, per user."""

    max_count: int
    max_bytes: int

    @classmethod
    def of(cls, settings: Settings) -> NoteQuota:
        return cls(max_count=settings.notes_max_count, max_bytes=settings.notes_max_bytes)


def stored_size(title: str, body: str) -> int:
    """The bytes a note counts for: UTF-8 title + UTF-8 (sanitized) body."""
    return len(title.encode()) + len(body.encode())


_LOCK_OWNER = (
    select(User.id).where(User.id == bindparam("owner_id")).with_for_update(key_share=True)
)
_USAGE = select(func.count(), func.coalesce(func.sum(Note.size_bytes), 0)).where(
    Note.owner_id == bindparam("owner_id")
)


async def _usage(session: AsyncSession, owner_id: uuid.UUID) -> tuple[int, int]:
    """Locks the owner's writers out, then counts the owner's notes and their bytes (two
    prebuilt Core statements on the unit of work's connection: every note write runs
    them)."""
    connection = await session.connection()
    await connection.execute(_LOCK_OWNER, {"owner_id": owner_id})
    count, used = (await connection.execute(_USAGE, {"owner_id": owner_id})).one()
    return int(count), int(used)


def _too_many_bytes(quota: NoteQuota, used: int, needed: int) -> QuotaExceeded:
    return QuotaExceeded(
        f"Your notes may take at most {quota.max_bytes} bytes (UTF-8 titles and bodies); "
        f"{used} are in use and this needs {needed} more. Nothing was stored."
    )


async def check_new_note(
    session: AsyncSession, *, owner_id: uuid.UUID, quota: NoteQuota, size: int
) -> None:
    """Raises ``QuotaExceeded`` (409) unless one more note of ``size`` bytes fits."""
    count, used = await _usage(session, owner_id)
    if count + 1 > quota.max_count:
        raise QuotaExceeded(
            f"You may store at most {quota.max_count} notes; delete one to add another. "
            "Nothing was stored."
        )
    if used + size > quota.max_bytes:
        raise _too_many_bytes(quota, used, size)


async def check_growth(
    session: AsyncSession, *, owner_id: uuid.UUID, quota: NoteQuota, old_size: int, new_size: int
) -> None:
    """Raises ``QuotaExceeded`` (409) if a note growing from ``old_size`` to ``new_size``
    does not fit. A note that does not grow is always allowed, so a user over a lowered
    limit can still shrink their notes."""
    if new_size <= old_size:
        return
    _, used = await _usage(session, owner_id)
    if used - old_size + new_size > quota.max_bytes:
        raise _too_many_bytes(quota, used, new_size - old_size)
