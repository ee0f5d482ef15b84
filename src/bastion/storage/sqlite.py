"""How bastion talks to a SQLite file: engines whose statements run on the event loop's
own thread, and the pragmas every connection gets.

aiosqlite hands every call to a thread of its own and back: two thread switches and a turn
of the event loop per statement. On a local SQLite file a statement that touches a few rows
by key takes microseconds, far less than that hand-off, and under load the hand-off is what
a request waits for: with 32 busy clients a turn of the loop takes milliseconds, and a write
of eight statements held the write lock across all eight turns (the bench's mixed load saw
a 600 ms median write). Here such statements run inline, in the turn that issued them:
- ``writer_engine``: inline, and it never waits for the write lock inside SQLite (busy
  timeout 0), which would block the loop: ``Database.transaction`` waits for it
  asynchronously.
- ``reader_engine(inline=True)``: ``Database.read()``; connections that never begin a
  transaction (each statement reads the latest commit; in WAL mode readers wait neither for
  the writer nor for each other) and refuse writes (``query_only``).
- ``reader_engine(inline=False)``: ``Database.scan()``, for reads whose cost grows with the
  data (a search): aiosqlite's thread, so the loop serves others meanwhile.
- ``PointReads``: ``Database.lookup()``, one statement on a plain sqlite3 connection of the
  calling thread, without an ``AsyncSession`` or a greenlet (the hottest reads).

Inline connections still send a call whose parameters carry a long text or blob (a note
body: indexing it for search costs in proportion to its size) to their thread. Calls of one
connection never overlap: a connection serves one unit of work at a time and each call is
awaited before the next is made, so ``check_same_thread=False`` is safe.

An in-memory database is private to its one connection: it keeps aiosqlite's plain,
threaded connections, and its writer does the reading.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from functools import partial
from typing import Any

import aiosqlite
from sqlalchemy import Connection, Executable, Row, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import SingletonThreadPool

# A parameter this long (characters or bytes) sends its statement to the thread.
LONG_PARAMETER = 4096
# An inline reader waits at most this long inside SQLite, blocking the loop: in WAL mode a
# reader only waits while another connection recovers or truncates the WAL.
INLINE_READ_BUSY_TIMEOUT_MS = 100
_SQLITE_BUSY = 5
# Reads that scan (searches) run on at most this many threads at once.
SCAN_CONNECTIONS = 2


def is_in_memory(url: str | URL) -> bool:
    return make_url(url).database in (None, "", ":memory:")


def write_locked_elsewhere(error: OperationalError) -> bool:
    """SQLITE_BUSY: another connection (another process) holds the write lock."""
    return getattr(error.orig, "sqlite_errorcode", None) == _SQLITE_BUSY


def _pragmas(busy_timeout_ms: int, *, read_only: bool = False) -> Callable[[Any, Any], None]:
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # The driver's implicit BEGIN is replaced by BEGIN IMMEDIATE (see _begin_immediate)
        # on the writer's connections, and by nothing at all on the readers'.
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
    connection wrote in between; an immediate one takes its turn first."""
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def _carries_long_parameter(arguments: Iterable[object]) -> bool:
    """Whether a text or blob of ``LONG_PARAMETER`` or more is among ``arguments``, however
    nested in tuples, lists and mappings (a statement's parameters, or ``executemany``'s)."""
    pending = list(arguments)
    while pending:
        value = pending.pop()
        if isinstance(value, str | bytes):
            if len(value) >= LONG_PARAMETER:
                return True
        elif isinstance(value, Mapping):
            pending.extend(value.values())
        elif isinstance(value, tuple | list):
            pending.extend(value)
    return False


class InlineConnection(aiosqlite.Connection):
    """An aiosqlite connection that runs short calls on the caller's thread."""

    async def _execute(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not self._running or not self._connection:
            raise ValueError("Connection closed")
        if _carries_long_parameter(args) or _carries_long_parameter(kwargs.values()):
            return await super()._execute(fn, *args, **kwargs)  # type: ignore[no-untyped-call]
        return fn(*args, **kwargs)


def _connector(
    path: str, *, inline: bool
) -> Callable[[], Coroutine[Any, Any, aiosqlite.Connection]]:
    """An ``async_creator`` for ``create_async_engine``: connections to the file ``path``."""

    async def create() -> aiosqlite.Connection:
        kind = InlineConnection if inline else aiosqlite.Connection
        connection = kind(partial(sqlite3.connect, path, check_same_thread=False), 64)
        connection._thread.daemon = True
        return await connection

    return create


def writer_engine(url: str, *, timeout: float) -> AsyncEngine:
    if is_in_memory(url):
        engine = create_async_engine(url, connect_args={"timeout": timeout})
        busy_timeout_ms = int(timeout * 1000)
    else:
        engine = create_async_engine(
            url, async_creator=_connector(str(make_url(url).database), inline=True)
        )
        busy_timeout_ms = 0
    event.listen(engine.sync_engine, "connect", _pragmas(busy_timeout_ms))
    event.listen(engine.sync_engine, "begin", _begin_immediate)
    return engine


def reader_engine(writer: AsyncEngine, *, inline: bool, timeout: float) -> AsyncEngine:
    """A pool of read-only connections to ``writer``'s file (``writer`` itself in memory).

    Autocommit, never a transaction: ending one would only cost a needless call
    (``skip_autocommit_rollback`` spares it on every release)."""
    if is_in_memory(writer.url):
        return writer
    # Threaded connections are few and kept: each is a thread, and opening one costs far
    # more than a scan waiting its turn for one.
    pool: dict[str, Any] = {}
    if not inline:
        pool = {"pool_size": SCAN_CONNECTIONS, "max_overflow": 0, "pool_timeout": timeout}
    reader = create_async_engine(
        writer.url,
        async_creator=_connector(str(writer.url.database), inline=inline),
        isolation_level="AUTOCOMMIT",
        skip_autocommit_rollback=True,
        **pool,
    )
    busy_timeout_ms = INLINE_READ_BUSY_TIMEOUT_MS if inline else int(timeout * 1000)
    event.listen(reader.sync_engine, "connect", _pragmas(busy_timeout_ms, read_only=True))
    return reader


class PointReads:
    """One statement at a time on a read-only sqlite3 connection of the calling thread.

    SQLAlchemy's synchronous Core on the pysqlite driver: the same dialect, types and result
    rows as the async engines, at a fraction of an ``AsyncSession``'s cost per statement
    (no session, no greenlet, no aiosqlite). For statements that read a handful of rows by
    key: they run on the event loop's thread.
    """

    def __init__(self, path: str) -> None:
        self.engine = create_engine(
            f"sqlite:///{path}",
            poolclass=SingletonThreadPool,
            connect_args={"check_same_thread": False},
        )
        event.listen(self.engine, "connect", _pragmas(INLINE_READ_BUSY_TIMEOUT_MS, read_only=True))
        self._local = threading.local()

    def fetch(
        self, statement: Executable, parameters: Mapping[str, Any] | None = None
    ) -> Sequence[Row[Any]]:
        connection: Connection | None = getattr(self._local, "connection", None)
        if connection is None or connection.closed or connection.invalidated:
            connection = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            self._local.connection = connection
        try:
            return connection.execute(statement, parameters).all()
        except Exception:
            # Whatever went wrong, the next statement starts on a fresh connection.
            self._local.connection = None
            connection.invalidate()
            raise

    def dispose(self) -> None:
        self.engine.dispose()
