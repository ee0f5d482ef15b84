"""/notes: the protected resource. Thin routes over ``bastion.notes.service``.

Every route declares its permission through the principal it takes (``NotesReader``,
``NotesWriter``); object-level rules live in ``VisibleNote`` and ``OwnedNote``, which
answer 404 before the route runs.

The two creating routes take an ``Idempotency-Key`` (``bastion.idempotency``) through
``KeyClaim``, their first parameter: FastAPI solves dependencies in the order declared, so
the key is claimed in its own transaction before ``DbSession`` (or ``OwnedNote``) begins
the write's, and released after that transaction has ended if anything failed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, Query, Request, Response

from bastion.dependencies import AppDatabase, DbSession, require
from bastion.idempotency import Claim, IdempotencyKeyHeader, claimed, with_key_responses
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
from bastion.services import AppServices, services_of

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
_INVALID: Responses = {422: {"description": "Invalid input; see errors."}}


async def _key_claim(
    request: Request, principal: NotesWriter, idempotency_key: IdempotencyKeyHeader = None
) -> AsyncIterator[Claim]:
    async with claimed(
        services_of(request.app).database, request, idempotency_key, user_id=principal.user_id
    ) as claim:
        yield claim


KeyClaim = Annotated[Claim, Depends(_key_claim, scope="function")]
"""The request's hold on its Idempotency-Key (none without the header); declared first."""


@router.post(
    "/notes",
    status_code=201,
    response_model=NotePublic,
    responses=with_key_responses(201, {**_DENIED, **_OVER_QUOTA, **_INVALID}),
    max_body_size=NOTE_BODY_BYTES,
)
async def create_note(
    claim: KeyClaim,
    body: NoteCreate,
    principal: NotesWriter,
    session: DbSession,
    services: AppServices,
    response: Response,
) -> NotePublic | Response:
    """Create a note. The body is sanitized HTML (no script, event handlers or
    ``javascript:`` URLs) before it is stored; 409 when it would not fit the caller's limits.
    With an ``Idempotency-Key``, a retry within 24 h gets the first answer again."""
    if claim.replay is not None:
        return claim.replay
    note = await service.create_note(
        session,
        owner=Viewer.of(principal),
        data=body,
        quota=NoteQuota.of(services.settings),
    )
    response.headers["Location"] = f"/notes/{note.id}"
    return await claim.answer(session, note, status_code=201, response=response)


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
    "/notes/{note_id}/shares",
    response_model=NotePublic,
    responses=with_key_responses(200, {**_DENIED, **_NOT_FOUND, **_INVALID}),
    max_body_size=SMALL_BODY_BYTES,
)
async def share_note(
    claim: KeyClaim,
    note: OwnedNote,
    body: ShareCreate,
    principal: NotesWriter,
    session: DbSession,
    response: Response,
) -> NotePublic | Response:
    """Give another user read access to a note the caller owns. Idempotent: sharing again
    answers the same. An unknown username, or the owner's own, is a 422."""
    if claim.replay is not None:
        return claim.replay
    shared = await service.share_note(
        session, note=note, username=body.username, viewer=Viewer.of(principal)
    )
    return await claim.answer(session, shared, status_code=200, response=response)
