"""Notes: create, update, delete and share; reading, listing and search are re-exported.

Keyword-only functions over the request's ``AsyncSession`` (one transaction per request).
They never decide who may touch a note on their own: the dependencies in
``bastion.notes.dependencies`` load a note only through ``find_visible_note`` or
``find_owned_note`` (``bastion.notes.visibility``) and answer 404 otherwise, so a route
never holds a note its caller may not see. Listing is ``bastion.notes.listing``, search
``bastion.notes.search``, the public form of a note ``bastion.notes.views``. Creating a
note, or making one bigger, first checks the owner's limits (``bastion.notes.quota``) in the
same transaction; a refusal is a 409 and stores nothing.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bastion.clock import utc_now
from bastion.errors import InvalidFields
from bastion.notes.quota import NoteQuota, check_growth, check_new_note, stored_size
from bastion.notes.schemas import NoteCreate, NotePublic, NoteUpdate
from bastion.notes.views import note_view, view_of
from bastion.notes.visibility import Viewer
from bastion.storage.tables import Note, NoteShare, User


async def create_note(
    session: AsyncSession,
    *,
    owner: Viewer,
    data: NoteCreate,
    quota: NoteQuota,
    now: datetime | None = None,
) -> NotePublic:
    size = stored_size(data.title, data.body)
    await check_new_note(session, owner_id=owner.user_id, quota=quota, size=size)
    now = now or utc_now()
    note = Note(
        id=uuid.uuid4(),
        owner_id=owner.user_id,
        title=data.title,
        body=data.body,
        size_bytes=size,
        created_at=now,
        updated_at=now,
    )
    session.add(note)
    await session.flush()
    return view_of(note, (), owner)  # a new note is shared with nobody yet


async def update_note(
    session: AsyncSession,
    *,
    note: Note,
    changes: NoteUpdate,
    viewer: Viewer,
    quota: NoteQuota,
    now: datetime | None = None,
) -> NotePublic:
    """Changes the fields that were sent; an empty PATCH changes nothing, not even
    ``updated_at``. ``note`` comes from ``find_owned_note``. A change that makes the note
    bigger must fit the owner's byte limit; checked before anything is changed."""
    size = stored_size(
        note.title if changes.title is None else changes.title,
        note.body if changes.body is None else changes.body,
    )
    await check_growth(
        session, owner_id=note.owner_id, quota=quota, old_size=note.size_bytes, new_size=size
    )
    if size != note.size_bytes:
        note.size_bytes = size
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

