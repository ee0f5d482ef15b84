"""Running the service: ``migrate``, ``serve``, and ``dev-cert`` for local HTTPS."""

from __future__ import annotations

import asyncio
import os
import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from sqlalchemy.exc import OperationalError

from bastion.cli.common import (
    DatabaseNotReady,
    check_schema,
    data_dir_refused,
    fail,
    load_settings,
    require_database_file,
)
from bastion.config import Settings, unknown_variables
from bastion.devcert import DevCertExists, write_dev_certificate
from bastion.logs import configure_logging, get_logger
from bastion.server import ServerConfigError, check_tls_files, run_server
from bastion.storage import Database, StorageUnavailable
from bastion.storage.data_dir_lock import DataDirInUse, lock_data_dir
from bastion.storage.migrate import current_revision, upgrade_to_head
from bastion.storage.sqlite import write_locked_elsewhere

log = get_logger("bastion.config")

MIGRATION_FIRST_PAUSE = 0.01
MIGRATION_MAX_PAUSE = 0.25


async def _migrate_once(settings: Settings) -> str | None:
    database = Database.from_settings(settings)
    try:
        if not await database.ping():
            raise StorageUnavailable
        await upgrade_to_head(database.engine)
        return await current_revision(database.engine)
    finally:
        await database.dispose()


async def _migrate(settings: Settings) -> str | None:
    """Migrates, waiting up to ``BASTION_DATABASE_TIMEOUT`` while another process holds
    SQLite's write lock: two servers (with Redis) or ``bastion migrate`` and a server
    starting at once on a new file, where one failed with "database is locked" (bastion's
    SQLite connections never wait inside SQLite). The other's migration is one
    transaction; after it, there is nothing left to do."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.database_timeout
    pause = MIGRATION_FIRST_PAUSE
    while True:
        try:
            return await _migrate_once(settings)
        except OperationalError as error:
            if not write_locked_elsewhere(error):
                raise
            if loop.time() + pause > deadline:
                raise StorageUnavailable from error
        await asyncio.sleep(pause)
        pause = min(pause * 2, MIGRATION_MAX_PAUSE)


async def _check_served_database(settings: Settings) -> None:
    """Raises ``DatabaseNotReady`` when the (external) database is missing or behind. One
    that does not answer cannot be judged: the server starts and reports not-ready."""
    require_database_file(settings)
    database = Database.from_settings(settings)
    try:
        if await database.ping():
            await check_schema(database, settings)
    finally:
        await database.dispose()


def _log_unknown_variables() -> None:
    for variable in unknown_variables(os.environ):
        log.warning(
            "unknown_setting",
            variable=variable.name,
            source=variable.source,
            suggestion=variable.suggestion,
            detail=variable.message(),
        )


@contextmanager
def _sole_server(settings: Settings) -> Iterator[None]:
    """Without Redis, the data directory's lock for as long as the block runs (the
    server's life): a second server would keep revocations and limits of its own."""
    if settings.redis_url is not None:
        yield
        return
    try:
        lock = lock_data_dir(settings.data_dir)
    except DataDirInUse as in_use:
        holder = f" (pid {in_use.holder})" if in_use.holder else ""
        raise fail(
            f"bastion: another `bastion serve`{holder} is serving from the data directory "
            f"{in_use.data_dir}; not serving\n"
            "Without BASTION_REDIS_URL each server keeps its own revocations and rate limits, "
            "so a logout or a disabled account on one would go unseen by the other: stop "
            "that server, or set BASTION_REDIS_URL (the same Redis) on both."
        ) from None
    except OSError as error:
        raise data_dir_refused(error, "not serving") from None
    with lock:
        yield


def migrate() -> None:
    """Apply every pending migration to the configured database."""
    settings = load_settings()
    configure_logging(settings.log_level)
    try:
        revision = asyncio.run(_migrate(settings))
    except StorageUnavailable:
        raise fail("bastion: the database does not answer; nothing was migrated") from None
    except OSError as error:
        raise data_dir_refused(error, "nothing was migrated") from None
    typer.echo(f"database at revision {revision}")


def serve(
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    workers: Annotated[int, typer.Option(min=1, max=64)] = 1,
    ssl_certfile: Annotated[str | None, typer.Option(help="PEM certificate chain.")] = None,
    ssl_keyfile: Annotated[str | None, typer.Option(help="PEM private key.")] = None,
) -> None:
    """Serve the API (migrating the embedded SQLite database first).

    Without BASTION_REDIS_URL it holds a lock on the data directory while it runs: a second
    server there refuses to start, as its revocations and rate limits would be its own.
    """
    settings = load_settings(warn_unknown=False)
    configure_logging(settings.log_level)
    _log_unknown_variables()
    if (ssl_certfile is None) != (ssl_keyfile is None):
        raise fail("bastion: --ssl-certfile and --ssl-keyfile go together", code=2)
    if ssl_certfile is not None and ssl_keyfile is not None:
        try:
            check_tls_files(ssl_certfile, ssl_keyfile)
        except ServerConfigError as error:
            raise fail(f"bastion: {error}", code=2) from None
    if workers > 1 and settings.redis_url is None:
        raise fail(
            "bastion: --workers above 1 needs BASTION_REDIS_URL: without Redis each worker "
            "keeps its own revocations, so a logout on one would not be seen by the others",
            code=2,
        )
    with _sole_server(settings):
        try:
            if settings.uses_embedded_database:
                asyncio.run(_migrate(settings))
            else:
                asyncio.run(_check_served_database(settings))
        except StorageUnavailable:
            raise fail("bastion: the database does not answer; not serving") from None
        except DatabaseNotReady as not_ready:
            raise fail(not_ready.message("not serving")) from None
        except OSError as error:
            raise data_dir_refused(error, "not serving") from None
        run_server(
            settings,
            host=host,
            port=port,
            workers=workers,
            ssl_certfile=ssl_certfile,
            ssl_keyfile=ssl_keyfile,
        )


def dev_cert(
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing certificate and key.")
    ] = False,
) -> None:
    """Write a self-signed certificate and key for local HTTPS into the data dir.

    For local development only. Valid 90 days for localhost, 127.0.0.1 and ::1 (ECDSA P-256).
    Clients trust it only when told to, e.g. with curl --cacert. In production, use a
    certificate from a CA, or terminate TLS at a proxy (docs/deployment.md).
    """
    settings = load_settings()  # logging left unconfigured: the paths are the only output
    try:
        pair = write_dev_certificate(settings.data_dir, force=force)
    except DevCertExists as exists:
        raise fail(
            f"bastion: {exists.path} exists already; nothing was written "
            "(--force replaces the certificate and the key)"
        ) from None
    except OSError as error:
        raise fail(f"bastion: cannot write to the data dir: {error.strerror or error}") from None
    certfile, keyfile = shlex.quote(str(pair.certfile)), shlex.quote(str(pair.keyfile))
    typer.echo(
        f"certificate: {pair.certfile}\n"
        f"private key: {pair.keyfile}\n"
        f"valid until {pair.not_valid_after:%Y-%m-%d %H:%M} UTC, for localhost, 127.0.0.1 "
        "and ::1; for local development only\n"
        "serve over HTTPS with:\n"
        f"  bastion serve --ssl-certfile {certfile} --ssl-keyfile {keyfile}\n"
        "and trust it in a client, e.g.:\n"
        f"  curl --cacert {certfile} https://127.0.0.1:8000/health/live"
    )
