"""``Idempotency-Key`` (IETF httpapi draft): a retried creating request is answered, not
repeated.

A client that gets no answer, or a 503, cannot tell whether its write committed: the
database may have committed just before the connection broke. With a key, retrying is safe.
Keys are per user and live 24 h (``RETENTION``); each is a row of ``idempotency_keys``
(``IdempotencyRecord``), taken through three steps:

1. **Claim**, in a short transaction of its own before the write's begins (on SQLite the
   write's transaction holds the process's one write turn, so the claim cannot be inside
   it): a conditional insert of an in-flight row. When the row exists, the same request
   (same fingerprint: SHA-256 of the method, the path and the raw body bytes) that has
   completed is answered with the recorded status, headers and body, plus
   ``Idempotent-Replayed: true``; another request with the key is a 422; the same one
   still in flight is a 409. A claim whose lease has run out (its process died) is taken
   over, and so is a row older than 24 h.
2. **Complete**, in the write's own transaction: the response is recorded in the row, so it
   is there if and only if the write committed. Only the holder of the claim may complete
   it; a claim taken over meanwhile makes the write roll back with a 409.
3. **Release**, when the request fails in any way (a refusal, a validation error, a failed
   commit): the in-flight row is deleted, best effort, so the client may retry at once. A
   completed row is never deleted: when a commit that reported failure did commit, the
   retry is answered from the record. A release that cannot run leaves the lease to expire.

Only a committed write's response is recorded. A refusal (404, 409 over quota, 422) stored
nothing, so it is not recorded and a retry is decided again on the state of that moment.

Rows older than 24 h are purged a few at a time by later claims, anyone's (``PURGE_BATCH``),
so the table holds about the last day's keys whether or not their users come back. Without
the header nothing here runs: no claim, no extra statement.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from fastapi import Request, Response
from pydantic import BaseModel
from sqlalchemy import bindparam, delete, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from bastion.clock import utc_now
from bastion.errors import BadRequest, Conflict, InvalidFields
from bastion.storage import Database, StorageUnavailable
from bastion.storage.tables import IdempotencyRecord

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
RETENTION = timedelta(hours=24)
MAX_KEY_LENGTH = 255
# A claim is abandoned (its process died) after this many BASTION_DATABASE_TIMEOUTs: far
# longer than a write takes, short enough that a crash blocks the key only briefly. A write
# that outlives its lease is still safe: it cannot complete a claim taken over.
LEASE_TIMEOUTS = 6
# Rows past RETENTION that each claim deletes, oldest first.
PURGE_BATCH = 32

MALFORMED_DETAIL = (
    "The Idempotency-Key header must be one key: 1 to 255 visible ASCII characters, or a "
    "quoted string of 1 to 255 printable ones."
)
IN_FLIGHT_DETAIL = (
    "A request with this Idempotency-Key is still being processed; retry once it has "
    "finished."
)
REUSED_MESSAGE = (
    "This key was used in the last 24 hours for a different request (method, path or "
    "body); use a new key for a new request."
)

# The header as OpenAPI describes it (``openapi_extra`` of the route): it is read from the
# request only by ``claimed``, so a request without it pays for no parameter of its own.
# What ``parse_key`` accepts, for the document: a bare key, or an sf-string of 1 to 255
# characters (each printable ASCII, or an escaped quote or backslash).
KEY_PATTERN = r'^(?:[!#-\[\]-~]{1,255}|"(?:[ !#-\[\]-~]|\\["\\]){1,255}")$'
KEY_OPENAPI: dict[str, Any] = {
    "parameters": [
        {
            "name": HEADER,
            "in": "header",
            "required": False,
            "schema": {"type": "string", "pattern": KEY_PATTERN},
            "description": "Makes a retry safe (IETF httpapi Idempotency-Key draft): the same "
            "key and body within 24 h answer the first response again, with "
            f"`{REPLAYED_HEADER}: true`, instead of creating again. 1-255 visible ASCII "
            "characters, or a quoted string (the draft's sf-string); per user.",
        }
    ]
}

Responses = dict[int | str, dict[str, Any]]
_PROBLEM: dict[str, Any] = {"application/problem+json": {}}
_KEY_RESPONSES: Responses = {
    400: {"description": "A malformed Idempotency-Key header.", "content": _PROBLEM},
    409: {
        "description": "A request with the same Idempotency-Key is still in flight.",
        "content": _PROBLEM,
    },
    422: {
        "description": "The Idempotency-Key was used for a different request.",
        "content": _PROBLEM,
    },
}
_REPLAYABLE = {
    "headers": {
        REPLAYED_HEADER: {
            "description": "`true` when this is the recorded answer to an earlier request "
            "with the same Idempotency-Key and body.",
            "schema": {"type": "string"},
        }
    }
}


def with_key_responses(success: int, responses: Responses) -> Responses:
    """An operation's OpenAPI ``responses`` plus what the header adds: the replay marker on
    ``success``, and its 400, 409 and 422 (descriptions joined to those already there)."""
    merged: Responses = {**responses, success: _REPLAYABLE}
    for status, documented in _KEY_RESPONSES.items():
        before = merged.get(status, {})
        described = [before.get("description"), documented["description"]]
        merged[status] = {
            **before,
            **documented,
            "description": " Or: ".join(text for text in described if text),
        }
    return merged


ModelT = TypeVar("ModelT", bound=BaseModel)


# --- the header and the request's fingerprint -------------------------------------------

_BARE_KEY_CHARACTERS = frozenset(map(chr, range(0x21, 0x7F))) - {'"', "\\"}


def _sf_string(value: str) -> str | None:
    """The content of an RFC 8941 sf-string (printable ASCII in double quotes, ``\\"`` and
    ``\\\\`` escaped), or None when ``value`` is not one."""
    if len(value) < 2 or not value.endswith('"'):
        return None
    characters: list[str] = []
    escaped = False
    for character in value[1:-1]:
        if escaped:
            if character not in '"\\':
                return None
            characters.append(character)
            escaped = False
        elif character == "\\":
            escaped = True
        elif character == '"' or not " " <= character <= "~":
            return None
        else:
            characters.append(character)
    return None if escaped else "".join(characters)


def parse_key(value: str) -> str:
    """The key of an ``Idempotency-Key`` field value: the draft's sf-string (``"..."``) or
    a bare token of visible ASCII; 400 (``BadRequest``) for anything else."""
    value = value.strip(" \t")
    if len(value) > 2 * MAX_KEY_LENGTH + 2:
        raise BadRequest(MALFORMED_DETAIL)
    if value.startswith('"'):
        key = _sf_string(value)
    else:
        key = value if _BARE_KEY_CHARACTERS.issuperset(value) else None
    if key is None or not 1 <= len(key) <= MAX_KEY_LENGTH:
        raise BadRequest(MALFORMED_DETAIL)
    return key


def fingerprint(method: str, path: str, body: bytes) -> str:
    """SHA-256 (hex) of what makes a request the same request: method, path, raw body. Each
    part is length-prefixed, so bytes moved from one part to the next change the digest."""
    digest = hashlib.sha256()
    for part in (method.encode(), path.encode(), body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class KeyedRequest:
    """One request with a key: whose key it is, the key, and the request's fingerprint."""

    user_id: uuid.UUID
    key: str
    fingerprint: str

    @classmethod
    async def of(cls, request: Request, values: list[str], *, user_id: str) -> KeyedRequest:
        """The request's key, from its ``Idempotency-Key`` field ``values`` (exactly one,
        else 400), and its fingerprint over the raw body, as read (and kept) by FastAPI."""
        if len(values) != 1:
            raise BadRequest(MALFORMED_DETAIL)
        return cls(
            user_id=uuid.UUID(user_id),
            key=parse_key(values[0]),
            fingerprint=fingerprint(request.method, request.scope["path"], await request.body()),
        )

    def where(self) -> dict[str, Any]:
        """The bound values that find this request's row."""
        return {"record_user_id": self.user_id, "record_key": self.key}


# --- the recorded response --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecordedResponse:
    """The first response to a keyed request: what a retry is answered."""

    status_code: int
    headers: dict[str, str]
    body: bytes

    def response(self, *, replayed: bool) -> Response:
        headers = {**self.headers, REPLAYED_HEADER: "true"} if replayed else self.headers
        return Response(
            self.body, self.status_code, headers=headers, media_type="application/json"
        )


# --- statements, built once -------------------------------------------------------------

_c = IdempotencyRecord.__table__.c
_THIS_KEY = (_c.user_id == bindparam("record_user_id")) & (_c.key == bindparam("record_key"))
_HELD = (_c.claim_id == bindparam("record_claim_id")) & _c.completed_at.is_(None)

# Insert the claim unless the key has a row (the values travel as parameters).
_CLAIM = {
    "postgresql": postgresql.insert(IdempotencyRecord).on_conflict_do_nothing(),
    "sqlite": sqlite.insert(IdempotencyRecord).on_conflict_do_nothing(),
}
_LOCK_RECORD = (
    select(
        _c.fingerprint,
        _c.created_at,
        _c.lease_expires_at,
        _c.completed_at,
        _c.status_code,
        _c.response_headers,
        _c.response_body,
    )
    .where(_THIS_KEY)
    .with_for_update()
)
_FORGET = delete(IdempotencyRecord).where(_THIS_KEY)
# The SET clause comes from the parameters given: the response's columns.
_COMPLETE = update(IdempotencyRecord).where(_THIS_KEY, _HELD)
_RELEASE = delete(IdempotencyRecord).where(_THIS_KEY, _HELD)
# Never waits (SKIP LOCKED; SQLite has one writer anyway), so the claim's only wait is for
# its own key's row, and two claims cannot deadlock.
_PURGE = delete(IdempotencyRecord).where(
    tuple_(_c.user_id, _c.key).in_(
        select(_c.user_id, _c.key)
        .where(_c.created_at <= bindparam("cutoff"))
        .order_by(_c.created_at)
        .limit(PURGE_BATCH)
        .with_for_update(skip_locked=True)
    )
)


def _in_flight() -> Conflict:
    return Conflict(IN_FLIGHT_DETAIL)


def _reused() -> InvalidFields:
    return InvalidFields([{"loc": ["header", HEADER], "msg": REUSED_MESSAGE}])


# --- claim, complete, release -----------------------------------------------------------


async def _decide(
    connection: AsyncConnection, keyed: KeyedRequest, claim: dict[str, Any], now: datetime
) -> RecordedResponse | None:
    """Claims the key with the row values ``claim`` (None), or answers from its record;
    raises 409 or 422."""
    insert = _CLAIM[connection.dialect.name]
    new_row = {"user_id": keyed.user_id, "key": keyed.key, **claim}
    for _ in range(3):
        if (await connection.execute(insert, new_row)).rowcount == 1:
            return None
        row = (await connection.execute(_LOCK_RECORD, keyed.where())).one_or_none()
        if row is None:  # released since the insert: insert again
            continue
        if row.created_at > now - RETENTION:
            if row.fingerprint != keyed.fingerprint:
                raise _reused()
            if row.completed_at is not None:
                return RecordedResponse(
                    status_code=row.status_code,
                    headers=dict(row.response_headers),
                    body=row.response_body.encode(),
                )
            if row.lease_expires_at > now:
                raise _in_flight()
        # Past 24 h, or abandoned by a process that died: forgotten, and claimed anew.
        await connection.execute(_FORGET, keyed.where())
    raise _in_flight()


async def claim_key(
    database: Database, keyed: KeyedRequest, *, now: datetime | None = None
) -> uuid.UUID | RecordedResponse:
    """Claims ``keyed``'s key in a transaction of its own: the claim's id, or the recorded
    response to answer instead. 409 while another request holds it, 422 when the key was
    used for a different request."""
    now = now or utc_now()
    claim_id = uuid.uuid4()
    claim = {
        "fingerprint": keyed.fingerprint,
        "claim_id": claim_id,
        "created_at": now,
        "lease_expires_at": now + LEASE_TIMEOUTS * timedelta(seconds=database.timeout),
    }
    async with database.transaction() as session:
        connection = await session.connection()
        recorded = await _decide(connection, keyed, claim, now)
        await connection.execute(_PURGE, {"cutoff": now - RETENTION})
    return claim_id if recorded is None else recorded


async def complete(
    session: AsyncSession,
    keyed: KeyedRequest,
    claim_id: uuid.UUID,
    recorded: RecordedResponse,
    *,
    now: datetime | None = None,
) -> None:
    """Records the response in the write's transaction (``session``); a 409, and the write
    rolls back, when the claim is no longer this request's (taken over after its lease)."""
    connection = await session.connection()
    result = await connection.execute(
        _COMPLETE,
        {
            **keyed.where(),
            "record_claim_id": claim_id,
            "completed_at": now or utc_now(),
            "status_code": recorded.status_code,
            "response_headers": recorded.headers,
            "response_body": recorded.body.decode(),
        },
    )
    if result.rowcount != 1:
        raise _in_flight()


async def release(database: Database, keyed: KeyedRequest, claim_id: uuid.UUID) -> None:
    """Deletes the claim if it is still this request's and in flight; best effort: when
    the database does not answer, the lease expires instead."""
    try:
        async with database.transaction() as session:
            connection = await session.connection()
            await connection.execute(_RELEASE, {**keyed.where(), "record_claim_id": claim_id})
    except StorageUnavailable:
        pass


# --- what a route holds -----------------------------------------------------------------


class Claim:
    """A creating route's hold on its request's key, if it has one.

    The route answers ``replay`` when it is set, without writing; otherwise it writes and
    answers ``await claim.answer(session, result, ...)``, which records the response in
    the write's transaction when the request has a key and hands ``result`` back unchanged
    when it has none."""

    __slots__ = ("_claim_id", "_keyed", "replay")

    def __init__(
        self,
        keyed: KeyedRequest | None = None,
        claim_id: uuid.UUID | None = None,
        replay: Response | None = None,
    ) -> None:
        self._keyed = keyed
        self._claim_id = claim_id
        self.replay = replay

    async def answer(
        self, session: AsyncSession, result: ModelT, *, status_code: int, response: Response
    ) -> ModelT | Response:
        """``result`` as the route's response: with a key, serialized (as FastAPI would)
        with the headers the route set on ``response``, and recorded in ``session``."""
        if self._keyed is None or self._claim_id is None:
            return result
        recorded = RecordedResponse(
            status_code=status_code,
            headers=dict(response.headers),
            body=result.model_dump_json(by_alias=True).encode(),
        )
        await complete(session, self._keyed, self._claim_id, recorded)
        return recorded.response(replayed=False)


UNKEYED = Claim()
"""The claim of a request without the header: ``answer`` hands the result back."""


@asynccontextmanager
async def claimed(database: Database, request: Request, *, user_id: str) -> AsyncIterator[Claim]:
    """The request's claim on its ``Idempotency-Key`` (``UNKEYED`` without one) for as long
    as the route runs and its transaction commits; released if anything fails in between
    (a refusal, a validation error, a commit that failed). Enter it before the write's
    transaction begins."""
    values = request.headers.getlist(HEADER)
    if not values:
        yield UNKEYED
        return
    keyed = await KeyedRequest.of(request, values, user_id=user_id)
    outcome = await claim_key(database, keyed)
    if isinstance(outcome, RecordedResponse):
        yield Claim(replay=outcome.response(replayed=True))
        return
    try:
        yield Claim(keyed, outcome)
    except BaseException:
        await release(database, keyed, outcome)
        raise
