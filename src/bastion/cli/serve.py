"""Running the service: ``migrate``, ``serve``, and ``dev-cert`` for local HTTPS."""

from __future__ import annotations

import asyncio
import shlex
from typing import Annotated

import typer

from bastion.cli.common import data_dir_refused, fail, load_settings
from bastion.config import Settings
from bastion.devcert import DevCertExists, write_dev_certificate
from bastion.logs import configure_logging
from bastion.server import ServerConfigError, check_tls_files, run_server
from bastion.storage import Database, StorageUnavailable
from bastion.storage.migrate import current_revision, head_revision, upgrade_to_head


async def _migrate(settings: Settings) -> str | None:
    database = Database.from_settings(settings)
    try:
        if not await database.ping():
            raise StorageUnavailable
        await upgrade_to_head(database.engine)
        return await current_revision(database.engine)
    finally:
        await database.dispose()


async def _pending_migrations(settings: Settings) -> bool | None:
    """True when the schema is behind; None when the database does not answer."""
    database = Database.from_settings(settings)
    try:
        if not await database.ping():
            return None
        return await current_revision(database.engine) != head_revision()
    finally:
        await database.dispose()


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
    """Serve the API (migrating the embedded SQLite database first)."""
    settings = load_settings()
    configure_logging(settings.log_level)
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
    try:
        if settings.uses_embedded_database:
            asyncio.run(_migrate(settings))
        else:
            pending = asyncio.run(_pending_migrations(settings))
            if pending:
                raise fail("bastion: the database schema is behind; run `bastion migrate` first")
    except StorageUnavailable:
        raise fail("bastion: the database does not answer; not serving") from None
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
