"""The ``bastion`` command: serve, migrate, check, openapi, create-admin, audit, keys, dev-cert.

One module a command group; this one only assembles them, in the order ``--help`` lists
them. ``main`` is the console entry point (``bastion.cli:main`` in pyproject.toml).
"""

from __future__ import annotations

import typer

from bastion.cli.admin import create_admin_command
from bastion.cli.audit import audit_cli
from bastion.cli.check import check, openapi
from bastion.cli.common import load_settings
from bastion.cli.keys import keys_cli
from bastion.cli.serve import dev_cert, migrate, serve

cli = typer.Typer(
    name="bastion",
    help="A secure-by-default API service.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
cli.command()(migrate)
cli.command()(serve)
cli.command("dev-cert")(dev_cert)
cli.command()(check)
cli.command()(openapi)
cli.command("create-admin")(create_admin_command)
cli.add_typer(audit_cli, name="audit")
cli.add_typer(keys_cli, name="keys")


def main() -> None:
    cli()


__all__ = ["cli", "load_settings", "main"]
