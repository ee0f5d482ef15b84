"""Cursor pagination shared by every list endpoint: ``{"items": [...], "next_cursor"}``.

A listing continues from a keyset position (the sort key of the last item seen), carried in
a cursor signed by ``CursorCodec`` for one purpose. ``decode_cursor`` is the one way back
from a cursor to a typed position: whatever this server did not sign for that purpose, and
whatever it signed in a shape the reader does not accept (a format of another version), is
the same ``InvalidCursorProblem`` (400), never a 500 and never a query from a chosen place.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel

from bastion.errors import BadRequest
from bastion.security.cursors import CURSOR_PATTERN, MAX_CURSOR_LENGTH, CursorCodec

DEFAULT_LIMIT = 20
MAX_LIMIT = 100

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page (1 to 100).")]
Cursor = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=MAX_CURSOR_LENGTH,
        description="next_cursor of the previous page.",
        # The form of every cursor (``CursorCodec``); one this server did not sign for
        # this listing is a 400 all the same.
        json_schema_extra={"pattern": CURSOR_PATTERN},
    ),
]


Item = TypeVar("Item")
Position = TypeVar("Position")

TimeIdPosition = tuple[datetime, uuid.UUID]
"""``(created_at, id)`` of the last item: the position of a newest-first listing."""


class Page(BaseModel, Generic[Item]):
    items: list[Item]
    next_cursor: str | None


class InvalidCursorProblem(BadRequest):
    """400: the cursor was not issued by this server for this listing."""

    detail = "The cursor is not valid; start again from the first page."


def decode_cursor(
    codec: CursorCodec,
    purpose: str,
    cursor: str,
    read: Callable[[list[Any]], Position],
    *,
    detail: str | None = None,
) -> Position:
    """The position in ``cursor``, read by ``read`` (which raises ``ValueError`` for a shape
    it does not accept), or ``InvalidCursorProblem`` with ``detail`` (the class's own by
    default) for anything else."""
    try:
        # Signed by us, so well-formed unless the format changed between versions; read
        # strictly anyway, as input that crossed the network.
        return read(codec.decode(purpose, cursor))
    except ValueError:  # InvalidCursor is one too
        raise InvalidCursorProblem(detail) from None


def time_id_values(position: TimeIdPosition) -> list[str]:
    """What ``read_time_id`` reads back: ``[created_at ISO 8601, id]``."""
    created_at, item_id = position
    return [created_at.isoformat(), str(item_id)]


def read_time_id(values: list[Any]) -> TimeIdPosition:
    """``[aware ISO 8601 datetime, UUID]`` as a position; ``ValueError`` for anything else."""
    match values:
        case [str(created_text), str(id_text)]:
            created_at = datetime.fromisoformat(created_text)
            item_id = uuid.UUID(id_text)
            if created_at.tzinfo is not None:
                return created_at, item_id
    raise ValueError("not a (created_at, id) position")


def read_sequence(values: list[Any]) -> int:
    """``[n]`` with ``n`` a positive integer (a sequence number); ``ValueError`` otherwise."""
    match values:
        case [int() as number] if not isinstance(number, bool) and number > 0:
            return number
    raise ValueError("not a sequence position")
