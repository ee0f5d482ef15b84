"""Which failures of a backing service mean "not available now" (503), and what the log says
about each: the dependency, the driver's error class and its code, never a statement, its
parameters or a driver message (which may quote either).

A 503 that nobody can explain is an outage nobody can fix: every ``StorageUnavailable``
answered to a client is logged as ``storage_unavailable``, at most once per cause per
``REPORT_INTERVAL`` seconds (with the count of the answers in between), so a dead database
under load gives one line every few seconds, not one per request.
"""

from __future__ import annotations

import errno
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from bastion.logs import get_logger

log = get_logger("bastion.storage")

REPORT_INTERVAL = 10.0

# PostgreSQL SQLSTATEs that mean the server cannot serve now, whatever the statement:
# class 08 (connection exception), class 53 (insufficient resources: disk full, out of
# memory, too many connections), class 58 (system error: I/O), 57P01-57P03 (shutting down,
# crashed, starting up), 57014 (statement timeout), 25006 (a read-only server: a standby
# after a failover).
_UNAVAILABLE_SQLSTATE_CLASSES = ("08", "53", "58")
_UNAVAILABLE_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "57014", "25006"})
_UNAVAILABLE = (OperationalError, InterfaceError, PoolTimeoutError, OSError, TimeoutError)


def sqlstate_of(error: BaseException) -> str | None:
    orig = getattr(error, "orig", None)
    code = getattr(orig, "pgcode", None) or getattr(orig, "sqlstate", None)
    return code if isinstance(code, str) else None


def is_unavailable(error: BaseException) -> bool:
    """Whether a database error means "not available now" rather than a bad request or a bug."""
    if isinstance(error, _UNAVAILABLE):
        return True
    if not isinstance(error, DBAPIError):
        return False
    if error.connection_invalidated:
        return True
    code = sqlstate_of(error)
    return code is not None and (
        code in _UNAVAILABLE_SQLSTATES or code[:2] in _UNAVAILABLE_SQLSTATE_CLASSES
    )


@dataclass(frozen=True, slots=True)
class Outage:
    """Why a backing service could not serve, as the log tells it."""

    dependency: str  # "database" or "redis"
    error: str  # the driver's error class, e.g. "CannotConnectNowError"
    code: str | None = None  # SQLSTATE, SQLite result code, or errno name


def _code(error: BaseException) -> str | None:
    code = sqlstate_of(error)
    if code is not None:
        return code
    orig = getattr(error, "orig", error)
    name = getattr(orig, "sqlite_errorname", None)
    if isinstance(name, str):
        return name
    for link in (orig, getattr(orig, "__cause__", None), getattr(orig, "__context__", None)):
        number = getattr(link, "errno", None)
        if isinstance(link, OSError) and isinstance(number, int):
            return errno.errorcode.get(number, str(number))
    return None


def outage_of(error: BaseException | None) -> Outage:
    """The outage behind ``error`` (what ``StorageUnavailable`` was raised from)."""
    if error is None:
        return Outage("unknown", "none")
    if type(error).__module__.startswith("redis"):
        return Outage("redis", type(error).__name__, _code(error))
    orig = getattr(error, "orig", None)
    shown = orig if isinstance(orig, BaseException) else error
    # SQLAlchemy's asyncpg adapter raises its own generic class from asyncpg's own, which
    # names the fault (TooManyConnectionsError, CannotConnectNowError, ...).
    driver = shown.__cause__
    if driver is not None and type(driver).__module__.startswith("asyncpg"):
        shown = driver
    return Outage("database", type(shown).__name__, _code(error))


class OutageReports:
    """One ``storage_unavailable`` warning per cause per interval."""

    def __init__(self, interval: float = REPORT_INTERVAL) -> None:
        self.interval = interval
        self._last: dict[Outage, float] = {}
        self._since: dict[Outage, int] = {}

    def report(self, outage: Outage, **context: Any) -> None:
        now = time.monotonic()
        last = self._last.get(outage)
        if last is not None and now - last < self.interval:
            self._since[outage] = self._since.get(outage, 0) + 1
            return
        self._last[outage] = now
        suppressed = self._since.pop(outage, 0)
        log.warning(
            "storage_unavailable",
            dependency=outage.dependency,
            error=outage.error,
            code=outage.code,
            answered_503_since_last_report=suppressed,
            **context,
        )
