"""``bastion keys``: the JWT signing keys."""

from __future__ import annotations

from datetime import UTC, datetime

import typer

from bastion.cli.common import current_database, fail, load_settings, run_on_current_database
from bastion.config import Settings
from bastion.security.tokens import SigningKey
from bastion.storage.signing_keys import rotate_signing_key

keys_cli = typer.Typer(help="The JWT signing keys.", no_args_is_help=True)


async def _rotate_keys(settings: Settings) -> SigningKey:
    async with current_database(settings) as database, database.transaction() as session:
        return await rotate_signing_key(session, settings, now=datetime.now(UTC))


@keys_cli.command("rotate")
def keys_rotate() -> None:
    """Publish a new signing key now; it signs from a few seconds later, once every running
    server has had the time to learn it. Old public keys stay in the JWKS until their
    tokens expire. Running servers pick the new key up without a restart."""
    settings = load_settings()
    if settings.jwt_algorithm == "HS256":
        raise fail("bastion: HS256 signs with BASTION_JWT_SECRET; rotate that secret instead")
    key = run_on_current_database(_rotate_keys(settings), nothing_done="no key was rotated")
    signs_from = key.created_at.isoformat(timespec="seconds")
    typer.echo(f"new signing key {key.kid} ({settings.jwt_algorithm}), signing from {signs_from}")
