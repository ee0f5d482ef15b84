"""Notes: create, read, list and search, update, delete, share.

Keyword-only functions over the request's ``AsyncSession`` (one transaction per request).
They never decide who may touch a note on their own: the dependencies in
``bastion.notes.dependencies`` load a note only through ``find_visible_note`` or
``find_owned_note`` and answer 404 otherwise, so a route never holds a note its caller may
not see. Listing applies the same visibility rule in SQL.

Search (``q``) is a case-insensitive substring match on the title and the body, built only
from bound parameters, with LIKE's ``%``, ``_`` and escape character escaped, so every
character of ``q`` matches itself. Case is folded for ASCII letters only, and the same way
on SQLite and PostgreSQL (see ``AsciiLower``); other characters match exactly.

Pages are ordered newest first, ``(created_at DESC, id DESC)``, and continue from a keyset
position, never an offset; the position travels in a signed cursor (``CursorCodec``) whose
purpose names the caller and the listing, so a cursor of one listing is refused by another.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import ColumnElement, Select, Text, and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from bastion.clock import utc_now
from bastion.errors import Forbidden, InvalidFields
from bastion.notes.schemas import NoteCreate, NotePublic, NoteUpdate
from bastion.pagination import TimeIdPosition, decode_cursor, read_time_id, time_id_values
from bastion.security.cursors import CursorCodec
from bastion.security.principal import Principal
from bastion.storage.tables import Note, NoteShare, User

READ_ALL = "notes:read_all"
INVALID_CURSOR_DETAIL = "The cursor is not valid for this listing."
LIKE_ESCAPE = "\\"


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who is asking, as far as notes care."""

    user_id: uuid.UUID
    read_all: bool  # the token carries notes:read_all

    @classmethod
    def of(cls, principal: Principal) -> Viewer:
        return cls(user_id=uuid.UUID(principal.user_id), read_all=READ_ALL in principal.scopes)


Position = TimeIdPosition
"""A keyset position: the (created_at, id) of the last note of a page."""


# -- search ---------------------------------------------------------------------------------


class AsciiLower(FunctionElement[str]):
    """``lower()`` that folds A-Z only, on every backend.

    SQLite's built-in ``lower()`` folds ASCII only; PostgreSQL's follows the database's
    locale. Under the "C" collation PostgreSQL folds ASCII only too, so the same query
    gives the same answer on both, whatever locale the server was created with.
    """

    type = Text()
    name = "ascii_lower"
    inherit_cache = True


@compiles(AsciiLower)
def _ascii_lower_default(element: AsciiLower, compiler: SQLCompiler, **kw: Any) -> str:
    return f"lower({compiler.process(element.clauses, **kw)})"


@compiles(AsciiLower, "postgresql")
def _ascii_lower_postgresql(element: AsciiLower, compiler: SQLCompiler, **kw: Any) -> str:
    return f'lower(({compiler.process(element.clauses, **kw)}) COLLATE "C")'


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def like_contains(text: str) -> str:
    """A LIKE pattern (escape ``\\``) matching any string that contains ``text`` literally."""
    escaped = (
        text.replace(LIKE_ESCAPE, LIKE_ESCAPE * 2)
        .replace("%", LIKE_ESCAPE + "%")
        .replace("_", LIKE_ESCAPE + "_")
    )
    return f"%{escaped}%"


def as_stored_html_text(text: str) -> str:
    """``text`` as the sanitizer serialises it inside an HTML text node, so that searching
    the stored body for "Tom & Jerry" finds "Tom &amp; Jerry"."""
    return (
        text.replace("&", "&amp;")
        .replace("\xa0", "&nbsp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
    )


def search_condition(q: str) -> ColumnElement[bool]:
    title_pattern = like_contains(q.translate(_ASCII_LOWER))
    body_pattern = like_contains(as_stored_html_text(q).translate(_ASCII_LOWER))
    return or_(
        AsciiLower(Note.title).like(title_pattern, escape=LIKE_ESCAPE),
        AsciiLower(Note.body).like(body_pattern, escape=LIKE_ESCAPE),
    )


# -- visibility -----------------------------------------------------------------------------


def _visible_to(viewer: Viewer) -> ColumnElement[bool]:
    shared_with_viewer = select(NoteShare.note_id).where(NoteShare.user_id == viewer.user_id)
    return or_(Note.owner_id == viewer.user_id, Note.id.in_(shared_with_viewer))


async def find_visible_note(
    session: AsyncSession, *, note_id: uuid.UUID, viewer: Viewer
) -> Note | None:
    """The note when ``viewer`` owns it, it is shared with them, or their token carries
    notes:read_all (an administrator may read any note by id, as they may list them all)."""
    statement = select(Note).where(Note.id == note_id)
    if not viewer.read_all:
        statement = statement.where(_visible_to(viewer))
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


# -- views ----------------------------------------------------------------------------------


async def _views(
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
    (view,) = await _views(session, notes=[note], viewer=viewer)
    return view


# -- writes ---------------------------------------------------------------------------------


async def create_note(
    session: AsyncSession, *, owner: Viewer, data: NoteCreate, now: datetime | None = None
) -> NotePublic:
    now = now or utc_now()
    note = Note(
        id=uuid.uuid4(),
        owner_id=owner.user_id,
        title=data.title,
        body=data.body,
        created_at=now,
        updated_at=now,
    )
    session.add(note)
    await session.flush()
    return await note_view(session, note=note, viewer=owner)


async def update_note(
    session: AsyncSession,
    *,
    note: Note,
    changes: NoteUpdate,
    viewer: Viewer,
    now: datetime | None = None,
) -> NotePublic:
    """Changes the fields that were sent; an empty PATCH changes nothing, not even
    ``updated_at``. ``note`` comes from ``find_owned_note``."""
    if changes.title is not None:
        note.title = changes.title
    if changes.body is not None:
        note.body = changes.body
    if changes.model_fields_set:
        note.updated_at = now or utc_now()
        await session.flush()
    return await note_view(session, note=note, viewer=viewer)


async def delete_note(session: AsyncSession, *, note: Note) -> None:
    """Deletes the note; its shares go with it (ON DELETE CASCADE)."""
    await session.delete(note)
    await session.flush()


def _username_problem(message: str) -> InvalidFields:
    return InvalidFields([{"loc": ["body", "username"], "msg": message}])


async def share_note(
    session: AsyncSession,
    *,
    note: Note,
    username: str,
    viewer: Viewer,
    now: datetime | None = None,
) -> NotePublic:
    """Gives ``username`` read access. Sharing again is a no-op with the same answer.

    An unknown username is a 422 on the ``username`` field: only the owner of a note gets
    this far, and registration already tells anyone whether a username is taken, so
    pretending to share would hide nothing and mislead the owner.
    """
    user_id = await session.scalar(select(User.id).where(User.username == username.lower()))
    if user_id is None:
        raise _username_problem("No user has this username.")
    if user_id == note.owner_id:
        raise _username_problem("The owner of a note cannot share it with themself.")
    # The note row is locked (find_owned_note), so no concurrent request can add the same
    # share between this check and the insert.
    if await session.get(NoteShare, (note.id, user_id)) is None:
        session.add(NoteShare(note_id=note.id, user_id=user_id, created_at=now or utc_now()))
        await session.flush()
    return await note_view(session, note=note, viewer=viewer)


# -- listing --------------------------------------------------------------------------------


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
        statement = statement.where(_visible_to(viewer))
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
    views = await _views(session, notes=notes, viewer=viewer)
    last = notes[-1] if more else None
    return views, (last.created_at, last.id) if last is not None else None
