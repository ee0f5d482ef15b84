"""What every command shares: reading the settings, refusing with a message, the database.

A command that cannot go on says why on stderr and exits non-zero (``fail``): 2 for a usage
or configuration problem, 1 for anything else. Commands that touch the database open it
through ``current_database``, which refuses a database that does not answer or is behind.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import typer
from pydantic import ValidationError

from bastion.config import Settings
from bastion.storage import Database, StorageUnavailable
from bastion.storage.migrate import current_revision, head_revision

SCHEMA_BEHIND = "bastion: the database schema is not current; run `bastion migrate` first"

Result = TypeVar("Result")


def fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(message, err=True)
    return typer.Exit(code)


def load_settings() -> Settings:
    """Settings from the environment; an invalid or refused configuration exits 2, legibly."""
    try:
        return Settings()
    except ValidationError as error:
        lines = [
            f"{'.'.join(str(part) for part in e['loc']) or 'configuration'}: {e['msg']}"
            for e in error.errors(include_input=False, include_url=False)
        ]
        raise fail("bastion: invalid configuration\n" + "\n".join(lines), code=2) from None


class SchemaBehind(Exception):
    """The database is not migrated to this version of bastion."""


@asynccontextmanager
async def current_database(settings: Settings) -> AsyncIterator[Database]:
    """The configured database, answering and migrated to this version; else raises
    ``StorageUnavailable`` or ``SchemaBehind``, which the commands turn into messages."""
    database = Database.from_settings(settings)
    try:
        if not await database.ping():
            raise StorageUnavailable
        if await current_revision(database.engine) != head_revision():
            raise SchemaBehind
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
    is behind, or a data dir that cannot be used, exits 1 with a message, ``nothing_done``
    saying what did not happen."""
    try:
        return asyncio.run(work)
    except StorageUnavailable:
        raise fail(f"bastion: the database does not answer; {nothing_done}") from None
    except SchemaBehind:
        raise fail(SCHEMA_BEHIND) from None
    except OSError as error:
        raise data_dir_refused(error, nothing_done) from None
