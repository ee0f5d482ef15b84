"""/notes: the protected resource. Thin routes over ``bastion.notes.service``.

Every route declares its permission through the principal it takes (``NotesReader``,
``NotesWriter``); object-level rules live in ``VisibleNote`` and ``OwnedNote``, which
answer 404 before the route runs.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query, Response

from bastion.dependencies import AppDatabase, DbSession, require
from bastion.middleware.body_limit import SMALL_BODY_BYTES
from bastion.notes import listing, service
from bastion.notes.dependencies import (
    AllNotes,
    Cursors,
    NotesReader,
    NotesWriter,
    OwnedNote,
    VisibleNote,
)
from bastion.notes.quota import NoteQuota
from bastion.notes.schemas import (
    NOTE_BODY_BYTES,
    NoteCreate,
    NotePublic,
    NoteUpdate,
    SearchText,
    ShareCreate,
)
from bastion.notes.views import view_of
from bastion.notes.visibility import Viewer
from bastion.pagination import DEFAULT_LIMIT, Cursor, Limit, Page
from bastion.routing import service_router
from bastion.services import AppServices

router = service_router("notes")

Responses = dict[int | str, dict[str, Any]]
_NOT_FOUND: Responses = {404: {"description": "No such note, or not one the caller may see."}}
_DENIED: Responses = {401: {}, 403: {}}


_OVER_QUOTA: Responses = {
    409: {
        "description": "The caller's notes would exceed BASTION_NOTES_MAX_COUNT notes or "
        "BASTION_NOTES_MAX_BYTES bytes (UTF-8 titles and sanitized bodies); nothing is stored."
    }
}


@router.post(
    "/notes",
    status_code=201,
    responses={**_DENIED, **_OVER_QUOTA, 422: {}},
    max_body_size=NOTE_BODY_BYTES,
)
async def create_note(
    body: NoteCreate,
    principal: NotesWriter,
    session: DbSession,
    services: AppServices,
    response: Response,
) -> NotePublic:
    """Create a note. The body is sanitized HTML (no script, event handlers or
    ``javascript:`` URLs) before it is stored; 409 when it would not fit the caller's limits."""
    note = await service.create_note(
        session,
        owner=Viewer.of(principal),
        data=body,
        quota=NoteQuota.of(services.settings),
    )
    response.headers["Location"] = f"/notes/{note.id}"
    return note


@router.get("/notes", responses={**_DENIED, 400: {}, 422: {}})
async def list_notes(
    principal: NotesReader,
    all_notes: AllNotes,
    database: AppDatabase,
    cursors: Cursors,
    q: Annotated[
        SearchText | None,
        Query(
            description="Text to find in the title or the body; A-Z match a-z, every "
            "other character matches only itself."
        ),
    ] = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[NotePublic]:
    """The caller's notes and those shared with them, newest first; every user's notes
    with ``all=true`` (needs notes:read_all)."""
    viewer = Viewer.of(principal)
    purpose = listing.listing_purpose(viewer=viewer, all_notes=all_notes, q=q)
    after = listing.decode_position(cursors, purpose, cursor) if cursor else None
    items, last = await listing.list_notes(
        database, viewer=viewer, all_notes=all_notes, q=q, limit=limit, after=after
    )
    next_cursor = listing.encode_position(cursors, purpose, last) if last else None
    return Page[NotePublic](items=items, next_cursor=next_cursor)


@router.get("/notes/{note_id}", responses={**_DENIED, **_NOT_FOUND})
async def read_note(note: VisibleNote, principal: NotesReader) -> NotePublic:
    """A note the caller owns or that is shared with them (any note with notes:read_all).
    ``VisibleNote`` read the note with its shares already: no further query."""
    return view_of(note, note.sharees, Viewer.of(principal))


@router.patch(
    "/notes/{note_id}",
    responses={**_DENIED, **_NOT_FOUND, **_OVER_QUOTA, 422: {}},
    max_body_size=NOTE_BODY_BYTES,
)
async def update_note(
    note: OwnedNote,
    body: NoteUpdate,
    principal: NotesWriter,
    session: DbSession,
    services: AppServices,
) -> NotePublic:
    """Change the title and/or the body of a note the caller owns; 409 when a bigger note
    would not fit the caller's byte limit."""
    return await service.update_note(
        session,
        note=note,
        changes=body,
        viewer=Viewer.of(principal),
        quota=NoteQuota.of(services.settings),
    )


@router.delete(
    "/notes/{note_id}",
    status_code=204,
    response_class=Response,
    responses={**_DENIED, **_NOT_FOUND},
    dependencies=[require("notes:write")],  # what OwnedNote asks for: verified once
)
async def delete_note(note: OwnedNote, session: DbSession) -> None:
    """Delete a note the caller owns, and every share of it."""
    await service.delete_note(session, note=note)


@router.post(
    "/notes/{note_id}/shares", responses={**_DENIED, **_NOT_FOUND, 422: {}},
    max_body_size=SMALL_BODY_BYTES,
)
async def share_note(
    note: OwnedNote, body: ShareCreate, principal: NotesWriter, session: DbSession
) -> NotePublic:
    """Give another user read access to a note the caller owns. Idempotent: sharing again
    answers the same. An unknown username, or the owner's own, is a 422."""
    return await service.share_note(
        session, note=note, username=body.username, viewer=Viewer.of(principal)
    )
