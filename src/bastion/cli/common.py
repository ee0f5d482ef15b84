"""What every command shares: reading the settings, refusing with a message, the database.

A command that cannot go on says why on stderr and exits non-zero (``fail``): 2 for a usage
or configuration problem, 1 for anything else. Configuration problems name the ``BASTION_*``
variable to set, and every command warns (on stderr; ``serve`` in its log) about
``BASTION_*`` variables that are no setting. Commands that touch the database open it
through ``current_database``, which refuses a database that does not answer, is not there
(it never creates an empty SQLite file) or is behind, naming the database it looked at.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import typer
from pydantic import ValidationError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from bastion.config import Settings, UnknownVariable, error_lines, unknown_variables
from bastion.storage import Database, StorageUnavailable
from bastion.storage.migrate import current_revision, head_revision
from bastion.storage.sqlite import is_in_memory

Result = TypeVar("Result")


def fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(message, err=True)
    return typer.Exit(code)


def _warn(unknown: list[UnknownVariable]) -> None:
    for variable in unknown:
        typer.echo(f"bastion: warning: {variable.message()}", err=True)


def load_settings(*, warn_unknown: bool = True) -> Settings:
    """Settings from the environment; an invalid or refused configuration exits 2, one line
    per problem naming its variable. ``BASTION_*`` names that are no setting are warned
    about on stderr (before a refusal too: a misspelling may be its cause); ``serve`` passes
    ``warn_unknown=False`` and logs them instead (``unknown_variables``)."""
    unknown = unknown_variables(os.environ)
    try:
        settings = Settings()
    except ValidationError as error:
        _warn(unknown)
        lines = error_lines(error)
        raise fail("bastion: invalid configuration\n" + "\n".join(lines), code=2) from None
    if warn_unknown:
        _warn(unknown)
    return settings


def describe_database(settings: Settings) -> str:
    """The database the settings open, as an operator would look for it: the SQLite file's
    absolute path, or the URL without its password (nor its query, which may hold one)."""
    if settings.uses_embedded_database:
        return f"the SQLite database {settings.sqlite_path.resolve()}"
    try:
        url = make_url(settings.resolved_database_url())
    except ArgumentError:
        return "the database of BASTION_DATABASE_URL"
    if url.get_backend_name() == "sqlite":
        if is_in_memory(url):
            return "an in-memory SQLite database"
        return f"the SQLite database {Path(str(url.database)).resolve()}"
    return f"the database {url.set(query={}).render_as_string(hide_password=True)}"


def _pointing_at_the_service(settings: Settings) -> str:
    """What to set when the command opened another database than the service's."""
    if settings.uses_embedded_database:
        return "set BASTION_DATA_DIR to the service's data directory"
    return "set BASTION_DATABASE_URL to the service's database"


class DatabaseNotReady(Exception):
    """The database is not there, or not migrated to this version of bastion: what was
    found, and what to do about it."""

    def __init__(self, problem: str, remedy: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.remedy = remedy

    def message(self, nothing_done: str) -> str:
        return f"bastion: {self.problem}; {nothing_done}\n{self.remedy}"


def _sqlite_file(settings: Settings) -> Path | None:
    """The SQLite file the settings name, if they name one."""
    if settings.uses_embedded_database:
        return settings.sqlite_path
    try:
        url = make_url(settings.resolved_database_url())
    except ArgumentError:
        return None
    if url.get_backend_name() != "sqlite" or is_in_memory(url):
        return None
    return Path(str(url.database))


def require_database_file(settings: Settings) -> None:
    """Raises ``DatabaseNotReady`` when the settings name a SQLite file that is not there:
    opening it would create an empty database (in the wrong place, as likely as not: a
    command run from another working directory). ``OSError`` when its directory cannot be
    used (say, a path through a regular file)."""
    path = _sqlite_file(settings)
    if path is None:
        return
    try:
        os.stat(path.parent)
        os.stat(path)
    except FileNotFoundError:
        pass
    else:
        return
    where = ""
    if settings.uses_embedded_database and not settings.data_dir.is_absolute():
        where = f" (BASTION_DATA_DIR {settings.data_dir}, from the working directory {Path.cwd()})"
    remedy = _pointing_at_the_service(settings)
    if where:
        remedy += " (or run from the service's working directory)"
    raise DatabaseNotReady(
        f"there is no database at {path.resolve()}{where}",
        f"{remedy}, or run `bastion migrate` first to start a new database there",
    )


async def check_schema(database: Database, settings: Settings) -> None:
    """Raises ``DatabaseNotReady`` unless the database answering is migrated to this
    version of bastion."""
    current, head = await current_revision(database.engine), head_revision()
    if current == head:
        return
    described = describe_database(settings)
    if current is None:
        raise DatabaseNotReady(
            f"{described} has no bastion schema",
            f"run `bastion migrate` first, or {_pointing_at_the_service(settings)}",
        )
    raise DatabaseNotReady(
        f"the schema of {described} is not current (revision {current}; this version "
        f"of bastion needs {head})",
        "run `bastion migrate` first",
    )


@asynccontextmanager
async def current_database(settings: Settings) -> AsyncIterator[Database]:
    """The configured database, there, answering and migrated to this version; else raises
    ``DatabaseNotReady`` or ``StorageUnavailable``, which the commands turn into messages."""
    require_database_file(settings)
    database = Database.from_settings(settings)
    try:
        if not await database.ping():
            raise StorageUnavailable
        await check_schema(database, settings)
        yield database
    finally:
        await database.dispose()


def data_dir_refused(error: OSError, nothing_done: str) -> typer.Exit:
    """The data dir or the SQLite file cannot be created, opened or made private (a
    read-only or immutable file, a full disk, a path through a regular file): one line
    naming the file and the system's reason, never a traceback."""
    where = f" {error.filename}" if error.filename else ""
    return fail(f"bastion: cannot use{where}: {error.strerror or error}; {nothing_done}")


def run_on_current_database(work: Coroutine[Any, Any, Result], *, nothing_done: str) -> Result:
    """Runs ``work`` (which opens ``current_database``); a database that does not answer or
    is missing or behind, or a data dir that cannot be used, exits 1 with a message,
    ``nothing_done`` saying what did not happen."""
    try:
        return asyncio.run(work)
    except StorageUnavailable:
        raise fail(f"bastion: the database does not answer; {nothing_done}") from None
    except DatabaseNotReady as not_ready:
        raise fail(not_ready.message(nothing_done)) from None
    except OSError as error:
        raise data_dir_refused(error, nothing_done) from None
