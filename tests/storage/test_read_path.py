"""Reads never wait on the write lock, and read-only units of work refuse to write.

On SQLite every ``transaction()`` begins ``BEGIN IMMEDIATE`` and so holds the database-wide
write lock; a read that queued for it would sleep in the busy handler and, past
``database_timeout``, answer 503. On PostgreSQL the writer holds a row lock instead. Either
way the read routes must answer at once while the writer holds on, and a write must wait.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, update
from sqlalchemy.exc import DBAPIError

from bastion.clock import utc_now
from bastion.identity.freshness import lock_account
from bastion.storage.database import Database, StorageUnavailable
from bastion.storage.tables import User
from tests.notes import account, admin_account, create_note

# Far below database_timeout (5 s): a read that waited for the lock would take all of it.
AT_ONCE = 1.5
READ_ROUTES = ("/auth/me", "/notes/{note}", "/notes", "/admin/users", "/admin/audit")


def _database(app: FastAPI) -> Database:
    database: Database = app.state.bastion.database
    return database


async def _touch(database: Database, user_id: uuid.UUID) -> None:
    async with database.transaction() as session:
        await session.execute(update(User).where(User.id == user_id).values(updated_at=utc_now()))


async def test_reads_answer_while_a_writer_holds_the_lock(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    database = _database(app)
    assert database.timeout >= 3 * AT_ONCE
    alice = await account(client, "alice")
    admin = await admin_account(app, client, "root")
    note = await create_note(client, alice)
    alice_id = uuid.UUID(alice.id)

    async with database.transaction() as holder:
        # As the identity re-checks do: SQLite's BEGIN IMMEDIATE, PostgreSQL's FOR UPDATE.
        assert await lock_account(holder, alice_id) is not None
        writer = asyncio.create_task(_touch(database, alice_id))
        for route in READ_ROUTES:
            caller = admin if route.startswith("/admin") else alice
            started = time.monotonic()
            response = await client.get(route.format(note=note["id"]), headers=caller.headers)
            elapsed = time.monotonic() - started
            assert response.status_code == 200, (route, response.text)
            assert elapsed < AT_ONCE, (route, elapsed)
        await asyncio.sleep(0.2)
        assert not writer.done(), "a write did not wait for the lock held"
    await asyncio.wait_for(writer, timeout=database.timeout)

    me = await client.get("/auth/me", headers=alice.headers)
    assert me.json() == {
        "id": alice.id,
        "username": "alice",
        "email": me.json()["email"],
        "age": 30,
        "roles": ["user"],
        "created_at": me.json()["created_at"],
        "email_verified": False,
        "mfa_enabled": False,
    }


async def test_a_read_only_unit_of_work_refuses_to_write(app: FastAPI) -> None:
    """SQLite: the reader's connections are ``query_only``; PostgreSQL: ``READ ONLY``."""
    database = _database(app)
    async with database.transaction() as session:
        before = list(await session.scalars(select(User.updated_at)))
    with pytest.raises((DBAPIError, StorageUnavailable)) as refused:
        async with database.read() as session:
            await session.execute(update(User).values(updated_at=utc_now()))
    assert "read" in str(refused.value.__cause__ or refused.value).lower()
    async with database.read() as session:
        assert list(await session.scalars(select(User.updated_at))) == before


async def test_the_write_lock_is_still_taken_by_every_transaction(app: FastAPI) -> None:
    """``transaction()`` keeps serialising writers: a second one waits for the first."""
    database = _database(app)
    async with database.transaction() as first:
        await first.execute(select(User.id).limit(1))
        if database.backend == "sqlite":
            second = asyncio.create_task(_touch(database, uuid.uuid4()))
            await asyncio.sleep(0.3)
            assert not second.done()
    if database.backend == "sqlite":
        await asyncio.wait_for(second, timeout=database.timeout)
