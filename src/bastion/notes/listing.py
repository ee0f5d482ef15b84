"""Listing notes: pages newest first, continued from a keyset position in a signed cursor.

Pages are ordered ``(created_at DESC, id DESC)`` and continue from a keyset position, never
an offset; the position travels in a signed cursor (``CursorCodec``) whose purpose names the
caller and the listing, so a cursor of one listing is refused by another. Listing applies
the visibility rule in SQL, and ``q`` searches as ``bastion.notes.search`` says.
"""

from __future__ import annotations

import orjson
from sqlalchemy import ColumnElement, Select, and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from bastion.errors import Forbidden
from bastion.notes.schemas import NotePublic
from bastion.notes.search import search_condition
from bastion.notes.views import note_views
from bastion.notes.visibility import Viewer, visible_to
from bastion.pagination import TimeIdPosition, decode_cursor, read_time_id, time_id_values
from bastion.security.cursors import CursorCodec
from bastion.storage.tables import Note

INVALID_CURSOR_DETAIL = "The cursor is not valid for this listing."

Position = TimeIdPosition
"""A keyset position: the (created_at, id) of the last note of a page."""


def listing_purpose(*, viewer: Viewer, all_notes: bool, q: str | None) -> str:
    """The cursor purpose: a cursor only continues the listing (caller, ``all``, ``q``)
    that issued it."""
    return orjson.dumps(["notes", str(viewer.user_id), all_notes, q or None]).decode()


def encode_position(codec: CursorCodec, purpose: str, position: Position) -> str:
    return codec.encode(purpose, time_id_values(position))


def decode_position(codec: CursorCodec, purpose: str, cursor: str) -> Position:
    """The position in ``cursor``, or a 400 for anything this server did not issue for this
    very listing."""
    return decode_cursor(codec, purpose, cursor, read_time_id, detail=INVALID_CURSOR_DETAIL)


def _after(position: Position) -> ColumnElement[bool]:
    created_at, note_id = position
    return or_(
        Note.created_at < created_at, and_(Note.created_at == created_at, Note.id < note_id)
    )


def _listing(
    *, viewer: Viewer, all_notes: bool, q: str | None, after: Position | None
) -> Select[Note]:
    statement = select(Note)
    if not all_notes:
        statement = statement.where(visible_to(viewer))
    if q:
        statement = statement.where(search_condition(q))
    if after is not None:
        statement = statement.where(_after(after))
    return statement.order_by(Note.created_at.desc(), Note.id.desc())


async def list_notes(
    session: AsyncSession,
    *,
    viewer: Viewer,
    all_notes: bool = False,
    q: str | None = None,
    limit: int,
    after: Position | None = None,
) -> tuple[list[NotePublic], Position | None]:
    """One page of the caller's notes and those shared with them (every note with
    ``all_notes``, which needs notes:read_all), newest first, and the position to continue
    from (None on the last page). Two queries: the page, and the shares of its notes."""
    if all_notes and not viewer.read_all:
        raise Forbidden
    statement = _listing(viewer=viewer, all_notes=all_notes, q=q, after=after)
    # One row more than asked tells whether another page exists, without counting.
    notes = list((await session.scalars(statement.limit(limit + 1))).all())
    more = len(notes) > limit
    notes = notes[:limit]
    views = await note_views(session, notes=notes, viewer=viewer)
    last = notes[-1] if more else None
    return views, (last.created_at, last.id) if last is not None else None
