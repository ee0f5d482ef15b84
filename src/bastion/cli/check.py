"""Inspecting the service without running it: ``check`` and ``openapi``."""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from bastion.cli.common import DatabaseNotReady, current_database, load_settings
from bastion.config import Finding, Settings, insecure_findings
from bastion.storage import StorageUnavailable

ADMIN_ROLE = "admin"

if TYPE_CHECKING:
    from fastapi import FastAPI


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
    deploy = deploy or settings.is_production
    findings = [
        *insecure_findings(settings, deploy=deploy),
        *service_route_findings(settings),
        *(account_findings(settings) if deploy else []),
    ]
    for finding in findings:
        typer.echo(str(finding))
    if findings:
        raise typer.Exit(1)
    typer.echo("no insecure settings found")


@contextmanager
def _scratch_service_app(settings: Settings) -> Iterator[FastAPI]:
    """The service app built over a throw-away data dir, for reading its routes or OpenAPI
    document: nothing creates ./.bastion or talks to the configured database or Redis, and
    no key is generated (nor logged) for it."""
    from pydantic import SecretStr

    from bastion.app import create_app
    from bastion.security.encryption import new_key_text
    from bastion.services import services_of

    with tempfile.TemporaryDirectory() as scratch:
        app = create_app(
            settings.model_copy(
                update={
                    "data_dir": Path(scratch),
                    "database_url": None,
                    "redis_url": None,
                    "encryption_key": SecretStr(new_key_text()),
                }
            )
        )
        try:
            yield app
        finally:
            asyncio.run(services_of(app).database.dispose())


def service_route_findings(settings: Settings) -> list[Finding]:
    """A finding for every route of the service app that declares no policy."""
    from bastion.route_inventory import route_findings

    with _scratch_service_app(settings) as app:
        return route_findings(app)


def account_findings(settings: Settings) -> list[Finding]:
    """A finding for every enabled admin without a second factor, in the configured
    database. A database that does not exist yet (or is not migrated) has no admins to
    judge; one that does not answer is a finding of its own: nothing could be judged."""
    try:
        return asyncio.run(_admins_without_a_second_factor(settings))
    except (DatabaseNotReady, OSError):
        return []
    except StorageUnavailable:
        return [
            Finding(
                "database",
                "does not answer: admins without a second factor could not be checked",
                production_only=True,
            )
        ]


async def _admins_without_a_second_factor(settings: Settings) -> list[Finding]:
    from sqlalchemy import select

    from bastion.storage.tables import User

    found = []
    async with current_database(settings) as database, database.read() as session:
        rows = await session.stream(
            select(User.username, User.roles)
            .where(User.disabled.is_(False), User.mfa_enabled.is_(False))
            .order_by(User.username)
        )
        async for username, roles in rows:
            if ADMIN_ROLE in roles:
                found.append(
                    Finding(
                        "account",
                        f"admin {username!r} has no second factor: a stolen password is "
                        "enough to change every user; sign in and set up TOTP "
                        "(POST /auth/mfa/totp, or the console's Account page)",
                        production_only=True,
                    )
                )
    return found


def openapi() -> None:
    """Print the OpenAPI document."""
    # The document does not depend on data: printing it never creates ./.bastion.
    with _scratch_service_app(load_settings()) as app:
        json.dump(app.openapi(), sys.stdout, indent=2)
    sys.stdout.write("\n")
