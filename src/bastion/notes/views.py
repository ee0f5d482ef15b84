"""What a caller sees of a note (``NotePublic``), and of whom it is shared with."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bastion.notes.schemas import NotePublic
from bastion.notes.visibility import Viewer
from bastion.storage.tables import Note, NoteShare, User


async def note_views(
    session: AsyncSession, *, notes: Sequence[Note], viewer: Viewer
) -> list[NotePublic]:
    """The public form of ``notes``, with one query for all their shares (never N+1).

    The owner (and a notes:read_all administrator) sees every user a note is shared with;
    anyone else sees only their own name: a note shared with you does not tell you who
    else it was shared with.
    """
    sharees: dict[uuid.UUID, list[tuple[uuid.UUID, str]]] = defaultdict(list)
    if notes:
        rows = await session.execute(
            select(NoteShare.note_id, User.id, User.username)
            .join(User, User.id == NoteShare.user_id)
            .where(NoteShare.note_id.in_([note.id for note in notes]))
        )
        # Sorted here, not by ORDER BY: a PostgreSQL locale collation would ignore "." and
        # "_" and order differently from SQLite.
        for note_id, user_id, username in sorted(rows, key=lambda row: row.username):
            sharees[note_id].append((user_id, username))
    views = []
    for note in notes:
        sees_all = viewer.read_all or note.owner_id == viewer.user_id
        shared_with = [
            username
            for user_id, username in sharees[note.id]
            if sees_all or user_id == viewer.user_id
        ]
        views.append(
            NotePublic(
                id=note.id,
                owner_id=note.owner_id,
                title=note.title,
                body=note.body,
                shared_with=shared_with,
                created_at=note.created_at,
                updated_at=note.updated_at,
            )
        )
    return views


async def note_view(session: AsyncSession, *, note: Note, viewer: Viewer) -> NotePublic:
    (view,) = await note_views(session, notes=[note], viewer=viewer)
    return view
