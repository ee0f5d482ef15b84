"""What a caller sees of a note (``NotePublic``), and of whom it is shared with."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from bastion.notes.schemas import NotePublic
from bastion.notes.visibility import Viewer
from bastion.storage import Database
from bastion.storage.tables import NoteShare, User

Sharee = tuple[uuid.UUID, str]
"""A user a note is shared with: (user id, username)."""


class NoteFields(Protocol):
    """The columns ``NotePublic`` shows: an ORM ``Note`` or a Core row of them."""

    @property
    def id(self) -> uuid.UUID: ...
    @property
    def owner_id(self) -> uuid.UUID: ...
    @property
    def title(self) -> str: ...
    @property
    def body(self) -> str: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def updated_at(self) -> datetime: ...


def view_of(note: NoteFields, sharees: Iterable[Sharee], viewer: Viewer) -> NotePublic:
    """The public form of one note, given every user it is shared with.

    The owner (and a notes:read_all administrator) sees every user a note is shared with;
    anyone else sees only their own name: a note shared with you does not tell you who
    else it was shared with. Names are sorted here, not by ORDER BY: a PostgreSQL locale
    collation would ignore "." and "_" and order differently from SQLite.
    """
    sees_all = viewer.read_all or note.owner_id == viewer.user_id
    return NotePublic(
        id=note.id,
        owner_id=note.owner_id,
        title=note.title,
        body=note.body,
        shared_with=sorted(
            username for user_id, username in sharees if sees_all or user_id == viewer.user_id
        ),
        created_at=note.created_at,
        updated_at=note.updated_at,
    )


_SHARES_OF = (
    select(NoteShare.note_id, User.id, User.username)
    .join(User, User.id == NoteShare.user_id)
    .where(NoteShare.note_id.in_(bindparam("note_ids", expanding=True)))
)
"""The users the notes bound as ``note_ids`` are shared with: one prebuilt Core query for a
whole page (never one per note)."""


def _views(
    notes: Sequence[NoteFields], shares: Iterable[Any], viewer: Viewer
) -> list[NotePublic]:
    sharees: dict[uuid.UUID, list[Sharee]] = defaultdict(list)
    for row in shares:
        sharees[row.note_id].append((row.id, row.username))
    return [view_of(note, sharees[note.id], viewer) for note in notes]


async def note_views(
    session: AsyncSession, *, notes: Sequence[NoteFields], viewer: Viewer
) -> list[NotePublic]:
    """The public form of ``notes``, inside the unit of work of ``session``."""
    if not notes:
        return []
    connection = await session.connection()
    shares = await connection.execute(_SHARES_OF, {"note_ids": [note.id for note in notes]})
    return _views(notes, shares, viewer)


async def shared_views(
    database: Database, *, notes: Sequence[NoteFields], viewer: Viewer
) -> list[NotePublic]:
    """``note_views`` outside a unit of work: one point read for the shares of a page."""
    if not notes:
        return []
    shares = await database.lookup(_SHARES_OF, {"note_ids": [note.id for note in notes]})
    return _views(notes, shares, viewer)


async def note_view(session: AsyncSession, *, note: NoteFields, viewer: Viewer) -> NotePublic:
    (view,) = await note_views(session, notes=[note], viewer=viewer)
    return view
