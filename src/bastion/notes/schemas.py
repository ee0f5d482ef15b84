"""Request and response bodies of /notes, one class per direction (no mass assignment).

Request models forbid unknown fields, so ``owner_id``, ``id``, ``shared_with`` or
timestamps in a body are a 422, never a silent overwrite. Nothing is trimmed or rewritten
silently: a title is stored exactly as sent or refused; only the body is changed, by the
HTML sanitizer, which is the point of ``SafeHTML``.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, StringConstraints

from bastion.identity.schemas import Username
from bastion.schemas import PatchModel, StrictModel
from bastion.security.sanitize import MAX_HTML_BYTES, PlainText, SafeHTML
from bastion.security.text import DocumentedPattern, not_blank_plain_text_pattern

MAX_TITLE_CHARACTERS = 200  # the width of notes.title
# The largest JSON body a valid note can take: every byte of the body escaped as \u00XX
# (6 bytes; some encoders escape <, > and & so), every title character as a surrogate
# pair (12 bytes), and room for the keys and any whitespace. A valid note never gets 413.
NOTE_BODY_BYTES = 6 * MAX_HTML_BYTES + 12 * MAX_TITLE_CHARACTERS + 4096


def _text_not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("Must contain something other than whitespace.")
    return value


# The length is checked first (cheap, and a 1 MiB title is never scanned), then
# PlainText's own validator (no control or format character, so no lone surrogate either),
# then ours. The last metadata's pattern is the one the document states: plain text that
# is not blank.
Title = Annotated[
    Annotated[str, StringConstraints(min_length=1, max_length=MAX_TITLE_CHARACTERS)],
    *PlainText.__metadata__,
    AfterValidator(_text_not_blank),
    DocumentedPattern(not_blank_plain_text_pattern),
]
# SafeHTML checks the length before nh3 cleans it; the model refuses control characters
# and lone surrogates in it as in every string of a body.
Body = SafeHTML


MAX_SEARCH_CHARACTERS = 200
# What ``q`` may be: plain text (no control characters, which also keeps NUL away from
# PostgreSQL), short enough that the LIKE pattern built from it stays small.
SearchText = Annotated[
    Annotated[str, StringConstraints(max_length=MAX_SEARCH_CHARACTERS)],
    *PlainText.__metadata__,
]


class NoteCreate(StrictModel):
    title: Title
    body: Body


class NoteUpdate(PatchModel):
    """Only the fields sent change; a field may be left out but not set to null."""

    title: Title | None = None
    body: Body | None = None


class ShareCreate(StrictModel):
    username: Username


class NotePublic(BaseModel):
    id: uuid.UUID
    owner_id: uuid.UUID
    title: str
    body: str
    shared_with: list[str]
    created_at: datetime
    updated_at: datetime
