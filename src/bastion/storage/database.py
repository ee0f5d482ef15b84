"""The async engine and the one way to run a unit of work: ``Database.transaction()``.

Every write happens inside one transaction that commits when the block ends and rolls back
on any error, so nothing is stored half-way. A database that does not answer becomes
``StorageUnavailable`` (503) within ``database_timeout`` seconds instead of a hang or a 500.
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


def _sqlite_pragmas(timeout: float) -> Callable[[Any, Any], None]:
    busy_timeout_ms = int(timeout * 1000)

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # The driver's implicit BEGIN is replaced by BEGIN IMMEDIATE (see _begin_immediate).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
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


def _consume_outcome(probe: asyncio.Future[None]) -> None:
    """An abandoned probe's late error is expected; retrieve it so asyncio does not log it."""
    if not probe.cancelled():
        probe.exception()


class Database:
    def __init__(self, engine: AsyncEngine, *, timeout: float) -> None:
        self.engine = engine
        self.timeout = timeout
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._probes: set[asyncio.Future[None]] = set()

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
        """One unit of work: commit at the end, roll back on any exception."""
        try:
            async with self._sessions() as session, session.begin():
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
        await self.engine.dispose()
