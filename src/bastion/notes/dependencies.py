"""Dependencies that load a note and check the caller may touch it, so routes never see a
note they should not.

``VisibleNote`` (owner, sharee, or a notes:read_all token) and ``OwnedNote`` (owner only)
answer exactly the same 404 for a note that exists but is not the caller's as for one that
does not exist, and for an id that is not a UUID at all: the id is a path string parsed
here, not a typed path parameter, so a malformed id cannot be told apart by a 422 either.
Ids cannot be probed.

Each dependency asks for the principal with the route's permission, exactly as the route
does; FastAPI caches a dependency per request by (callable, scopes), so the token is
verified once per request even though both declare it.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends, Path, Query, Request

from bastion.dependencies import AppDatabase, DbSession, audit_denial, require
from bastion.errors import InsufficientScope, NotFound
from bastion.notes.visibility import (
    READ_ALL,
    SharedNote,
    Viewer,
    find_owned_note,
    find_visible_note,
)
from bastion.security.cursors import CursorCodec
from bastion.security.principal import Principal
from bastion.services import services_of
from bastion.storage.tables import Note

NotesReader = Annotated[Principal, require("notes:read")]
NotesWriter = Annotated[Principal, require("notes:write")]

NOTE_NOT_FOUND = "The note does not exist."

NoteId = Annotated[str, Path(description="The note's id (a UUID).")]


def _parse_id(note_id: str) -> uuid.UUID:
    try:
        return uuid.UUID(note_id)
    except ValueError:
        raise NotFound(NOTE_NOT_FOUND) from None


async def _visible_note(
    note_id: NoteId, principal: NotesReader, database: AppDatabase
) -> SharedNote:
    note = await find_visible_note(
        database, note_id=_parse_id(note_id), viewer=Viewer.of(principal)
    )
    if note is None:
        raise NotFound(NOTE_NOT_FOUND)
    return note


async def _owned_note(note_id: NoteId, principal: NotesWriter, session: DbSession) -> Note:
    note = await find_owned_note(
        session, note_id=_parse_id(note_id), owner_id=uuid.UUID(principal.user_id)
    )
    if note is None:
        raise NotFound(NOTE_NOT_FOUND)
    return note


async def _all_notes(
    request: Request,
    principal: NotesReader,
    all_notes: Annotated[
        bool,
        Query(alias="all", description="Every user's notes; needs notes:read_all."),
    ] = False,
) -> bool:
    """``?all=true`` without notes:read_all is a 403, audited like any other denial."""
    if all_notes and READ_ALL not in principal.scopes:
        await audit_denial(request, principal, [READ_ALL])
        raise InsufficientScope([READ_ALL])
    return all_notes


async def _cursor_codec(request: Request) -> CursorCodec:
    return services_of(request.app).cursors


VisibleNote = Annotated[SharedNote, Depends(_visible_note)]
"""The note of the path and its shares, when the caller owns it, it is shared with them, or
their token carries notes:read_all; otherwise 404. Read in a read-only unit of work."""
OwnedNote = Annotated[Note, Depends(_owned_note)]
"""The note of the path, when the caller owns it (row locked for the transaction);
otherwise 404."""
AllNotes = Annotated[bool, Depends(_all_notes)]
Cursors = Annotated[CursorCodec, Depends(_cursor_codec)]
