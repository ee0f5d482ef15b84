"""Per-user limits on stored notes (count and UTF-8 bytes), on SQLite and PostgreSQL.

Over either limit, creating (or growing) a note is a 409 problem and stores nothing; the
decision is taken in the write's transaction, so concurrent creates cannot overshoot.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from pydantic import ValidationError

from bastion.config import Settings
from bastion.notes.quota import stored_size
from bastion.security.sanitize import sanitize_html
from tests.conftest import FAST_HASHING, make_settings
from tests.notes import account, create_note, share, stored_notes

MAX_COUNT = 3
# "t" and "<p>é</p>": 1 + 9 bytes in UTF-8 (é is two), although only 8 characters.
FITTING_BODY = "<p>é</p>"
MAX_BYTES = MAX_COUNT * stored_size("t", FITTING_BODY)


@pytest.fixture
def settings(tmp_path: Path, database_url: str | None) -> Settings:
    return make_settings(
        tmp_path / "data",
        database_url=database_url,
        rate_limits_enabled=False,
        notes_max_count=MAX_COUNT,
        notes_max_bytes=MAX_BYTES,
        **FAST_HASHING,
    )


def assert_over_quota(response: httpx.Response, word: str) -> None:
    assert response.status_code == 409, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == 409
    assert word in problem["detail"]
    assert "Nothing was stored" in problem["detail"]


async def test_the_count_limit(app: FastAPI, client: httpx.AsyncClient) -> None:
    alice = await account(client, "alice")
    bob = await account(client, "bob")
    notes = [await create_note(client, alice, "t", "<p>x</p>") for _ in range(MAX_COUNT)]

    refused = await client.post("/notes", json={"title": "t", "body": "x"}, headers=alice.headers)
    assert_over_quota(refused, f"at most {MAX_COUNT} notes")
    assert len(await stored_notes(app)) == MAX_COUNT

    # Limits are per user, and a share stores nothing for the user it is shared with.
    for note in notes:
        assert (await share(client, alice, note["id"], "bob")).status_code == 200
    assert (await create_note(client, bob, "t", "<p>x</p>"))["owner_id"] == bob.id

    deleted = await client.delete(f"/notes/{notes[0]['id']}", headers=alice.headers)
    assert deleted.status_code == 204
    await create_note(client, alice, "t", "<p>x</p>")


async def test_the_byte_limit_counts_stored_utf8(app: FastAPI, client: httpx.AsyncClient) -> None:
    alice = await account(client, "alice")
    # Counted after sanitizing: the script is never stored, so it takes no room.
    hostile = FITTING_BODY + "<script>" + "x" * MAX_BYTES + "</script>"
    assert sanitize_html(hostile) == FITTING_BODY
    first = await create_note(client, alice, "t", hostile)
    assert first["body"] == FITTING_BODY
    await create_note(client, alice, "t", FITTING_BODY)
    # One byte more than is left: refused, though it is well under the count limit.
    too_big = {"title": "tt", "body": FITTING_BODY}
    refused = await client.post("/notes", json=too_big, headers=alice.headers)
    assert_over_quota(refused, f"at most {MAX_BYTES} bytes")
    assert len(await stored_notes(app)) == 2
    await create_note(client, alice, "t", FITTING_BODY)
    assert [note.size_bytes for note in await stored_notes(app)] == [MAX_BYTES // MAX_COUNT] * 3


async def test_growing_a_note_needs_room_shrinking_never_does(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    alice = await account(client, "alice")
    notes = [await create_note(client, alice, "t", FITTING_BODY) for _ in range(MAX_COUNT)]
    url = f"/notes/{notes[0]['id']}"

    grown = await client.patch(url, json={"title": "tt"}, headers=alice.headers)
    assert_over_quota(grown, "bytes")
    assert (await client.get(url, headers=alice.headers)).json() == notes[0]

    same_size = await client.patch(url, json={"title": "u"}, headers=alice.headers)
    assert same_size.status_code == 200
    shrunk = await client.patch(url, json={"body": "<p>e</p>"}, headers=alice.headers)
    assert shrunk.status_code == 200
    regrown = await client.patch(url, json={"title": "uu"}, headers=alice.headers)
    assert regrown.status_code == 200, regrown.text
    stored = {str(note.id): note for note in await stored_notes(app)}
    assert stored[notes[0]["id"]].size_bytes == stored_size("uu", "<p>e</p>")


@pytest.mark.parametrize("limit", ["count", "bytes"])
async def test_concurrent_creates_at_the_limit_store_exactly_the_limit(
    app: FastAPI, client: httpx.AsyncClient, limit: str
) -> None:
    """Without the owner's writers serialised and the usage read afterwards, these creates
    all read the same usage on PostgreSQL and all pass."""
    alice = await account(client, "alice")
    # By bytes, 2 of these fit (2 x 14 <= 30 bytes): the byte limit bites before the count.
    body, fits = ("<p>ééé</p>", 2) if limit == "bytes" else ("<p>x</p>", MAX_COUNT)

    async def attempt() -> int:
        response = await client.post(
            "/notes", json={"title": "t", "body": body}, headers=alice.headers
        )
        return response.status_code

    attempts = 4 * MAX_COUNT
    statuses = await asyncio.gather(*(attempt() for _ in range(attempts)))
    assert sorted(statuses) == [201] * fits + [409] * (attempts - fits)
    assert len(await stored_notes(app)) == fits


def test_limits_are_positive_and_default_to_the_contract(tmp_path: Path) -> None:
    defaults = make_settings(tmp_path)
    assert (defaults.notes_max_count, defaults.notes_max_bytes) == (10_000, 52_428_800)
    for name in ("notes_max_count", "notes_max_bytes"):
        for bad in (0, -1, "many"):
            with pytest.raises(ValidationError):
                make_settings(tmp_path, **{name: bad})


async def test_openapi_declares_the_409(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert "409" in paths["/notes"]["post"]["responses"]
    assert "409" in paths["/notes/{note_id}"]["patch"]["responses"]
