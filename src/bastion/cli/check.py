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

from bastion.cli.common import load_settings
from bastion.config import Finding, Settings, insecure_findings

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
    from bastion.route_inventory import route_findings

    with _scratch_service_app(settings) as app:
        return route_findings(app)


def openapi() -> None:
    """Print the OpenAPI document."""
    # The document does not depend on data: printing it never creates ./.bastion.
    with _scratch_service_app(load_settings()) as app:
        json.dump(app.openapi(), sys.stdout, indent=2)
    sys.stdout.write("\n")
