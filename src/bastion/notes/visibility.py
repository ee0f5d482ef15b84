"""Who may see a note: its owner, whoever it is shared with, and a notes:read_all token.

Notes are only ever loaded through ``find_visible_note`` or ``find_owned_note`` (by the
dependencies in ``bastion.notes.dependencies``), and listings apply the same rule in SQL
(``visible_to_viewer``), so a route never holds a note its caller may not see.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import BindParameter, ColumnElement, Select, bindparam, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from bastion.security.principal import Principal
from bastion.storage import Database
from bastion.storage.tables import Note, NoteShare, User

READ_ALL = "notes:read_all"


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who is asking, as far as notes care."""

    user_id: uuid.UUID
    read_all: bool  # the token carries notes:read_all

    @classmethod
    def of(cls, principal: Principal) -> Viewer:
        return cls(user_id=uuid.UUID(principal.user_id), read_all=READ_ALL in principal.scopes)


def visible_to_viewer() -> ColumnElement[bool]:
    """The notes the user bound as ``viewer_id`` owns or that are shared with them, as a SQL
    condition (statements are built once; the viewer is a parameter)."""
    viewer_id: BindParameter[uuid.UUID] = bindparam("viewer_id")
    shared_with_viewer = select(NoteShare.note_id).where(NoteShare.user_id == viewer_id)
    return or_(Note.owner_id == viewer_id, Note.id.in_(shared_with_viewer))


_notes = Note.__table__.c
NOTE_COLUMNS = (
    _notes.id,
    _notes.owner_id,
    _notes.title,
    _notes.body,
    _notes.created_at,
    _notes.updated_at,
)
"""What a note's public form shows (``views.NoteFields``): the columns every read selects."""


@dataclass(frozen=True, slots=True)
class SharedNote:
    """A note as ``find_visible_note`` read it, with every user it is shared with (who of
    them the viewer may see is ``views.view_of``'s decision)."""

    id: uuid.UUID
    owner_id: uuid.UUID
    title: str
    body: str
    created_at: datetime
    updated_at: datetime
    sharees: tuple[tuple[uuid.UUID, str], ...]


def _note_with_sharees(*, read_all: bool) -> Select[tuple[object, ...]]:
    """One row per share of the note (one with NULL sharee when it has none): the note and
    its shares in one query. Built once, with bound parameters, so no request builds a
    statement or its cache key. The join uses aliases, so ``visible_to_viewer``'s subquery on
    ``note_shares`` is not correlated with it."""
    share = NoteShare.__table__.alias("share")
    sharee = User.__table__.alias("sharee")
    statement = (
        select(
            *NOTE_COLUMNS,
            sharee.c.id.label("sharee_id"),
            sharee.c.username.label("sharee_name"),
        )
        .select_from(
            Note.__table__.outerjoin(share, share.c.note_id == _notes.id).outerjoin(
                sharee, sharee.c.id == share.c.user_id
            )
        )
        .where(_notes.id == bindparam("note_id"))
    )
    if not read_all:
        statement = statement.where(visible_to_viewer())
    return statement


_VISIBLE_NOTE = _note_with_sharees(read_all=False)
_ANY_NOTE = _note_with_sharees(read_all=True)


async def find_visible_note(
    database: Database, *, note_id: uuid.UUID, viewer: Viewer
) -> SharedNote | None:
    """The note when ``viewer`` owns it, it is shared with them, or their token carries
    notes:read_all (an administrator may read any note by id, as they may list them all).

    A point read (``Database.lookup``): no session, identity map or unit of work."""
    statement = _ANY_NOTE if viewer.read_all else _VISIBLE_NOTE
    rows = await database.lookup(statement, {"note_id": note_id, "viewer_id": viewer.user_id})
    if not rows:
        return None
    note = rows[0]
    return SharedNote(
        id=note.id,
        owner_id=note.owner_id,
        title=note.title,
        body=note.body,
        created_at=note.created_at,
        updated_at=note.updated_at,
        sharees=tuple(
            (row.sharee_id, row.sharee_name) for row in rows if row.sharee_id is not None
        ),
    )


async def find_owned_note(
    session: AsyncSession, *, note_id: uuid.UUID, owner_id: uuid.UUID
) -> Note | None:
    """The note when ``owner_id`` owns it, locked for the rest of the transaction so that a
    concurrent delete cannot pull it away between the check and the write."""
    note: Note | None = await session.scalar(
        select(Note).where(Note.id == note_id, Note.owner_id == owner_id).with_for_update()
    )
    return note
