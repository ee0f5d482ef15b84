"""SQLite statements run on the event loop's thread unless their cost grows with the data,
and nothing waits for the write lock on the loop's thread (``bastion.storage.sqlite``)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text

from bastion.storage.database import Database, StorageUnavailable, create_engine_for
from bastion.storage.sqlite import LONG_PARAMETER

WHERE = text("SELECT executing_thread() AS thread, length(:value) AS size")


def _report_executing_thread(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.create_function("executing_thread", 0, threading.get_ident)


def _database(path: Path, timeout: float = 5.0) -> Database:
    database = Database(
        create_engine_for(f"sqlite+aiosqlite:///{path}", timeout=timeout), timeout=timeout
    )
    engines = [database.engine, database.reader, database.scanner]
    for engine in engines:
        event.listen(engine.sync_engine, "connect", _report_executing_thread)
    assert database._point_reads is not None
    event.listen(database._point_reads.engine, "connect", _report_executing_thread)
    return database


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    database = _database(tmp_path / "inline.db")
    async with database.transaction() as session:
        await session.execute(text("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)"))
    yield database
    await database.dispose()


async def test_short_statements_run_on_the_loop_thread(database: Database) -> None:
    loop_thread = threading.get_ident()
    async with database.transaction() as session:
        row = (await session.execute(WHERE, {"value": "short"})).one()
    assert row.thread == loop_thread
    async with database.read() as session:
        row = (await session.execute(WHERE, {"value": "short"})).one()
    assert row.thread == loop_thread
    (row,) = await database.lookup(WHERE, {"value": "short"})
    assert row.thread == loop_thread


async def test_a_long_parameter_sends_its_statement_to_the_connection_thread(
    database: Database,
) -> None:
    long_value = "x" * LONG_PARAMETER
    async with database.transaction() as session:
        row = (await session.execute(WHERE, {"value": long_value})).one()
        await session.execute(text("INSERT INTO notes (body) VALUES (:body)"), {"body": long_value})
    assert row.size == LONG_PARAMETER
    assert row.thread != threading.get_ident()
    (stored,) = await database.lookup(text("SELECT length(body) AS size FROM notes"))
    assert stored.size == LONG_PARAMETER


async def test_scans_run_off_the_loop_thread(database: Database) -> None:
    async with database.scan() as session:
        row = (await session.execute(WHERE, {"value": "short"})).one()
    assert row.thread != threading.get_ident()


async def test_a_lookup_sees_the_latest_commit_and_cannot_write(database: Database) -> None:
    statement = text("SELECT count(*) AS notes FROM notes")
    assert (await database.lookup(statement))[0].notes == 0
    async with database.transaction() as session:
        await session.execute(text("INSERT INTO notes (body) VALUES ('one')"))
    assert (await database.lookup(statement))[0].notes == 1
    with pytest.raises(StorageUnavailable):  # query_only: "attempt to write a readonly database"
        await database.lookup(text("DELETE FROM notes"))
    assert (await database.lookup(statement))[0].notes == 1


async def _loop_stalls_while(work: asyncio.Task[Any]) -> float:
    """The longest the event loop went without running a 5 ms ticker while ``work`` ran."""
    loop = asyncio.get_running_loop()
    longest = 0.0
    last = loop.time()
    while not work.done():
        await asyncio.sleep(0.005)
        now = loop.time()
        longest = max(longest, now - last)
        last = now
    return longest


async def test_a_write_lock_held_by_another_process_is_waited_for_off_the_loop(
    database: Database, tmp_path: Path
) -> None:
    """Another process (here a plain connection) holds the write lock for 0.4 s: the
    transaction waits its turn with asynchronous back-off and then commits, and the event
    loop keeps running meanwhile (a wait inside SQLite's busy handler would freeze it)."""
    other = sqlite3.connect(tmp_path / "inline.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    asyncio.get_running_loop().call_later(0.4, other.execute, "COMMIT")

    async def write() -> None:
        async with database.transaction() as session:
            await session.execute(text("INSERT INTO notes (body) VALUES ('after the wait')"))

    started = asyncio.get_running_loop().time()
    writer = asyncio.create_task(write())
    try:
        longest_stall = await _loop_stalls_while(writer)
        await writer
    finally:
        other.close()
    assert asyncio.get_running_loop().time() - started >= 0.35
    assert longest_stall < 0.1
    (row,) = await database.lookup(text("SELECT count(*) AS notes FROM notes"))
    assert row.notes == 1


async def test_a_write_lock_never_released_is_unavailable_within_the_timeout(
    tmp_path: Path,
) -> None:
    database = _database(tmp_path / "held.db", timeout=0.3)
    async with database.transaction() as session:
        await session.execute(text("CREATE TABLE notes (id INTEGER PRIMARY KEY)"))
    other = sqlite3.connect(tmp_path / "held.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    loop = asyncio.get_running_loop()

    async def write() -> None:
        async with database.transaction() as session:
            await session.execute(text("INSERT INTO notes DEFAULT VALUES"))

    started = loop.time()
    writer = asyncio.create_task(write())
    try:
        longest_stall = await _loop_stalls_while(writer)
        with pytest.raises(StorageUnavailable):
            await writer
    finally:
        other.execute("ROLLBACK")
        other.close()
        await database.dispose()
    assert 0.25 <= loop.time() - started < 1.0
    assert longest_stall < 0.1
