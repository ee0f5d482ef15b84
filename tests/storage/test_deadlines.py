"""One deadline for a request's storage work (issue 11, finding 3).

With a frozen database a login (two units of work) took twice ``BASTION_DATABASE_TIMEOUT``,
and one pool checkout could take the timeout plus asyncpg's 2 s graceful close. Here slow
statements (``pg_sleep``), a proxy that stops passing bytes (a frozen server or a network
black hole) and a write lock held by another connection stand in for the faults, so each
test states its bound exactly.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from bastion.storage.database import Database, StorageUnavailable, create_engine_for
from bastion.storage.deadlines import deadline_for, one_deadline
from tests.servers.postgres import PostgresServer

TIMEOUT = 1.0
# Scheduling slack on a loaded CI machine; far below the 2 s a graceful close would add.
SLACK = 0.4


def _database(url: str) -> Database:
    return Database(create_engine_for(url, timeout=TIMEOUT), timeout=TIMEOUT)


@pytest.fixture
async def postgres(postgres_server: PostgresServer) -> AsyncIterator[Database]:
    name = await postgres_server.create_database()
    database = _database(postgres_server.url(name))
    try:
        yield database
    finally:
        await database.dispose()
        await postgres_server.drop_database(name)


@pytest.fixture
async def sqlite_file(tmp_path: Path) -> AsyncIterator[Database]:
    path = tmp_path / "deadlines.sqlite3"
    sqlite3.connect(path).execute("PRAGMA journal_mode=WAL").close()
    database = _database(f"sqlite+aiosqlite:///{path}")
    try:
        yield database
    finally:
        await database.dispose()


async def _sleep_in_database(database: Database, seconds: float) -> None:
    async with database.read() as session:
        await session.execute(text("SELECT pg_sleep(:s)"), {"s": seconds})


async def test_a_requests_units_of_work_share_one_deadline(postgres: Database) -> None:
    started = time.monotonic()
    with one_deadline(), pytest.raises(StorageUnavailable) as refused:
        await _sleep_in_database(postgres, 0.6 * TIMEOUT)
        await _sleep_in_database(postgres, 0.6 * TIMEOUT)  # each alone is within the timeout
    elapsed = time.monotonic() - started
    assert refused.value.outage.error == "DeadlineExceeded"
    assert TIMEOUT - 0.05 < elapsed < TIMEOUT + SLACK, elapsed


async def test_without_a_request_each_unit_of_work_has_the_whole_timeout(
    postgres: Database,
) -> None:
    """Start-up work and background retries have no request: one slow step must not eat
    the next one's time."""
    await _sleep_in_database(postgres, 0.6 * TIMEOUT)
    await _sleep_in_database(postgres, 0.6 * TIMEOUT)


async def test_a_statement_cut_off_at_the_deadline_answers_at_once_and_the_pool_recovers(
    postgres: Database,
) -> None:
    """The pool ends the interrupted connection without SQLAlchemy's graceful close, which
    waits up to 2 s for a server busy with the statement (or frozen) to answer."""
    started = time.monotonic()
    with one_deadline(), pytest.raises(StorageUnavailable):
        await _sleep_in_database(postgres, 0.5 * TIMEOUT)  # starts the clock
        async with postgres.transaction() as session:
            await session.execute(text("SELECT pg_sleep(10)"))
    assert time.monotonic() - started < TIMEOUT + SLACK
    async with postgres.read() as session:
        assert (await session.execute(text("SELECT 1"))).scalar_one() == 1


class FreezableProxy:
    """A TCP proxy to PostgreSQL that can stop passing bytes, both ways, at once."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.frozen = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def _serve(
        self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter
    ) -> None:
        server_in, server_out = await asyncio.open_connection("127.0.0.1", self.port)
        self._writers += [client_out, server_out]
        for source, sink in ((client_in, server_out), (server_in, client_out)):
            task = asyncio.create_task(self._pump(source, sink))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while chunk := await source.read(65536):
                if not self.frozen:
                    sink.write(chunk)
                    await sink.drain()
        sink.close()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for writer in self._writers:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@pytest.fixture
async def postgres_behind_proxy(
    postgres_server: PostgresServer,
) -> AsyncIterator[tuple[Database, FreezableProxy]]:
    name = await postgres_server.create_database()
    proxy = FreezableProxy(postgres_server.port)
    port = await proxy.start()
    url = postgres_server.url(name).replace(f":{postgres_server.port}/", f":{port}/")
    database = _database(url)
    try:
        yield database, proxy
    finally:
        proxy.frozen = False
        await proxy.close()
        await database.dispose()
        await postgres_server.drop_database(name)


async def test_a_frozen_server_gives_503_at_the_deadline_not_after_a_graceful_close(
    postgres_behind_proxy: tuple[Database, FreezableProxy],
) -> None:
    """The pooled connection's pre-ping hangs; at the deadline the pool ends it. Ended with
    SQLAlchemy's graceful close, the 503 came 2 s late."""
    database, proxy = postgres_behind_proxy
    async with database.read() as session:  # a connection in the pool, for the pre-ping
        await session.execute(text("SELECT 1"))
    proxy.frozen = True
    started = time.monotonic()
    with one_deadline(), pytest.raises(StorageUnavailable):
        async with database.read() as session:
            await session.execute(text("SELECT 1"))
    assert time.monotonic() - started < TIMEOUT + SLACK


async def test_a_server_that_stops_answering_before_the_close_still_gives_503_at_the_deadline(
    postgres_behind_proxy: tuple[Database, FreezableProxy],
) -> None:
    """The statement answered; the rollback that closing the session sends does not.
    ``AsyncSession``'s own close runs to completion whatever cancels it, so the request
    waited for the driver's timeout (seen under load in the fault suite)."""
    database, proxy = postgres_behind_proxy
    started = time.monotonic()
    with one_deadline(), pytest.raises(StorageUnavailable):
        async with database.read() as session:
            await session.execute(text("SELECT 1"))
            proxy.frozen = True
    assert time.monotonic() - started < TIMEOUT + SLACK


@pytest.fixture
def write_lock_held_elsewhere(sqlite_file: Database) -> Iterator[None]:
    """Another process's writer, as SQLite sees it: a connection of its own in a write
    transaction for the whole test."""
    other = sqlite3.connect(str(sqlite_file.engine.url.database), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        other.execute("ROLLBACK")
        other.close()


@pytest.mark.usefixtures("write_lock_held_elsewhere")
async def test_on_sqlite_the_wait_for_the_write_lock_ends_at_the_requests_deadline(
    sqlite_file: Database,
) -> None:
    started = time.monotonic()
    with one_deadline(), pytest.raises(StorageUnavailable):
        async with sqlite_file.read() as session:  # starts the clock
            await session.execute(text("SELECT 1"))
        await asyncio.sleep(0.6 * TIMEOUT)
        async with sqlite_file.transaction() as session:
            await session.execute(text("SELECT 1"))
    assert time.monotonic() - started < TIMEOUT + SLACK


async def test_the_first_unit_of_work_starts_the_clock() -> None:
    with one_deadline():
        first = deadline_for(10.0, TIMEOUT)
        assert deadline_for(10.7, TIMEOUT) == first == 10.0 + TIMEOUT
    assert deadline_for(10.7, TIMEOUT) == 10.7 + TIMEOUT
