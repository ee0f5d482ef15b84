"""The async engines and the two ways to run a unit of work.

``Database.transaction()``: every write happens inside one transaction that commits when the
block ends and rolls back on any error, so nothing is stored half-way. On SQLite it begins
``BEGIN IMMEDIATE``, taking the database-wide write lock at once, because a unit of work that
reads and then writes must not fail half-way with SQLITE_BUSY_SNAPSHOT.

``Database.read()``: a unit of work that only reads must not queue for that lock. On SQLite
it runs on connections of their own that never begin a transaction (each statement reads
the latest committed state, as PostgreSQL's READ COMMITTED does; in WAL mode readers wait
neither for the writer nor for each other) and refuse every write (``PRAGMA query_only``).
On PostgreSQL it is a ``READ ONLY`` transaction.

A database that does not answer becomes ``StorageUnavailable`` (503) within
``database_timeout`` seconds instead of a hang or a 500, for reads and writes alike.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from bastion.config import Settings
from bastion.storage.files import ensure_private_file


class StorageUnavailable(Exception):
    """The database could not be reached or did not answer in time."""


_UNAVAILABLE = (OperationalError, InterfaceError, PoolTimeoutError, OSError, TimeoutError)


def _is_unavailable(error: BaseException) -> bool:
    if isinstance(error, _UNAVAILABLE):
        return True
    return isinstance(error, DBAPIError) and error.connection_invalidated


def _sqlite_pragmas(timeout: float, *, read_only: bool = False) -> Callable[[Any, Any], None]:
    busy_timeout_ms = int(timeout * 1000)

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # The driver's implicit BEGIN is replaced by BEGIN IMMEDIATE (see _begin_immediate)
        # on the writer's connections, and by nothing at all on the reader's.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        if read_only:
            cursor.execute("PRAGMA query_only=ON")
        cursor.close()

    return on_connect


def _begin_immediate(connection: Any) -> None:
    """SQLite transactions take the write lock when they begin. A deferred transaction that
    reads and then writes fails at once (SQLITE_BUSY_SNAPSHOT, no waiting) if another
    connection wrote in between; an immediate one waits its turn under busy_timeout."""
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def create_engine_for(url: str, *, timeout: float) -> AsyncEngine:
    backend = make_url(url).get_backend_name()
    if backend == "sqlite":
        engine = create_async_engine(url, connect_args={"timeout": timeout})
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas(timeout))
        event.listen(engine.sync_engine, "begin", _begin_immediate)
        return engine
    return create_async_engine(
        url,
        pool_pre_ping=True,
        pool_timeout=timeout,
        connect_args={"timeout": timeout, "command_timeout": timeout},
    )


def _in_memory(url: str) -> bool:
    return make_url(url).database in (None, "", ":memory:")


def create_reader_for(writer: AsyncEngine, *, timeout: float) -> AsyncEngine:
    """The engine of read-only units of work, beside ``writer``.

    SQLite: a pool of its own, whose connections refuse writes and never begin a
    transaction, so they never take or wait for the write lock (an in-memory database is
    private to one connection pool, so there the writer reads too). PostgreSQL: the
    writer's pool, each transaction begun ``READ ONLY``.
    """
    url = writer.url.render_as_string(hide_password=False)
    if writer.url.get_backend_name() != "sqlite":
        return writer.execution_options(postgresql_readonly=True)
    if _in_memory(url):
        return writer
    # Autocommit, never a transaction: ending one would only cost a needless round trip
    # through aiosqlite's thread (skip_autocommit_rollback spares it on every release).
    reader = create_async_engine(
        url,
        connect_args={"timeout": timeout},
        isolation_level="AUTOCOMMIT",
        skip_autocommit_rollback=True,
    )
    event.listen(reader.sync_engine, "connect", _sqlite_pragmas(timeout, read_only=True))
    return reader


def _consume_outcome(probe: asyncio.Future[None]) -> None:
    """An abandoned probe's late error is expected; retrieve it so asyncio does not log it."""
    if not probe.cancelled():
        probe.exception()


class Database:
    def __init__(
        self, engine: AsyncEngine, *, timeout: float, reader: AsyncEngine | None = None
    ) -> None:
        self.engine = engine
        self.reader = reader if reader is not None else create_reader_for(engine, timeout=timeout)
        self.timeout = timeout
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._read_sessions = async_sessionmaker(self.reader, expire_on_commit=False)
        self._probes: set[asyncio.Future[None]] = set()
        # SQLite has one write lock for the whole file. Writers of this process queue here,
        # first come first served, instead of in SQLite's busy handler, whose sleeps grow to
        # 100 ms and let a waiting writer lose to newcomers again and again (seconds-long
        # tails under 32 mixed clients). Other processes still meet busy_timeout.
        self._writers = asyncio.Lock() if engine.url.get_backend_name() == "sqlite" else None

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

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """One unit of work that may write: commit at the end, roll back on any exception.
        On SQLite it holds the write lock from its first statement to its end."""
        async with self._write_turn():
            try:
                async with self._sessions() as session, session.begin():
                    yield session
            except Exception as error:
                if _is_unavailable(error):
                    raise StorageUnavailable from error
                raise

    @asynccontextmanager
    async def _write_turn(self) -> AsyncIterator[None]:
        """This process's turn to write (SQLite only), waited for at most the timeout."""
        if self._writers is None:
            yield
            return
        try:
            async with asyncio.timeout(self.timeout):
                await self._writers.acquire()
        except TimeoutError:
            raise StorageUnavailable from None
        try:
            yield
        finally:
            self._writers.release()

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """One unit of work that only reads: never takes SQLite's write lock, and any write
        in it fails (SQLite ``query_only``, PostgreSQL ``READ ONLY``). A unit of work that
        reads and then decides to write belongs in ``transaction()``.

        For the hottest reads, ``await session.connection()`` runs Core statements without
        the ORM's identity map and unit of work."""
        try:
            # No commit: there is nothing to commit. Closing the session ends PostgreSQL's
            # READ ONLY transaction; on SQLite there is none to end.
            async with self._read_sessions() as session:
                yield session
        except Exception as error:
            if _is_unavailable(error):
                raise StorageUnavailable from error
            raise

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
        if _is_unavailable(error):
            return False
        raise error

    async def _select_one(self) -> None:
        async with asyncio.timeout(self.timeout * 3), self.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        for probe in list(self._probes):
            probe.cancel()
        if self.reader.sync_engine.pool is not self.engine.sync_engine.pool:
            await self.reader.dispose()
        await self.engine.dispose()
