"""``Idempotency-Key`` on the creating routes (``POST /notes``, ``POST /notes/{id}/shares``),
on SQLite and PostgreSQL: a retry gets the first answer, never a second write.

Finding 7 of issue 11: a 503 can hide a write that did commit, and a client that retried
created a duplicate. The real "commit reported as failed" case runs against a live server
in tests/e2e/test_idempotency.py; here are the rules, the races and the failure paths.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, update

from bastion import idempotency
from bastion.clock import utc_now
from bastion.config import Settings
from bastion.errors import Conflict
from bastion.idempotency import (
    IN_FLIGHT_DETAIL,
    MALFORMED_DETAIL,
    REUSED_MESSAGE,
    KeyedRequest,
    RecordedResponse,
    claim_key,
    fingerprint,
    parse_key,
)
from bastion.notes import service
from bastion.storage import StorageUnavailable
from bastion.storage.tables import IdempotencyRecord, User
from tests.conftest import FAST_HASHING, make_settings
from tests.notes import Account, account, create_note, share_count, stored_notes

NOTE = {"title": "Groceries", "body": "<p>oat milk</p>"}
MAX_NOTES = 5


@pytest.fixture
def settings(tmp_path: Path, database_url: str | None) -> Settings:
    return make_settings(
        tmp_path / "data",
        database_url=database_url,
        rate_limits_enabled=False,
        notes_max_count=MAX_NOTES,
        **FAST_HASHING,
    )


def keyed(who: Account, key: str) -> dict[str, str]:
    return {**who.headers, "Idempotency-Key": key}


async def post_note(
    client: httpx.AsyncClient, who: Account, key: str | None, body: Any = None
) -> httpx.Response:
    headers = keyed(who, key) if key is not None else who.headers
    return await client.post("/notes", json=NOTE if body is None else body, headers=headers)


async def post_share(
    client: httpx.AsyncClient, who: Account, note_id: str, username: str, key: str
) -> httpx.Response:
    return await client.post(
        f"/notes/{note_id}/shares", json={"username": username}, headers=keyed(who, key)
    )


async def set_records(app: FastAPI, **ago: timedelta) -> None:
    """Moves every record's time columns (``created_at=``, ``lease_expires_at=``) to that
    long before now."""
    now = utc_now()
    async with app.state.bastion.database.transaction() as session:
        await session.execute(
            update(IdempotencyRecord).values({name: now - delta for name, delta in ago.items()})
        )


async def records(app: FastAPI) -> list[IdempotencyRecord]:
    async with app.state.bastion.database.transaction() as session:
        return list((await session.scalars(select(IdempotencyRecord))).all())


def assert_problem(response: httpx.Response, status: int, detail: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem: dict[str, Any] = response.json()
    assert problem["status"] == status
    assert problem["detail"] == detail
    assert problem["request_id"] == response.headers["x-request-id"]
    return problem


def assert_reused(response: httpx.Response) -> None:
    problem = assert_problem(response, 422, "The request is invalid; see errors.")
    assert problem["errors"] == [{"loc": ["header", "Idempotency-Key"], "msg": REUSED_MESSAGE}]


def assert_replay_of(replay: httpx.Response, first: httpx.Response) -> None:
    """The first response again (status, body bytes, Location), marked as a replay."""
    assert replay.status_code == first.status_code, replay.text
    assert replay.content == first.content
    assert replay.headers.get("location") == first.headers.get("location")
    assert replay.headers["content-type"] == first.headers["content-type"]
    assert replay.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers


# -- the rules -------------------------------------------------------------------------------


async def test_the_same_key_and_body_answer_the_first_response(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    alice = await account(client, "alice")
    first = await post_note(client, alice, "order-2026-0001")
    assert first.status_code == 201, first.text
    assert first.headers["location"] == f"/notes/{first.json()['id']}"

    again = await post_note(client, alice, "order-2026-0001")
    assert_replay_of(again, first)
    # The draft's structured-field form names the same key as the bare token.
    quoted = await post_note(client, alice, '"order-2026-0001"')
    assert_replay_of(quoted, first)

    assert [str(note.id) for note in await stored_notes(app)] == [first.json()["id"]]
    (record,) = await records(app)
    assert (record.key, record.status_code) == ("order-2026-0001", 201)
    assert record.completed_at is not None


async def test_a_keyed_answer_is_the_answer_without_a_key(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """The key changes nothing in the first answer, and without it nothing is recorded."""
    alice = await account(client, "alice")
    plain = await post_note(client, alice, None)
    assert plain.status_code == 201, plain.text
    assert await records(app) == []
    with_key = await post_note(client, alice, "k1")
    assert with_key.status_code == 201
    assert with_key.headers["content-type"] == plain.headers["content-type"]
    assert with_key.json().keys() == plain.json().keys()
    read = await client.get(with_key.headers["location"], headers=alice.headers)
    assert read.json() == with_key.json()


async def test_the_same_key_with_another_request_is_422(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    alice = await account(client, "alice")
    await account(client, "bob")
    first = await post_note(client, alice, "k1")
    assert first.status_code == 201
    assert_reused(await post_note(client, alice, "k1", {**NOTE, "title": "Other"}))
    # The raw bytes count: the same JSON written differently is another body.
    spaced = await client.post(
        "/notes",
        content=b'{"title": "Groceries", "body": "<p>oat milk</p>"}',
        headers={**keyed(alice, "k1"), "Content-Type": "application/json"},
    )
    assert_reused(spaced)
    # And so do the method and the path.
    assert_reused(await post_share(client, alice, first.json()["id"], "bob", "k1"))
    assert len(await stored_notes(app)) == 1
    assert await share_count(app) == 0


async def test_keys_are_per_user(app: FastAPI, client: httpx.AsyncClient) -> None:
    alice = await account(client, "alice")
    bob = await account(client, "bob")
    alices = await post_note(client, alice, "k1")
    bobs = await post_note(client, bob, "k1")
    assert bobs.status_code == 201, bobs.text
    assert "idempotent-replayed" not in bobs.headers
    assert bobs.json()["owner_id"] == bob.id
    assert bobs.json()["id"] != alices.json()["id"]
    # Another body from bob is his own business, not a reuse of alice's key.
    assert (await post_note(client, bob, "k2", {**NOTE, "title": "b"})).status_code == 201
    assert len(await stored_notes(app)) == 3


@pytest.mark.parametrize(
    "value",
    [
        "",
        '""',
        "x" * 256,
        '"' + "x" * 256 + '"',
        "two words",
        "caf\xe9",
        "tab\there",
        '"unterminated',
        '"in"side"',
        '"bad \\escape"',
        '"trailing\\"',
        '"k";param=1',
        'a"b',
    ],
)
async def test_a_malformed_key_is_400_and_stores_nothing(
    app: FastAPI, client: httpx.AsyncClient, value: str
) -> None:
    alice = await account(client, "alice")
    response = await client.post(
        "/notes", json=NOTE, headers=httpx.Headers([*alice.headers.items(),
                                                    ("Idempotency-Key", value)], "latin-1")
    )
    assert_problem(response, 400, MALFORMED_DETAIL)
    assert await stored_notes(app) == []
    assert await records(app) == []


async def test_two_key_fields_are_400(app: FastAPI, client: httpx.AsyncClient) -> None:
    alice = await account(client, "alice")
    headers = httpx.Headers(
        [*alice.headers.items(), ("Idempotency-Key", "a"), ("Idempotency-Key", "b")]
    )
    assert_problem(await client.post("/notes", json=NOTE, headers=headers), 400, MALFORMED_DETAIL)
    assert await stored_notes(app) == []


def test_the_keys_that_parse() -> None:
    assert parse_key("a") == "a"
    assert parse_key("x" * 255) == "x" * 255
    assert parse_key('"' + "x" * 255 + '"') == "x" * 255
    assert parse_key(" 8e2f-11aa ") == "8e2f-11aa"  # surrounding whitespace is not the key's
    assert parse_key('"with space"') == "with space"
    assert parse_key('"q\\"uote\\\\"') == 'q"uote\\'
    assert parse_key("!#$%&'()*+,-./:;<=>?@[]^_`{|}~") == "!#$%&'()*+,-./:;<=>?@[]^_`{|}~"


def test_a_fingerprint_tells_every_part_apart() -> None:
    base = fingerprint("POST", "/notes", b"{}")
    assert fingerprint("POST", "/notes", b"{}") == base
    assert len({
        base,
        fingerprint("PUT", "/notes", b"{}"),
        fingerprint("POST", "/notes/", b"{}"),
        fingerprint("POST", "/notes", b"{} "),
        fingerprint("POST", "/notes\x00", b"{}"[1:]),
    }) == 5


# -- in flight, races, leases ----------------------------------------------------------------


async def hold_claim(app: FastAPI, who: Account, key: str, body: dict[str, Any]) -> uuid.UUID:
    """What a first request in flight holds: its claim, taken as the route would."""
    request = KeyedRequest(
        user_id=uuid.UUID(who.id),
        key=key,
        fingerprint=fingerprint("POST", "/notes", httpx.Request("POST", "/", json=body).content),
    )
    claim = await claim_key(app.state.bastion.database, request)
    assert isinstance(claim, uuid.UUID)
    return claim


async def test_a_request_whose_first_is_in_flight_is_409(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    alice = await account(client, "alice")
    await hold_claim(app, alice, "k1", NOTE)
    (held,) = await records(app)
    assert (held.completed_at, held.status_code, held.response_headers) == (None, None, None)
    assert_problem(await post_note(client, alice, "k1"), 409, IN_FLIGHT_DETAIL)
    # A different body with the key in flight is still a reuse of the key.
    assert_reused(await post_note(client, alice, "k1", {**NOTE, "title": "Other"}))
    assert await stored_notes(app) == []


async def test_an_abandoned_claim_is_taken_over_after_its_lease(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """A process that died holding a claim blocks the key only until the lease ends."""
    alice = await account(client, "alice")
    await hold_claim(app, alice, "k1", NOTE)
    assert (await post_note(client, alice, "k1")).status_code == 409
    await set_records(app, lease_expires_at=timedelta(seconds=1))
    taken_over = await post_note(client, alice, "k1")
    assert taken_over.status_code == 201, taken_over.text
    assert_replay_of(await post_note(client, alice, "k1"), taken_over)
    assert len(await stored_notes(app)) == 1


async def test_a_write_whose_claim_was_taken_over_rolls_back(app: FastAPI) -> None:
    """Only the holder of the claim can record the answer, so two writers for one key never
    both commit, however long the first one took."""
    database = app.state.bastion.database
    user_id = uuid.uuid4()
    async with database.transaction() as session:
        now = utc_now()
        session.add(User(id=user_id, username="ann", email="ann@example.com", age=30,
                         password_hash="-", roles=["user"], created_at=now, updated_at=now))
    request = KeyedRequest(user_id=user_id, key="k", fingerprint="f" * 64)
    first = await claim_key(database, request)
    assert isinstance(first, uuid.UUID)
    await set_records(app, lease_expires_at=timedelta(seconds=1))
    second = await claim_key(database, request)
    assert isinstance(second, uuid.UUID) and second != first

    answer = RecordedResponse(status_code=201, headers={}, body=b"{}")
    with pytest.raises(Conflict):
        async with database.transaction() as session:
            await idempotency.complete(session, request, first, answer)
    # The stale holder's release does not free the new holder's claim either.
    await idempotency.release(database, request, first)
    async with database.transaction() as session:
        await idempotency.complete(session, request, second, answer)
    assert await claim_key(database, request) == answer


Poster = Callable[[], Awaitable[httpx.Response]]


async def race(slowed: str, monkeypatch: pytest.MonkeyPatch, post: Poster) -> list[httpx.Response]:
    """Two identical keyed requests; the first is held inside its write (after its claim)
    while the second arrives, then let go."""
    entered, proceed = asyncio.Event(), asyncio.Event()
    original = getattr(service, slowed)

    async def slow(*args: Any, **kwargs: Any) -> Any:
        if not entered.is_set():
            entered.set()
            await proceed.wait()
        return await original(*args, **kwargs)

    monkeypatch.setattr(service, slowed, slow)

    async def second() -> httpx.Response:
        await entered.wait()
        task = asyncio.ensure_future(post())
        await asyncio.sleep(0.2)  # it reaches its claim (PostgreSQL) or the write lock (SQLite)
        proceed.set()
        return await task

    return list(await asyncio.gather(post(), second()))


def assert_one_winner(first: httpx.Response, second: httpx.Response, status: int) -> None:
    assert first.status_code == status, first.text
    if second.status_code == 409:
        assert second.json()["detail"] == IN_FLIGHT_DETAIL
    else:
        assert_replay_of(second, first)


async def test_racing_creates_make_one_note(
    app: FastAPI, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = await account(client, "alice")
    first, second = await race("create_note", monkeypatch, lambda: post_note(client, alice, "k"))
    assert_one_winner(first, second, 201)
    assert len(await stored_notes(app)) == 1
    assert_replay_of(await post_note(client, alice, "k"), first)


async def test_racing_shares_share_once(
    app: FastAPI, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = await account(client, "alice")
    await account(client, "bob")
    note = await create_note(client, alice)

    def post() -> Awaitable[httpx.Response]:
        return post_share(client, alice, note["id"], "bob", "s")

    first, second = await race("share_note", monkeypatch, post)
    assert_one_winner(first, second, 200)
    assert first.json()["shared_with"] == ["bob"]
    assert await share_count(app) == 1


# -- shares ----------------------------------------------------------------------------------


async def test_a_share_is_answered_again(app: FastAPI, client: httpx.AsyncClient) -> None:
    alice = await account(client, "alice")
    await account(client, "bob")
    await account(client, "carol")
    note = await create_note(client, alice)
    first = await post_share(client, alice, note["id"], "bob", "s1")
    assert first.status_code == 200, first.text
    assert "location" not in first.headers
    # Shared with carol meanwhile: the replay is still the first answer, not today's note.
    assert (await post_share(client, alice, note["id"], "carol", "s2")).status_code == 200
    assert_replay_of(await post_share(client, alice, note["id"], "bob", "s1"), first)
    assert_reused(await post_share(client, alice, note["id"], "carol", "s1"))
    assert await share_count(app) == 2


async def test_the_note_is_checked_before_a_replay(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """Every note route checks the note first, a replayed share too: once the note is gone
    the answer is the 404 of any missing note. A created note's replay needs no note."""
    alice = await account(client, "alice")
    await account(client, "bob")
    created = await post_note(client, alice, "n1")
    shared = await post_share(client, alice, created.json()["id"], "bob", "s1")
    assert shared.status_code == 200
    deleted = await client.delete(created.headers["location"], headers=alice.headers)
    assert deleted.status_code == 204
    gone = await post_share(client, alice, created.json()["id"], "bob", "s1")
    assert_problem(gone, 404, "The note does not exist.")
    assert_replay_of(await post_note(client, alice, "n1"), created)
    assert await stored_notes(app) == []


# -- failures release the key ----------------------------------------------------------------


async def test_a_refused_write_does_not_hold_its_key(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """Refusals store nothing and are not recorded: the key is free again at once, and a
    retry is decided on the state of its own moment."""
    alice = await account(client, "alice")
    note = await create_note(client, alice)

    unknown = await post_share(client, alice, note["id"], "nobody", "s1")
    assert unknown.status_code == 422, unknown.text
    assert await records(app) == []
    # Refused before the route runs (a share claims first): a note that is not the caller's,
    # a body that fails validation.
    missing = await post_share(client, alice, str(uuid.uuid4()), "nobody", "s1")
    assert missing.status_code == 404, missing.text
    invalid = await client.post(
        f"/notes/{note['id']}/shares",
        json={"username": "nobody", "read_only": True},
        headers=keyed(alice, "s1"),
    )
    assert invalid.status_code == 422, invalid.text
    assert await records(app) == []
    await account(client, "nobody")
    retried = await post_share(client, alice, note["id"], "nobody", "s1")
    assert retried.status_code == 200, retried.text
    assert "idempotent-replayed" not in retried.headers

    too_big = {"title": "t", "body": "x" * (64 * 1024 + 1)}
    refused = await post_note(client, alice, "n1", too_big)
    assert refused.status_code == 422, refused.text
    unknown_field = await post_note(client, alice, "n1", {**NOTE, "owner_id": alice.id})
    assert unknown_field.status_code == 422
    assert (await post_note(client, alice, "n1")).status_code == 201

    for _ in range(MAX_NOTES - 2):
        await create_note(client, alice)
    over_quota = await post_note(client, alice, "n2")
    assert over_quota.status_code == 409, over_quota.text
    assert "Nothing was stored" in over_quota.json()["detail"]
    assert {record.key for record in await records(app)} == {"s1", "n1"}
    await client.delete(f"/notes/{note['id']}", headers=alice.headers)
    assert (await post_note(client, alice, "n2")).status_code == 201


async def test_a_write_that_fails_releases_its_key(
    app: FastAPI, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 503 of a write that did not commit leaves no claim behind: the retry writes."""
    alice = await account(client, "alice")

    async def unavailable(*_args: Any, **_kwargs: Any) -> Any:
        raise StorageUnavailable

    monkeypatch.setattr(service, "create_note", unavailable)
    assert (await post_note(client, alice, "n1")).status_code == 503
    assert await records(app) == []
    monkeypatch.undo()
    retried = await post_note(client, alice, "n1")
    assert retried.status_code == 201, retried.text
    assert "idempotent-replayed" not in retried.headers


async def test_a_record_older_than_24_hours_answers_no_more(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    alice = await account(client, "alice")
    first = await post_note(client, alice, "k1")
    await set_records(app, created_at=timedelta(hours=24, seconds=1))
    fresh = await post_note(client, alice, "k1", {**NOTE, "title": "a new request"})
    assert fresh.status_code == 201, fresh.text
    assert fresh.json()["id"] != first.json()["id"]
    assert len(await stored_notes(app)) == 2


async def test_claims_purge_records_older_than_24_hours(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """Rows past 24 h go with later claims, anyone's, so the table does not grow."""
    alice = await account(client, "alice")
    bob = await account(client, "bob")
    for number in range(3):
        assert (await post_note(client, alice, f"old-{number}")).status_code == 201
    await set_records(app, created_at=timedelta(hours=25))
    assert (await post_note(client, bob, "new")).status_code == 201
    assert [(record.key, str(record.user_id)) for record in await records(app)] == [
        ("new", bob.id)
    ]


# -- documentation ---------------------------------------------------------------------------


async def test_the_header_and_its_answers_are_documented(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    for path, success in [("/notes", "201"), ("/notes/{note_id}/shares", "200")]:
        operation = document["paths"][path]["post"]
        (parameter,) = [p for p in operation["parameters"] if p["in"] == "header"]
        assert parameter["name"] == "Idempotency-Key"
        assert not parameter.get("required", False)
        responses = operation["responses"]
        assert {"400", "409", "422"} <= responses.keys()
        assert "Idempotency-Key" in responses["409"]["description"]
        assert "Idempotent-Replayed" in responses[success]["headers"]
        assert responses[success]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/NotePublic"
        }
