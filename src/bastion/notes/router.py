"""/notes: the protected resource. Thin routes over ``bastion.notes.service``.

Every route declares its permission through the principal it takes (``NotesReader``,
``NotesWriter``); object-level rules live in ``VisibleNote`` and ``OwnedNote``, which
answer 404 before the route runs.

The two creating routes take an ``Idempotency-Key`` (``bastion.idempotency``): the key is
claimed in a transaction of its own before the write's begins, and released after the
write's has ended if anything failed. ``POST /notes`` does both in the route, around its
own transaction, so a request without the header costs no more than before. A share checks
its note (``OwnedNote``, in the write's transaction) before the body is validated, so its
claim is a dependency, ``KeyClaim``, declared first: FastAPI solves dependencies in the
order declared, and a function-scoped one ends after those that follow it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, Query, Request, Response

from bastion.dependencies import AppDatabase, DbSession, require
from bastion.idempotency import KEY_OPENAPI, Claim, claimed, with_key_responses
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


async def _key_claim(request: Request, principal: NotesWriter) -> AsyncIterator[Claim]:
    database = services_of(request.app).database
    async with claimed(database, request, user_id=principal.user_id) as claim:
        yield claim


KeyClaim = Annotated[Claim, Depends(_key_claim, scope="function")]
"""The request's hold on its Idempotency-Key (none without the header), taken before any
dependency that follows it begins the write's transaction."""


@router.post(
    "/notes",
    status_code=201,
    response_model=NotePublic,
    responses=with_key_responses(201, {**_DENIED, **_OVER_QUOTA, **_INVALID}),
    openapi_extra=KEY_OPENAPI,
    max_body_size=NOTE_BODY_BYTES,
)
async def create_note(
    request: Request,
    body: NoteCreate,
    principal: NotesWriter,
    services: AppServices,
    response: Response,
) -> NotePublic | Response:
    """Create a note. The body is sanitized HTML (no script, event handlers or
    ``javascript:`` URLs) before it is stored; 409 when it would not fit the caller's limits.
    With an ``Idempotency-Key``, a retry within 24 h gets the first answer again."""
    database = services.database
    async with claimed(database, request, user_id=principal.user_id) as claim:
        if claim.replay is not None:
            return claim.replay
        # One transaction, committed before the response is sent (as ``DbSession``'s).
        async with database.transaction() as session:
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
    openapi_extra=KEY_OPENAPI,
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
