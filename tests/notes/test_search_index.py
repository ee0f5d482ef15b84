"""Indexed search: the same answers on SQLite and PostgreSQL as a plain Python substring
check, and an index that the database really uses (FTS5 trigram / pg_trgm GIN)."""

from __future__ import annotations

import string
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import text

from bastion.app import create_app
from bastion.notes.listing import _scanned
from bastion.notes.search import as_stored_html_text, search_parameters
from bastion.storage.migrate import upgrade_to_head
from bastion.storage.tables import NOTE_TRIGRAM_INDEXES
from tests.conftest import FAST_HASHING, make_settings
from tests.notes import account, create_note, list_all_pages
from tests.servers.postgres import PostgresServer

NOTES = [
    ("100% sure", "<p>50% off</p>"),
    ("snake_case", "<p>under_score</p>"),
    ("back\\slash", "<p>C:\\dir</p>"),
    ("it's", "<p>O'Brien</p>"),
    ('say "hi"', '<p>"quoted"</p>'),
    ("Café", "<p>ÉCOLE</p>"),
    ("café crème", "<p>école</p>"),
    ("Tom & Jerry", "<p>Tom & Jerry &amp; co</p>"),
    ("a<b", "<p>a<b and x>y</p>"),
    ("MiXeD CaSe", "<p>UPPER lower</p>"),
    ("ab", "<p>x</p>"),
    ("İstanbul straße", "<p>ǅ 🙂</p>"),
    ('NEAR(a b) OR title:x * "', "<p>^start *</p>"),
]
QUERIES = [
    "%", "_", "\\", "'", '"', "%_", "50%", "e_c", "k\\s", "\\dir", "it's", "O'B", '"hi"',
    '""', "é", "É", "CAFÉ", "café", "caf", "ÉCOLE", "école", "mixed", "MIXED CASE", "upper",
    "a", "ab", "x", "A", "&", "&amp;", "amp", "Tom & Jerry", "& co", "<", "a<b", ">y", "ß",
    "straße", "İ", "i", "🙂", "ǅ", "NEAR(", "title:x", "*", "OR", "^start", " ", "a b",
    "nothing here",
]


def fold(value: str) -> str:
    return value.translate(str.maketrans(string.ascii_uppercase, string.ascii_lowercase))


def expected_titles(stored: list[dict[str, Any]], q: str) -> list[str]:
    """The specification: a literal substring, A-Z folded, in the title or the stored body."""
    return sorted(
        note["title"]
        for note in stored
        if fold(q) in fold(note["title"]) or fold(as_stored_html_text(q)) in fold(note["body"])
    )


@asynccontextmanager
async def running(settings_dir: Path, database_url: str | None) -> AsyncIterator[FastAPI]:
    settings = make_settings(
        settings_dir, database_url=database_url, rate_limits_enabled=False, **FAST_HASHING
    )
    application = create_app(settings)
    await upgrade_to_head(application.state.bastion.database.engine)
    async with application.router.lifespan_context(application):
        yield application


async def search_results(app: FastAPI) -> tuple[list[dict[str, Any]], dict[str, list[str]]]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        alice = await account(client, "alice")
        bob = await account(client, "bob")
        stored = [await create_note(client, alice, title, body) for title, body in NOTES]
        # Bob's notes hold every query: a hit for alice from them would be a leak.
        await create_note(client, bob, "bob", "<p>" + " ".join(QUERIES) + "</p>")
        results = {
            q: sorted(note["title"] for note in await list_all_pages(client, alice, q=q))
            for q in QUERIES
        }
    return stored, results


async def test_tricky_queries_answer_alike_on_both_backends_and_as_python(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    name = await postgres_server.create_database()
    try:
        async with running(tmp_path / "sqlite", None) as sqlite_app:
            stored, on_sqlite = await search_results(sqlite_app)
        async with running(tmp_path / "pg", postgres_server.url(name)) as pg_app:
            _, on_postgresql = await search_results(pg_app)
    finally:
        await postgres_server.drop_database(name)
    assert on_sqlite == on_postgresql
    assert on_sqlite == {q: expected_titles(stored, q) for q in QUERIES}
    assert on_sqlite["CAFÉ"] == [] and on_sqlite["café"] == ["Café", "café crème"]  # é is not É
    assert on_sqlite["&"] == ["Tom & Jerry"]


def _plan_statement(q: str) -> Any:
    parameters, indexed = search_parameters(q)
    statement = _scanned(all_notes=False, indexed=indexed, after=False)
    return statement.params(viewer_id=uuid.uuid4(), limit=21, **parameters)


async def test_search_uses_the_index(app: FastAPI, client: httpx.AsyncClient) -> None:
    alice = await account(client, "alice")
    for number in range(30):
        await create_note(client, alice, f"note {number}", f"<p>body {number} text</p>")
    database = app.state.bastion.database
    statement = _plan_statement("body 1").compile(
        dialect=database.engine.dialect, compile_kwargs={"literal_binds": True}
    )
    async with database.transaction() as session:
        if database.backend == "sqlite":
            rows = await session.execute(text(f"EXPLAIN QUERY PLAN {statement}"))
            plan = " ".join(str(row[-1]) for row in rows)
            assert "VIRTUAL TABLE" in plan and "notes_search" in plan, plan
        else:
            await session.execute(text("SET LOCAL enable_seqscan = off"))
            rows = await session.execute(text(f"EXPLAIN {statement}"))
            plan = " ".join(str(row[0]) for row in rows)
            assert any(index in plan for index in NOTE_TRIGRAM_INDEXES), plan


async def test_the_sqlite_index_follows_every_write(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """Updates, deletes and a deleted user's cascade keep the FTS5 table in step (triggers);
    on PostgreSQL the index is part of the table and this is a plain search test."""
    alice = await account(client, "alice")
    bob = await account(client, "bob")
    note = await create_note(client, alice, "first words", "<p>old text</p>")
    await create_note(client, bob, "bob's words", "<p>old text</p>")
    patched = await client.patch(
        f"/notes/{note['id']}", json={"body": "<p>new text</p>"}, headers=alice.headers
    )
    assert patched.status_code == 200
    assert await list_all_pages(client, alice, q="old text") == []
    assert [hit["id"] for hit in await list_all_pages(client, alice, q="NEW TEXT")] == [note["id"]]
    deleted = await client.delete(f"/notes/{note['id']}", headers=alice.headers)
    assert deleted.status_code == 204
    assert await list_all_pages(client, alice, q="words") == []

    database = app.state.bastion.database
    async with database.transaction() as session:
        await session.execute(text("DELETE FROM users WHERE username = 'bob'"))
    if database.backend != "sqlite":
        return
    async with database.transaction() as session:
        keys = await session.scalar(text("SELECT count(*) FROM note_search_keys"))
        triggers = await session.scalar(
            text("SELECT count(*) FROM sqlite_master WHERE type = 'trigger' "
                 "AND tbl_name = 'notes' AND name LIKE 'notes_search_%'")
        )
        hits = await session.scalar(
            text("SELECT count(*) FROM notes_search WHERE notes_search MATCH '\"text\"'")
        )
    assert (keys, triggers, hits) == (0, 3, 0)
