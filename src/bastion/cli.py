"""The ``bastion`` command: serve, migrate, check, openapi, create-admin, audit, keys, dev-cert."""

from __future__ import annotations

import asyncio
import json
import shlex
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import TypeAdapter, ValidationError

from bastion.admin.service import create_admin
from bastion.audit.service import ChainVerification, verify_chain
from bastion.config import Finding, Settings, insecure_findings
from bastion.devcert import DevCertExists, write_dev_certificate
from bastion.identity.accounts import AccountExists
from bastion.identity.schemas import Email, Username
from bastion.logs import configure_logging
from bastion.security.passwords import PasswordHasher, password_problems
from bastion.server import ServerConfigError, check_tls_files, run_server
from bastion.storage import Database, StorageUnavailable
from bastion.storage.migrate import current_revision, head_revision, upgrade_to_head
from bastion.storage.signing_keys import rotate_signing_key

if TYPE_CHECKING:
    from fastapi import FastAPI

cli = typer.Typer(
    name="bastion",
    help="A secure-by-default API service.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _fail(message: str, code: int = 1) -> typer.Exit:
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
        raise _fail("bastion: invalid configuration\n" + "\n".join(lines), code=2) from None


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


@cli.command()
def migrate() -> None:
    """Apply every pending migration to the configured database."""
    settings = load_settings()
    configure_logging(settings.log_level)
    try:
        revision = asyncio.run(_migrate(settings))
    except StorageUnavailable:
        raise _fail("bastion: the database does not answer; nothing was migrated") from None
    typer.echo(f"database at revision {revision}")


@cli.command()
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
        raise _fail("bastion: --ssl-certfile and --ssl-keyfile go together", code=2)
    if ssl_certfile is not None and ssl_keyfile is not None:
        try:
            check_tls_files(ssl_certfile, ssl_keyfile)
        except ServerConfigError as error:
            raise _fail(f"bastion: {error}", code=2) from None
    if workers > 1 and settings.redis_url is None:
        raise _fail(
            "bastion: --workers above 1 needs BASTION_REDIS_URL: without Redis each worker "
            "keeps its own revocations, so a logout on one would not be seen by the others",
            code=2,
        )
    if settings.uses_embedded_database:
        asyncio.run(_migrate(settings))
    else:
        pending = asyncio.run(_pending_migrations(settings))
        if pending:
            raise _fail("bastion: the database schema is behind; run `bastion migrate` first")
    run_server(
        settings,
        host=host,
        port=port,
        workers=workers,
        ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile,
    )


@cli.command("dev-cert")
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
        raise _fail(
            f"bastion: {exists.path} exists already; nothing was written "
            "(--force replaces the certificate and the key)"
        ) from None
    except OSError as error:
        raise _fail(f"bastion: cannot write to the data dir: {error.strerror or error}") from None
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


@cli.command()
def check(
    deploy: Annotated[
        bool, typer.Option("--deploy", help="Judge the configuration as production would.")
    ] = False,
) -> None:
    """Report insecure configuration and unguarded routes, one line each; exit 1 on any.

    Without --deploy (and outside production) only what is insecure in every environment
    counts; with it, everything production would refuse counts too.
    """
    settings = load_settings()
    findings = [
        *insecure_findings(settings, deploy=deploy or settings.is_production),
        *service_route_findings(settings),
    ]
    for finding in findings:
        typer.echo(str(finding))
    if findings:
        raise typer.Exit(1)
    typer.echo("no insecure settings found")


@contextmanager
def _scratch_service_app(settings: Settings) -> Iterator[FastAPI]:
    """The service app built over a throw-away data dir, for reading its routes or OpenAPI
    document: nothing creates ./.bastion or talks to the configured database or Redis."""
    from bastion.app import create_app
    from bastion.services import services_of

    with tempfile.TemporaryDirectory() as scratch:
        app = create_app(
            settings.model_copy(
                update={"data_dir": Path(scratch), "database_url": None, "redis_url": None}
            )
        )
        try:
            yield app
        finally:
            asyncio.run(services_of(app).database.dispose())


def service_route_findings(settings: Settings) -> list[Finding]:
    """A finding for every route of the service app that declares no policy."""
    from bastion.dependencies import route_findings

    with _scratch_service_app(settings) as app:
        return route_findings(app)


@cli.command()
def openapi() -> None:
    """Print the OpenAPI document."""
    # The document does not depend on data: printing it never creates ./.bastion.
    with _scratch_service_app(load_settings()) as app:
        json.dump(app.openapi(), sys.stdout, indent=2)
    sys.stdout.write("\n")


MIN_AGE, MAX_AGE = 13, 130  # as for /auth/register


def _read_password() -> str:
    """The new account's password: one line of stdin when it is piped (the trailing newline
    removed, nothing else), otherwise typed twice without echo."""
    if sys.stdin is not None and not sys.stdin.isatty():
        line = sys.stdin.readline()
        if line.endswith("\n"):
            line = line[:-1]
            if line.endswith("\r"):
                line = line[:-1]
        return line
    password: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    return password


def _valid(adapter: TypeAdapter[str], value: str, name: str) -> str:
    try:
        return adapter.validate_python(value)
    except ValidationError:
        raise _fail(f"bastion: --{name} is not a valid {name}", code=2) from None


class SchemaBehind(Exception):
    """The database is not migrated to this version of bastion."""


@asynccontextmanager
async def _current_database(settings: Settings) -> AsyncIterator[Database]:
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


SCHEMA_BEHIND = "bastion: the database schema is not current; run `bastion migrate` first"


async def _create_admin(
    settings: Settings, *, username: str, email: str, age: int, password: str
) -> str:
    """The new admin's id."""
    async with _current_database(settings) as database:
        hasher = PasswordHasher(
            memory_kib=settings.password_hash_memory_kib,
            time_cost=settings.password_hash_time_cost,
            parallelism=settings.password_hash_parallelism,
        )
        password_hash = await hasher.hash(password)  # outside the transaction (write lock)
        async with database.transaction() as session:
            user = await create_admin(
                session,
                username=username,
                email=email,
                age=age,
                password_hash=password_hash,
                now=datetime.now(UTC),
            )
        return str(user.id)


@cli.command("create-admin")
def create_admin_command(
    username: Annotated[str, typer.Option(help="3-32 characters of a-z 0-9 _ . -")],
    email: Annotated[str, typer.Option(help="The admin's email address.")],
    age: Annotated[
        int, typer.Option(min=MIN_AGE, max=MAX_AGE, help="Stored like any account's age.")
    ] = 18,
) -> None:
    """Create an account with the roles admin and user.

    The password is read from stdin when it is piped (one line), otherwise prompted for
    twice. The password policy applies; an existing username or email is refused.
    """
    settings = load_settings()  # logging left unconfigured: the outcome is the only output
    username = _valid(TypeAdapter(Username), username, "username")
    email = _valid(TypeAdapter(Email), email, "email")
    password = _read_password()
    problems = password_problems(password, username=username, email=email)
    if problems:
        raise _fail("bastion: the password was refused\n" + "\n".join(problems), code=2)
    try:
        user_id = asyncio.run(
            _create_admin(settings, username=username, email=email, age=age, password=password)
        )
    except StorageUnavailable:
        raise _fail("bastion: the database does not answer; no account was created") from None
    except SchemaBehind:
        raise _fail(SCHEMA_BEHIND) from None
    except AccountExists:
        raise _fail(
            "bastion: that username or email address exists already; no account was created"
        ) from None
    typer.echo(f"admin {username} created (id {user_id})")


audit_cli = typer.Typer(help="The tamper-evident audit log.", no_args_is_help=True)
cli.add_typer(audit_cli, name="audit")


async def _verify_audit(settings: Settings) -> ChainVerification:
    async with _current_database(settings) as database, database.transaction() as session:
        return await verify_chain(session)


@audit_cli.command("verify")
def audit_verify() -> None:
    """Check the audit hash chain; exit 1 naming the first broken event."""
    settings = load_settings()  # logging left unconfigured: the verdict is the only output
    try:
        verdict = asyncio.run(_verify_audit(settings))
    except StorageUnavailable:
        raise _fail("bastion: the database does not answer; nothing was verified") from None
    except SchemaBehind:
        raise _fail(SCHEMA_BEHIND) from None
    if not verdict.ok:
        raise _fail(f"audit chain broken at event {verdict.broken_seq}: {verdict.reason}")
    typer.echo(f"audit chain intact: {verdict.checked} events")


keys_cli = typer.Typer(help="The JWT signing keys.", no_args_is_help=True)
cli.add_typer(keys_cli, name="keys")


async def _rotate_keys(settings: Settings) -> str:
    async with _current_database(settings) as database, database.transaction() as session:
        return await rotate_signing_key(session, settings, now=datetime.now(UTC))


@keys_cli.command("rotate")
def keys_rotate() -> None:
    """Start signing with a new key; old public keys stay in the JWKS until their tokens
    expire. Running servers pick the new key up without a restart."""
    settings = load_settings()
    if settings.jwt_algorithm == "HS256":
        raise _fail("bastion: HS256 signs with BASTION_JWT_SECRET; rotate that secret instead")
    try:
        kid = asyncio.run(_rotate_keys(settings))
    except StorageUnavailable:
        raise _fail("bastion: the database does not answer; no key was rotated") from None
    except SchemaBehind:
        raise _fail(SCHEMA_BEHIND) from None
    typer.echo(f"new signing key {kid} ({settings.jwt_algorithm})")


def main() -> None:
    cli()
