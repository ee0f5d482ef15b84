"""``bastion keys``: the JWT signing keys, and re-encryption after a rotation of the keys
for secrets at rest."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import typer
from sqlalchemy import select, update
from sqlalchemy.orm import InstrumentedAttribute

from bastion.cli.common import current_database, fail, load_settings, run_on_current_database
from bastion.config import Settings
from bastion.security.encryption import DecryptionFailed, EncryptionKeys
from bastion.security.tokens import SigningKey
from bastion.storage import Database
from bastion.storage.encryption_key import load_encryption_keys
from bastion.storage.signing_keys import rotate_signing_key
from bastion.storage.tables import OutboxMail, User

keys_cli = typer.Typer(
    help="The JWT signing keys; re-encryption under a new BASTION_ENCRYPTION_KEY.",
    no_args_is_help=True,
)


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


# Re-encryption: the columns holding secrets at rest, and the associated data each value is
# bound to. The contexts must stay those the service writes (identity.second_factor's
# totp_context, mail.outbox's content_context); tests/test_keys_reencrypt.py checks it.
REENCRYPT_BATCH = 200


@dataclass(frozen=True, slots=True)
class _EncryptedColumn:
    label: str  # as reported: "users.totp_secret"
    row_key: InstrumentedAttribute[uuid.UUID]
    value: InstrumentedAttribute[str | None]
    context_source: InstrumentedAttribute[Any]
    context_prefix: str
    named_by: str  # what the reported ids are: "user", "message"

    def context(self, source: object) -> str:
        return f"{self.context_prefix}{source}"


ENCRYPTED_COLUMNS = (
    _EncryptedColumn("users.totp_secret", User.id, User.totp_secret, User.id, "totp:", "user"),
    _EncryptedColumn(
        "mail_outbox.content", OutboxMail.id, OutboxMail.content, OutboxMail.message_id,
        "mail:", "message",
    ),
)


@dataclass(slots=True)
class Reencryption:
    """What ``bastion keys reencrypt`` did: values moved to the current key, and values no
    configured key opens (left as they were), by column."""

    reencrypted: dict[str, int] = field(default_factory=dict)
    unreadable: dict[str, list[str]] = field(default_factory=dict)


async def _reencrypt_batch(
    database: Database, keys: EncryptionKeys, column: _EncryptedColumn, after: uuid.UUID | None,
    outcome: Reencryption,
) -> uuid.UUID | None:
    """One batch of ``column``'s values from ``after`` on, by row key: read, then those not
    under the current key rewritten in one transaction. Each update only applies if the
    value is still the one read, so a secret the running service replaced meanwhile (a
    user setting up TOTP again) is never overwritten with the old one. Returns where the
    next batch starts, None when the column is done."""
    query = (
        select(column.row_key, column.context_source, column.value)
        .where(column.value.is_not(None))
        .order_by(column.row_key)
        .limit(REENCRYPT_BATCH)
    )
    if after is not None:
        query = query.where(column.row_key > after)
    async with database.read() as session:
        rows = (await session.execute(query)).all()
    rewrites: list[tuple[uuid.UUID, str, str]] = []
    for row_key, source, stored in rows:
        if not keys.needs_reencryption(stored):
            continue
        context = column.context(source)
        try:
            plaintext = keys.decrypt(stored, context=context)
        except DecryptionFailed:
            outcome.unreadable.setdefault(column.label, []).append(str(source))
            continue
        rewrites.append((row_key, stored, keys.encrypt(plaintext, context=context)))
    if rewrites:
        table = column.row_key.class_
        async with database.transaction() as session:
            for row_key, stored, sealed in rewrites:
                written = await session.execute(
                    update(table)
                    .where(column.row_key == row_key, column.value == stored)
                    .values({column.value: sealed})
                )
                if written.rowcount == 1:  # type: ignore[attr-defined]
                    outcome.reencrypted[column.label] = (
                        outcome.reencrypted.get(column.label, 0) + 1
                    )
    if len(rows) < REENCRYPT_BATCH:
        return None
    last_key: uuid.UUID = rows[-1][0]
    return last_key


async def reencrypt_all(database: Database, keys: EncryptionKeys) -> Reencryption:
    """Moves every secret at rest that is not under the current (first) key onto it."""
    outcome = Reencryption()
    for column in ENCRYPTED_COLUMNS:
        outcome.reencrypted.setdefault(column.label, 0)
        after: uuid.UUID | None = None
        while True:
            after = await _reencrypt_batch(database, keys, column, after, outcome)
            if after is None:
                break
    return outcome


async def _reencrypt(settings: Settings) -> Reencryption:
    async with current_database(settings) as database:
        # Loaded once the database is known to be there: in development a missing key file
        # would otherwise be generated beside no database.
        keys = load_encryption_keys(settings)
        return await reencrypt_all(database, keys)


@keys_cli.command("reencrypt")
def keys_reencrypt() -> None:
    """Re-encrypt the secrets at rest (TOTP secrets, queued mail) still under an older
    key of BASTION_ENCRYPTION_KEY with the first one, so the older keys can then be
    dropped. Safe to run while the service runs, and again: values already under the
    first key are left alone. Values no configured key opens are listed and left as they
    were (exit 1)."""
    settings = load_settings()
    nothing_done = "nothing was re-encrypted"
    try:
        outcome = run_on_current_database(_reencrypt(settings), nothing_done=nothing_done)
    except ValueError as error:
        raise fail(f"bastion: {error}; {nothing_done}", code=2) from None
    total = sum(outcome.reencrypted.values())
    by_column = ", ".join(f"{count} in {label}" for label, count in outcome.reencrypted.items())
    typer.echo(f"re-encrypted {total} values with the current key ({by_column})")
    if outcome.unreadable:
        lines = [
            f"  {column.label}, {column.named_by} {source}"
            for column in ENCRYPTED_COLUMNS
            for source in outcome.unreadable.get(column.label, [])
        ]
        raise fail(
            f"bastion: {len(lines)} values decrypt under no key of BASTION_ENCRYPTION_KEY "
            "(a key dropped too soon, or altered data); left as they were:\n"
            + "\n".join(lines)
        )
