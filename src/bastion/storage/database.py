"""The async engines and the ways to run a unit of work.

``Database.transaction()``: every write happens inside one transaction that commits when the
block ends and rolls back on any error, so nothing is stored half-way. On SQLite it begins
``BEGIN IMMEDIATE``, taking the database-wide write lock at once, because a unit of work that
reads and then writes must not fail half-way with SQLITE_BUSY_SNAPSHOT; the writers of one
process take turns first come, first served, and a lock held by another process is waited
for with asynchronous back-off.

``Database.read()``: a unit of work that only reads must not queue for that lock. On SQLite
it runs on connections of their own that never begin a transaction (each statement reads
the latest committed state, as PostgreSQL's READ COMMITTED does; in WAL mode readers wait
neither for the writer nor for each other) and refuse every write (``PRAGMA query_only``).
On PostgreSQL it is a ``READ ONLY`` transaction.

``Database.scan()``: ``read()`` for reads whose cost grows with the data (searches); on
SQLite they run on a few threads instead of the event loop's. ``Database.lookup()``: one
read-only statement on a handful of rows by key, without a session (the hottest reads).
How each runs on SQLite is ``bastion.storage.sqlite``'s subject.

A database that does not answer becomes ``StorageUnavailable`` (503) within
``database_timeout`` seconds instead of a hang or a 500, for reads and writes alike: within
that many seconds of a request's first unit of work, however many it takes
(``bastion.storage.deadlines``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import (
    AbstractAsyncContextManager,
    AsyncExitStack,
    asynccontextmanager,
    contextmanager,
)
from typing import Any

from sqlalchemy import Executable, Row, text
from sqlalchemy.engine import make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from bastion.config import Settings
from bastion.storage import sqlite
from bastion.storage.deadlines import deadline_for
from bastion.storage.files import ensure_private_file
from bastion.storage.outages import Outage, is_unavailable, outage_of


class StorageUnavailable(Exception):
    """A backing service (the database, Redis) could not be reached or did not answer in
    time. Raised ``from`` the driver's error, whose class and code ``outage`` tells; or with
    an explicit ``outage`` where there is no such error (a wait that ran out)."""

    def __init__(self, *args: object, outage: Outage | None = None) -> None:
        super().__init__(*args)
        self._outage = outage

    @property
    def outage(self) -> Outage:
        return self._outage or outage_of(self.__cause__)


@contextmanager
def _outages_as_unavailable() -> Iterator[None]:
    """A driver error that means "not available now" becomes ``StorageUnavailable`` (503)."""
    try:
        yield
    except Exception as error:
        if is_unavailable(error):
            raise StorageUnavailable from error
        raise


DEADLINE_EXCEEDED = Outage("database", "DeadlineExceeded")
# asyncpg's own connect and statement timeouts, as multiples of the database timeout: a
# backstop for work that no deadline bounds (migrations). Every unit of work ends at its
# deadline (``Database._by_deadline``), which so fires first and names the cause.
DRIVER_TIMEOUT_FACTOR = 2


def create_engine_for(url: str, *, timeout: float) -> AsyncEngine:
    if make_url(url).get_backend_name() == "sqlite":
        return sqlite.writer_engine(url, timeout=timeout)
    backstop = DRIVER_TIMEOUT_FACTOR * timeout
    engine = create_async_engine(
        url,
        pool_pre_ping=True,
        pool_timeout=timeout,
        connect_args={"timeout": backstop, "command_timeout": backstop},
    )
    engine.sync_engine.dialect.do_terminate = _terminate_at_once  # type: ignore[method-assign]
    return engine


def _terminate_at_once(dbapi_connection: DBAPIConnection) -> None:
    """How the pool ends a connection it invalidated: at once. SQLAlchemy's asyncpg adapter
    first tries a graceful close for up to 2 s, which a frozen or unreachable server never
    answers; spent after a deadline ran out, it would make the 503 late by those 2 s. An
    invalidated connection is broken or was interrupted mid-statement: there is nothing to
    close gracefully."""
    dbapi_connection.driver_connection.terminate()


def create_reader_for(writer: AsyncEngine, *, timeout: float, scans: bool = False) -> AsyncEngine:
    """The engine of read-only units of work, beside ``writer``.

    SQLite: a pool of its own, whose connections refuse writes and never begin a
    transaction, so they never take or wait for the write lock; inline unless ``scans``
    (see ``storage.sqlite``). PostgreSQL: the writer's pool, each transaction begun
    ``READ ONLY``.
    """
    if writer.url.get_backend_name() != "sqlite":
        return writer.execution_options(postgresql_readonly=True)
    return sqlite.reader_engine(writer, inline=not scans, timeout=timeout)


class _DeadlineInterrupt:
    """Cancels the current task at the deadline, then again every ``REPEAT`` seconds until
    ``end()``. Once is not enough: clean-up code may absorb a cancellation and then wait on
    the server that did not answer. SQLAlchemy's asyncpg pre-ping, cancelled mid-query,
    rolls back in a ``finally`` and waits out the driver's timeout; asyncio's own timeout
    cancels once, so the answer came a whole timeout late."""

    REPEAT = 0.05

    def __init__(self, deadline: float) -> None:
        self._loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None  # noqa: S101 (units of work run in tasks)
        self._task = task
        self.cancels = 0
        self._handle = self._loop.call_at(deadline, self._interrupt)

    def _interrupt(self) -> None:
        self.cancels += 1
        self._task.cancel()
        self._handle = self._loop.call_later(self.REPEAT, self._interrupt)

    def end(self) -> bool:
        """Stops interrupting and withdraws its cancellations; whether there were any."""
        self._handle.cancel()
        for _ in range(self.cancels):
            self._task.uncancel()
        return self.cancels > 0


def _cancelled_from_outside(error: BaseException) -> bool:
    """A cancellation that the deadline's are not all of (the client went away, shutdown)."""
    task = asyncio.current_task()
    return (
        isinstance(error, asyncio.CancelledError) and task is not None and task.cancelling() > 0
    )


def _consume_outcome(probe: asyncio.Future[None]) -> None:
    """An abandoned probe's or close's late error is expected; retrieve it so asyncio does
    not log it."""
    if not probe.cancelled():
        probe.exception()


class Database:
    def __init__(self, engine: AsyncEngine, *, timeout: float) -> None:
        self.engine = engine
        self.reader = create_reader_for(engine, timeout=timeout)
        self.scanner = create_reader_for(engine, timeout=timeout, scans=True)
        self._sqlite = self.backend == "sqlite"
        self._point_reads = (
            sqlite.PointReads(str(engine.url.database))
            if self._sqlite and not sqlite.is_in_memory(engine.url)
            else None
        )
        self.timeout = timeout
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._read_sessions = async_sessionmaker(self.reader, expire_on_commit=False)
        self._scan_sessions = async_sessionmaker(self.scanner, expire_on_commit=False)
        self._probes: set[asyncio.Future[None]] = set()
        self._closing: set[asyncio.Future[None]] = set()
        # SQLite has one write lock for the whole file. Writers of this process queue here,
        # first come first served, instead of in SQLite's busy handler, whose sleeps grow to
        # 100 ms and let a waiting writer lose to newcomers again and again (seconds-long
        # tails under 32 mixed clients). Other processes still meet busy_timeout.
        self._writers = asyncio.Lock() if self._sqlite else None

    @classmethod
    def from_settings(cls, settings: Settings) -> Database:
        if settings.uses_embedded_database:
            ensure_private_file(settings.sqlite_path)
        engine = create_engine_for(
            settings.resolved_database_url(), timeout=settings.database_timeout
        )
        return cls(engine, timeout=settings.database_timeout)

    @property
    def backend(self) -> str:
        return self.engine.url.get_backend_name()

    def _deadline(self) -> float:
        """When the unit of work starting now must be done (event-loop time)."""
        return deadline_for(asyncio.get_running_loop().time(), self.timeout)

    @asynccontextmanager
    async def _by_deadline(self, deadline: float) -> AsyncIterator[None]:
        """The block is interrupted at ``deadline``: ``StorageUnavailable``, never a late
        answer. Not on SQLite, whose statements run on the loop's thread or finish on
        their own thread whatever happens to the awaiting task: there the waits bastion
        controls (the write turn, the lock back-off) end at the deadline instead."""
        if self._sqlite:
            yield
            return
        interrupt = _DeadlineInterrupt(deadline)
        try:
            yield
        except BaseException as error:
            if interrupt.end() and not _cancelled_from_outside(error):
                raise StorageUnavailable(outage=DEADLINE_EXCEEDED) from None
            raise
        interrupt.end()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """One unit of work that may write: commit at the end, roll back on any exception.
        On SQLite it holds the write lock from its first statement to its end."""
        deadline = self._deadline()
        async with self._by_deadline(deadline), self._write_turn(deadline):
            with _outages_as_unavailable():
                async with AsyncExitStack() as stack:
                    yield await self._begun(stack, deadline)

    async def _begun(self, stack: AsyncExitStack, deadline: float) -> AsyncSession:
        """A session whose transaction has begun, entered on ``stack``. On SQLite the begin
        takes the write lock, at once: while another process holds it, the wait is an
        asynchronous back-off here (up to the timeout), never a wait inside SQLite on the
        loop's thread. Elsewhere the connection is taken when first used, so that the unit
        of work may still choose its execution options (e.g. an isolation level)."""
        if not self._sqlite:
            session = await stack.enter_async_context(self._session(self._sessions))
            await stack.enter_async_context(session.begin())
            return session
        loop = asyncio.get_running_loop()
        pause = 0.001
        while True:
            attempt = AsyncExitStack()
            session = await attempt.enter_async_context(self._session(self._sessions))
            await attempt.enter_async_context(session.begin())
            try:
                await session.connection()
            except OperationalError as error:
                await attempt.aclose()
                if not sqlite.write_locked_elsewhere(error) or loop.time() + pause > deadline:
                    raise
                await asyncio.sleep(pause)
                pause = min(pause * 2, 0.05)
                continue
            except BaseException:
                await attempt.aclose()
                raise
            stack.push_async_exit(attempt)
            return session

    @asynccontextmanager
    async def _write_turn(self, deadline: float) -> AsyncIterator[None]:
        """This process's turn to write (SQLite only), waited for until ``deadline``."""
        if self._writers is None:
            yield
            return
        try:
            async with asyncio.timeout_at(deadline):
                await self._writers.acquire()
        except TimeoutError:
            raise StorageUnavailable(outage=Outage("database", "WriteTurnTimeout")) from None
        try:
            yield
        finally:
            self._writers.release()

    @asynccontextmanager
    async def _session(
        self, sessions: async_sessionmaker[AsyncSession]
    ) -> AsyncIterator[AsyncSession]:
        """A session, closed at the end. On SQLite the close runs inline and cannot be
        interrupted, so it is awaited directly: ``AsyncSession``'s own ``async with`` closes
        in a task of its own, three turns of the event loop, each milliseconds long under
        load, spent while a writer holds SQLite's write lock. Elsewhere see ``_close``."""
        session = sessions()
        try:
            yield session
        finally:
            if self._sqlite:
                await session.close()
            else:
                await self._close(session)

    async def _close(self, session: AsyncSession) -> None:
        """Closes ``session`` in a task of its own, so that its connection goes back to the
        pool even when the request is cancelled (the client went away, the deadline). Unlike
        ``AsyncSession``'s own close, which runs to completion whatever happens, the wait
        for it ends with the cancellation: closing rolls back, and a rollback on a server
        that stopped answering would hold the request's 503 until the driver's timeout. The
        close then finishes on its own, and ``dispose`` waits for it."""
        closing = asyncio.ensure_future(session.close())
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)
        closing.add_done_callback(_consume_outcome)
        await asyncio.shield(closing)

    def read(self) -> AbstractAsyncContextManager[AsyncSession]:
        """One unit of work that only reads: never takes SQLite's write lock, and any write
        in it fails (SQLite ``query_only``, PostgreSQL ``READ ONLY``). A unit of work that
        reads and then decides to write belongs in ``transaction()``; a single statement
        on a few rows by key is cheaper as ``lookup()``."""
        return self._read_only(self._read_sessions)

    def scan(self) -> AbstractAsyncContextManager[AsyncSession]:
        """``read()`` for reads whose cost grows with the data (a search): on SQLite its
        statements run on a thread, so one user's long scan does not stall the loop."""
        return self._read_only(self._scan_sessions)

    @asynccontextmanager
    async def _read_only(
        self, sessions: async_sessionmaker[AsyncSession]
    ) -> AsyncIterator[AsyncSession]:
        # No commit: there is nothing to commit. Closing the session ends PostgreSQL's
        # READ ONLY transaction; on SQLite there is none to end.
        async with self._by_deadline(self._deadline()):
            with _outages_as_unavailable():
                async with self._session(sessions) as session:
                    yield session

    async def lookup(
        self, statement: Executable, parameters: Mapping[str, Any] | None = None
    ) -> Sequence[Row[Any]]:
        """The rows of one read-only statement that reads a handful of rows by key (the
        hottest reads: the signed-in user, one note). On a SQLite file it runs at once on
        this thread, without a session (``storage.sqlite.PointReads``); elsewhere it is a
        ``read()`` of one statement."""
        if self._point_reads is None:
            async with self.read() as session:
                connection = await session.connection()
                return (await connection.execute(statement, parameters)).all()
        with _outages_as_unavailable():
            return self._point_reads.fetch(statement, parameters)

    async def ping(self) -> bool:
        """True when the database answers a trivial query within the timeout.

        The probe runs as its own task and is abandoned, not cancelled, at the deadline:
        cancelling it would make the asyncpg adapter wait for a graceful close of the dead
        connection (a further, fixed 2 s) before the answer could be given.
        """
        probe = asyncio.ensure_future(self._select_one())
        self._probes.add(probe)
        probe.add_done_callback(self._probes.discard)
        done, _ = await asyncio.wait({probe}, timeout=self.timeout)
        if not done:
            probe.add_done_callback(_consume_outcome)
            return False
        error = probe.exception()
        if error is None:
            return True
        if is_unavailable(error):
            return False
        raise error

    async def _select_one(self) -> None:
        # The reader: on SQLite the writer's connection would begin by taking the write lock.
        async with asyncio.timeout(self.timeout * 3), self.reader.connect() as connection:
            await connection.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        for probe in list(self._probes):
            probe.cancel()
        if self._closing:  # closes that outlived their requests (see _close)
            await asyncio.wait(set(self._closing), timeout=DRIVER_TIMEOUT_FACTOR * self.timeout)
        if self._point_reads is not None:
            self._point_reads.dispose()
        pools = {id(self.engine.sync_engine.pool)}
        for extra in (self.reader, self.scanner):
            if id(extra.sync_engine.pool) not in pools:
                pools.add(id(extra.sync_engine.pool))
                await extra.dispose()
        await self.engine.dispose()
