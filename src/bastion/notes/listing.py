"""Listing notes: pages newest first, continued from a keyset position in a signed cursor.

Pages are ordered ``(created_at DESC, id DESC)`` and continue from a keyset position, never
an offset; the position travels in a signed cursor (``CursorCodec``) whose purpose names the
caller and the listing, so a cursor of one listing is refused by another. Listing applies
the visibility rule in SQL, and ``q`` searches as ``bastion.notes.search`` says.

The everyday listing (the caller's own notes and those shared with them, no ``q``) is the
hot path: prebuilt Core statements, run as point reads (``Database.lookup``), whose cost
follows the page, not the caller's data. The page's keys come first: the caller's newest
notes straight from the ``(owner_id, created_at)`` index, united with the notes shared with
them (a sort of their keys alone, never of bodies); then the page's rows by id, then their
shares. A search or ``all=true`` may visit many rows: it runs as one ``Database.scan()``,
which on SQLite keeps it off the event loop's thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

import orjson
from sqlalchemy import ColumnElement, Integer, Row, Select, and_, bindparam, or_, select, union

from bastion.errors import Forbidden
from bastion.notes.schemas import NotePublic
from bastion.notes.search import search_condition, search_parameters
from bastion.notes.views import NoteFields, shared_views
from bastion.notes.visibility import NOTE_COLUMNS, Viewer, visible_to_viewer
from bastion.pagination import TimeIdPosition, decode_cursor, read_time_id, time_id_values
from bastion.security.cursors import CursorCodec
from bastion.storage import Database
from bastion.storage.tables import Note, NoteShare

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


_notes = Note.__table__.c
_LIMIT = bindparam("limit", type_=Integer())
_NEWEST_FIRST = (_notes.created_at.desc(), _notes.id.desc())


def _after_bound() -> ColumnElement[bool]:
    """After the position; the leading ``<=`` lets the index seek to it instead of walking
    every newer note."""
    return and_(
        _notes.created_at <= bindparam("after_created_at"),
        or_(
            _notes.created_at < bindparam("after_created_at"),
            and_(
                _notes.created_at == bindparam("after_created_at"),
                _notes.id < bindparam("after_id"),
            ),
        ),
    )


def _own_and_shared(*, after: bool) -> Select[tuple[Any, ...]]:
    """One page (``limit`` rows) of the viewer's own notes and those shared with them: the
    page's ids from the keys alone, then those notes' rows."""
    share = NoteShare.__table__.c
    owned = select(_notes.id, _notes.created_at).where(_notes.owner_id == bindparam("viewer_id"))
    shared = (
        select(_notes.id, _notes.created_at)
        .join(NoteShare.__table__, share.note_id == _notes.id)
        .where(share.user_id == bindparam("viewer_id"))
    )
    if after:
        owned, shared = owned.where(_after_bound()), shared.where(_after_bound())
    parts = [
        select(part.order_by(*_NEWEST_FIRST).limit(_LIMIT).subquery())
        for part in (owned, shared)
    ]
    keys = union(*parts).subquery()
    page = (
        select(keys.c.id)
        .order_by(keys.c.created_at.desc(), keys.c.id.desc())
        .limit(_LIMIT)
    )
    return select(*NOTE_COLUMNS).where(_notes.id.in_(page)).order_by(*_NEWEST_FIRST)


_OWN_AND_SHARED = {after: _own_and_shared(after=after) for after in (False, True)}


async def _own_and_shared_page(
    database: Database, *, viewer: Viewer, limit: int, after: Position | None
) -> Sequence[Row[Any]]:
    parameters: dict[str, Any] = {"viewer_id": viewer.user_id, "limit": limit}
    if after is not None:
        parameters["after_created_at"], parameters["after_id"] = after
    return await database.lookup(_OWN_AND_SHARED[after is not None], parameters)


@cache
def _scanned(*, all_notes: bool, indexed: bool | None, after: bool) -> Select[tuple[Any, ...]]:
    """A page of a search (``indexed`` says how, None: no search) or of every note, as a
    statement built once per shape; ``q`` and the rest travel as bound parameters."""
    statement = select(*NOTE_COLUMNS)
    if not all_notes:
        statement = statement.where(visible_to_viewer())
    if indexed is not None:
        statement = statement.where(search_condition(indexed=indexed))
    if after:
        statement = statement.where(_after_bound())
    return statement.order_by(*_NEWEST_FIRST).limit(_LIMIT)


async def _scanned_page(
    database: Database,
    *,
    viewer: Viewer,
    all_notes: bool,
    q: str | None,
    limit: int,
    after: Position | None,
) -> Sequence[Row[Any]]:
    parameters: dict[str, Any] = {"viewer_id": viewer.user_id, "limit": limit}
    indexed: bool | None = None
    if q:
        search, indexed = search_parameters(q)
        parameters |= search
    if after is not None:
        parameters["after_created_at"], parameters["after_id"] = after
    statement = _scanned(all_notes=all_notes, indexed=indexed, after=after is not None)
    async with database.scan() as session:
        rows: Sequence[Row[Any]] = (await session.execute(statement, parameters)).all()
    return rows


async def list_notes(
    database: Database,
    *,
    viewer: Viewer,
    all_notes: bool = False,
    q: str | None = None,
    limit: int,
    after: Position | None = None,
) -> tuple[list[NotePublic], Position | None]:
    """One page of the caller's notes and those shared with them (every note with
    ``all_notes``, which needs notes:read_all), newest first, and the position to continue
    from (None on the last page)."""
    if all_notes and not viewer.read_all:
        raise Forbidden
    # One row more than asked tells whether another page exists, without counting.
    if all_notes or q:
        rows = await _scanned_page(
            database, viewer=viewer, all_notes=all_notes, q=q, limit=limit + 1, after=after
        )
    else:
        rows = await _own_and_shared_page(database, viewer=viewer, limit=limit + 1, after=after)
    more = len(rows) > limit
    notes: Sequence[NoteFields] = rows[:limit]
    views = await shared_views(database, notes=notes, viewer=viewer)
    last = notes[-1] if more else None
    return views, (last.created_at, last.id) if last is not None else None
