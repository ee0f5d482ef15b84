"""Injection: hostile strings in every input of /notes, on SQLite and PostgreSQL.

Each string goes into the search text, the note id, the title and the body, the username
to share with, ``limit``, ``all`` and ``cursor``. The answer is always a deliberate 2xx or
4xx, never a 500; nobody sees a note that is not theirs; what is stored is exactly what
was sent (the title) or its sanitized form (the body); and the notes table is intact after.
The big XSS corpus lives with the sanitizer's tests; the body checks here are small.
"""

from __future__ import annotations

import unicodedata
import uuid
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from bastion.config import Settings
from bastion.notes.search import as_stored_html_text
from bastion.security.sanitize import sanitize_html
from bastion.security.text import holds_refused_character
from tests.conftest import FAST_HASHING, make_settings
from tests.notes import account, create_note, list_all_pages, stored_notes

INJECTIONS = [
    "' OR '1'='1",
    "%' OR 1=1 --",
    '"; DROP TABLE notes; --',
    "'; DELETE FROM notes WHERE ''='",
    "' UNION SELECT id, owner_id, title, body, created_at, updated_at FROM notes --",
    "1; SELECT pg_sleep(5)",
    "') OR ('a'='a",
    "\\",
    "\\\\",
    "\\'",
    "%",
    "_",
    "%_%",
    "[a-z]*",
    "'",
    '"',
    "`",
    "$1",
    "?",
    ":title",
    "%(title)s",
    "{}",
    "null",
    "\x00",
    "a\x00b",
    "\r\nX-Injected: 1",
    "../../etc/passwd",
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "é",
    "İı",
    "ß",
    "ǅ",
    "🙂👩‍💻",
    "\u202eevil",
    "\ufeffbom",
    "\uffff",
    "x" * 10_000,
]


@pytest.fixture
def settings(tmp_path: Path, database_url: str | None) -> Settings:
    # Hundreds of requests from one client in a second: rate limits are not under test.
    return make_settings(
        tmp_path / "data", database_url=database_url, rate_limits_enabled=False, **FAST_HASHING
    )


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def fold(value: str) -> str:
    return value.translate(_ASCII_LOWER)


async def test_hostile_search_text(app: FastAPI, client: httpx.AsyncClient) -> None:
    alice = await account(client, "alice")
    mallory = await account(client, "mallory")
    secret = await create_note(client, alice, "alice's secret", "<p>secret</p>")
    await create_note(client, mallory, "ordinary", "<p>text</p>")

    for hostile in INJECTIONS:
        for params in ({"q": hostile}, {"q": hostile, "all": "true"}):
            response = await client.get("/notes", params=params, headers=mallory.headers)
            assert response.status_code in {200, 403, 422}, (hostile, response.text)
            assert secret["id"] not in response.text
            if response.status_code == 200:
                assert response.json()["items"] == [], hostile
    for hostile in INJECTIONS:
        for name in ("limit", "all", "cursor"):
            response = await client.get("/notes", params={name: hostile}, headers=mallory.headers)
            expected = {400, 422} if name == "cursor" else {422}
            assert response.status_code in expected, (name, hostile, response.text)
            assert secret["id"] not in response.text

    (alices, *_) = [note for note in await stored_notes(app) if note.title == "alice's secret"]
    assert alices.body == "<p>secret</p>"
    async with app.state.bastion.database.transaction() as session:
        assert (await session.scalar(text("SELECT count(*) FROM notes"))) == 2


async def test_hostile_note_ids(app: FastAPI, client: httpx.AsyncClient) -> None:
    alice = await account(client, "alice")
    mallory = await account(client, "mallory")
    secret = await create_note(client, alice, "alice's secret")
    for hostile in [*INJECTIONS, f"{secret['id']}' OR '1'='1", f"{secret['id']}%00", "*"]:
        encoded = quote(hostile, safe="")
        for method, path, body in [
            ("GET", f"/notes/{encoded}", None),
            ("PATCH", f"/notes/{encoded}", {"title": "owned"}),
            ("DELETE", f"/notes/{encoded}", None),
            ("POST", f"/notes/{encoded}/shares", {"username": "mallory"}),
        ]:
            response = await client.request(method, path, json=body, headers=mallory.headers)
            assert response.status_code == 404, (method, hostile, response.text)
            assert secret["id"] not in response.text
    read = await client.get(f"/notes/{secret['id']}", headers=alice.headers)
    assert read.json() == secret
    assert [note.title for note in await stored_notes(app)] == ["alice's secret"]


async def test_hostile_titles_and_bodies_are_stored_verbatim_or_refused(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    alice = await account(client, "alice")
    mallory = await account(client, "mallory")
    await create_note(client, mallory, "mallory's own", "<p>nothing</p>")
    created: dict[str, str] = {}
    for hostile in INJECTIONS:
        response = await client.post(
            "/notes", json={"title": hostile, "body": hostile}, headers=alice.headers
        )
        if response.status_code == 422:
            # Only a title that is not 1-200 characters of plain text is refused (PlainText
            # refuses control and formatting characters, even the ZWJ of emoji sequences),
            # and a body only for a control character (but tab and line breaks).
            refused = [error["loc"] for error in response.json()["errors"]]
            body_refused = holds_refused_character(hostile)
            assert refused == [["body", "title"]] + ([["body", "body"]] if body_refused else [])
            assert len(hostile) > 200 or any(
                unicodedata.category(character) in {"Cc", "Cf"} for character in hostile
            ), repr(hostile)
            fallback = await client.post(
                "/notes", json={"title": "fallback", "body": hostile}, headers=alice.headers
            )
            if body_refused:
                assert fallback.status_code == 422, repr(hostile)
                continue
            assert fallback.status_code == 201, repr(hostile)
            assert fallback.json()["body"] == sanitize_html(hostile)
            continue
        assert response.status_code == 201, (hostile, response.text)
        note = response.json()
        assert note["title"] == hostile
        assert note["body"] == sanitize_html(hostile)
        for needle in ("<script", "onerror", "\x00"):
            assert needle not in note["body"]
        created[note["id"]] = hostile
        read = await client.get(f"/notes/{note['id']}", headers=alice.headers)
        assert read.json() == note

    stored = {str(note.id): note for note in await stored_notes(app)}
    for note_id, hostile in created.items():
        assert stored[note_id].title == hostile
        assert stored[note_id].body == sanitize_html(hostile)

    # Each stored title is found by searching for itself, and every hit really contains it.
    for note_id, hostile in created.items():
        hits = await list_all_pages(client, alice, q=hostile)
        assert note_id in {hit["id"] for hit in hits}, repr(hostile)
        for hit in hits:
            in_title = fold(hostile) in fold(hit["title"])
            in_body = fold(as_stored_html_text(hostile)) in fold(hit["body"])
            assert in_title or in_body, (hostile, hit["title"])
        assert "mallory's own" not in {hit["title"] for hit in hits}
    async with app.state.bastion.database.transaction() as session:
        count = await session.scalar(text("SELECT count(*) FROM notes"))
    assert count == len(stored)


async def test_lone_surrogates_and_oversized_bodies(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """A JSON ``\\ud800`` escape is not text any database can store: 422, not a 500."""
    alice = await account(client, "alice")
    note = await create_note(client, alice)
    headers = {**alice.headers, "content-type": "application/json"}
    for method, url, raw in [
        ("POST", "/notes", b'{"title": "\\ud800", "body": "b"}'),
        ("POST", "/notes", b'{"title": "t", "body": "\\udfff"}'),
        ("PATCH", f"/notes/{note['id']}", b'{"title": "a\\ud83d"}'),
        ("PATCH", f"/notes/{note['id']}", b'{"body": "\\ud800\\u0000"}'),
        ("POST", f"/notes/{note['id']}/shares", b'{"username": "bob\\ud800"}'),
    ]:
        response = await client.request(method, url, content=raw, headers=headers)
        assert response.status_code == 422, (url, raw, response.text)

    huge = await client.post(
        "/notes", json={"title": "t", "body": "x" * 2_000_000}, headers=alice.headers
    )
    assert huge.status_code == 413
    assert len(await stored_notes(app)) == 1


async def test_hostile_usernames_to_share_with(app: FastAPI, client: httpx.AsyncClient) -> None:
    alice = await account(client, "alice")
    await account(client, "bob")
    note = await create_note(client, alice)
    for hostile in [*INJECTIONS, "bob' --", "BOB'", "b%", "bo_", "bob\x00", " bob", "bob "]:
        response = await client.post(
            f"/notes/{note['id']}/shares", json={"username": hostile}, headers=alice.headers
        )
        assert response.status_code == 422, (hostile, response.text)
        assert response.json()["errors"][0]["loc"] == ["body", "username"]
    read = await client.get(f"/notes/{note['id']}", headers=alice.headers)
    assert read.json()["shared_with"] == []
    # And a fresh random id is just another missing note.
    missing = await client.post(
        f"/notes/{uuid.uuid4()}/shares", json={"username": "bob"}, headers=alice.headers
    )
    assert missing.status_code == 404
