"""SQLite writers of one process take turns first come, first served.

Without the queue every writer waits in SQLite's busy handler, whose sleeps grow to 100 ms
and let a waiting writer lose to newcomers again and again: under 32 mixed clients the
slowest request took seconds (make bench, target 3).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import text

from bastion.storage.database import Database, StorageUnavailable, create_engine_for

WRITERS = 24


@pytest.fixture
async def sqlite_database(tmp_path: Path) -> Database:
    engine = create_engine_for(f"sqlite+aiosqlite:///{tmp_path / 'queue.db'}", timeout=5.0)
    database = Database(engine, timeout=5.0)
    async with database.transaction() as session:
        await session.execute(text("CREATE TABLE turns (position INTEGER)"))
    return database


async def test_writers_commit_in_the_order_they_asked(sqlite_database: Database) -> None:
    order: list[int] = []

    async def write(position: int) -> None:
        async with sqlite_database.transaction() as session:
            await session.execute(text("INSERT INTO turns VALUES (:p)"), {"p": position})
            order.append(position)
            await asyncio.sleep(0.005)  # hold the write lock a moment, as a real write does

    tasks = []
    for position in range(WRITERS):
        tasks.append(asyncio.create_task(write(position)))
        await asyncio.sleep(0)  # each writer asks before the next one starts
    try:
        await asyncio.gather(*tasks)
        assert order == list(range(WRITERS))
    finally:
        await sqlite_database.dispose()


async def test_a_writer_that_never_gets_its_turn_is_unavailable_within_the_timeout(
    tmp_path: Path,
) -> None:
    engine = create_engine_for(f"sqlite+aiosqlite:///{tmp_path / 'held.db'}", timeout=0.3)
    database = Database(engine, timeout=0.3)
    held = asyncio.Event()
    release = asyncio.Event()

    async def hold() -> None:
        async with database.transaction() as session:
            await session.execute(text("SELECT 1"))
            held.set()
            await release.wait()

    holder = asyncio.create_task(hold())
    try:
        await held.wait()
        started = asyncio.get_running_loop().time()
        with pytest.raises(StorageUnavailable):
            async with database.transaction() as session:
                await session.execute(text("SELECT 1"))
        assert asyncio.get_running_loop().time() - started < 1.0
    finally:
        release.set()
        await holder
        await database.dispose()
