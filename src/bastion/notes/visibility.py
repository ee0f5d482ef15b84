"""Who may see a note: its owner, whoever it is shared with, and a notes:read_all token.

Notes are only ever loaded through ``find_visible_note`` or ``find_owned_note`` (by the
dependencies in ``bastion.notes.dependencies``), and listings apply the same rule in SQL
(``visible_to``), so a route never holds a note its caller may not see.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from bastion.security.principal import Principal
from bastion.storage.tables import Note, NoteShare

READ_ALL = "notes:read_all"


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who is asking, as far as notes care."""

    user_id: uuid.UUID
    read_all: bool  # the token carries notes:read_all

    @classmethod
    def of(cls, principal: Principal) -> Viewer:
        return cls(user_id=uuid.UUID(principal.user_id), read_all=READ_ALL in principal.scopes)


def visible_to(viewer: Viewer) -> ColumnElement[bool]:
    """The notes ``viewer`` owns or that are shared with them, as a SQL condition."""
    shared_with_viewer = select(NoteShare.note_id).where(NoteShare.user_id == viewer.user_id)
    return or_(Note.owner_id == viewer.user_id, Note.id.in_(shared_with_viewer))


async def find_visible_note(
    session: AsyncSession, *, note_id: uuid.UUID, viewer: Viewer
) -> Note | None:
    """The note when ``viewer`` owns it, it is shared with them, or their token carries
    notes:read_all (an administrator may read any note by id, as they may list them all)."""
    statement = select(Note).where(Note.id == note_id)
    if not viewer.read_all:
        statement = statement.where(visible_to(viewer))
    note: Note | None = await session.scalar(statement)
    return note


async def find_owned_note(
    session: AsyncSession, *, note_id: uuid.UUID, owner_id: uuid.UUID
) -> Note | None:
    """The note when ``owner_id`` owns it, locked for the rest of the transaction so that a
    concurrent delete cannot pull it away between the check and the write."""
    note: Note | None = await session.scalar(
        select(Note).where(Note.id == note_id, Note.owner_id == owner_id).with_for_update()
    )
    return note
