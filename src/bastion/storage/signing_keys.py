"""The signing-key ring, kept in the database so every worker and host signs alike.

The private keys live in the ``signing_keys`` table (never in logs or responses). The ring
in memory is reloaded when a token names a ``kid`` it does not know (another process
rotated) and before tokens are issued, so ``bastion keys rotate`` takes effect everywhere
without a restart.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from bastion.config import Settings
from bastion.security.tokens import (
    LEEWAY_SECONDS,
    KeyRing,
    SigningKey,
    generate_signing_key,
    shared_secret_key,
    signing_key_from_pem,
)
from bastion.storage.database import Database, StorageUnavailable
from bastion.storage.outages import Outage
from bastion.storage.tables import SigningKeyRecord

# An unknown kid triggers at most one reload per interval, so forged kids cannot turn
# every request into a database query.
RELOAD_INTERVAL_SECONDS = 5.0
# A rotated key is published (in the database, so in every host's next reload and in the
# JWKS) this long before it signs: longer than the reload interval, so a host that meets a
# token of the new key has always reloaded since the key was published, or may reload now.
# The old key signs until then.
SIGNING_DELAY_SECONDS = 3 * RELOAD_INTERVAL_SECONDS


def _from_record(record: SigningKeyRecord) -> SigningKey:
    return signing_key_from_pem(
        kid=record.kid,
        algorithm=record.algorithm,
        pem=record.private_key_pem,
        created_at=record.created_at,
        retired_at=record.retired_at,
    )


def _record(key: SigningKey) -> SigningKeyRecord:
    return SigningKeyRecord(
        kid=key.kid,
        algorithm=key.algorithm,
        private_key_pem=key.private_key_pem(),
        created_at=key.created_at,
        retired_at=key.retired_at,
    )


async def _active_records(session: AsyncSession) -> list[SigningKeyRecord]:
    result = await session.scalars(
        select(SigningKeyRecord).where(SigningKeyRecord.retired_at.is_(None))
    )
    return list(result)


async def ensure_signing_key(session: AsyncSession, settings: Settings, *, now: datetime) -> None:
    """Generates the first key (and one for a newly configured algorithm) on start-up."""
    if settings.jwt_algorithm == "HS256":
        return
    active = await _active_records(session)
    if any(record.algorithm == settings.jwt_algorithm for record in active):
        return
    for record in active:  # the operator switched algorithms: the old keys stop signing
        record.retired_at = now
    session.add(_record(generate_signing_key(settings.jwt_algorithm, now=now)))


async def rotate_signing_key(
    session: AsyncSession, settings: Settings, *, now: datetime
) -> SigningKey:
    """A new signing key, published now and signing from ``now + SIGNING_DELAY_SECONDS``,
    when the keys signing until then retire; they stay published until their tokens have
    expired."""
    if settings.jwt_algorithm == "HS256":
        raise ValueError("HS256 uses the configured secret; rotate BASTION_JWT_SECRET instead")
    signs_from = now + timedelta(seconds=SIGNING_DELAY_SECONDS)
    for record in await _active_records(session):
        record.retired_at = signs_from
    expired_before = now - timedelta(seconds=settings.access_token_ttl + LEEWAY_SECONDS)
    await session.execute(
        delete(SigningKeyRecord).where(SigningKeyRecord.retired_at < expired_before)
    )
    key = generate_signing_key(settings.jwt_algorithm, now=signs_from)
    session.add(_record(key))
    return key


async def load_key_ring(session: AsyncSession, settings: Settings) -> KeyRing:
    if settings.jwt_algorithm == "HS256":
        assert settings.jwt_secret is not None  # noqa: S101 (Settings refuses a missing secret)
        secret = settings.jwt_secret.get_secret_value().encode()
        return KeyRing([shared_secret_key(secret)], max_token_lifetime=settings.access_token_ttl)
    records = await session.scalars(select(SigningKeyRecord))
    return KeyRing(
        (_from_record(record) for record in records),
        max_token_lifetime=settings.access_token_ttl,
    )


class KeyRingHolder:
    """The process's current ring, with throttled reloads from the database."""

    def __init__(self, database: Database, settings: Settings) -> None:
        self._database = database
        self._settings = settings
        self._ring: KeyRing | None = None
        self._loaded_at = float("-inf")
        self._unknown_kid_reload_at = float("-inf")
        self._lock = asyncio.Lock()
        # False while the service's start-up work waits for the database (see
        # bastion.app.start_services): no token is issued or accepted before it is done.
        self.available = True

    def _check_available(self) -> None:
        if not self.available:
            raise StorageUnavailable(outage=Outage("database", "StartUpIncomplete"))

    async def ring(self) -> KeyRing:
        self._check_available()
        if self._ring is None:
            await self.reload()
        assert self._ring is not None  # noqa: S101 (reload sets it or raises)
        return self._ring

    async def reload(self, session: AsyncSession | None = None) -> KeyRing:
        """Loads the ring, inside ``session`` when the caller has a transaction open.

        A caller with an open transaction must pass it, to see the keys it wrote; without
        one, the ring is loaded by a read that takes no write lock.
        """
        async with self._lock:
            if session is not None:
                self._ring = await load_key_ring(session, self._settings)
            else:
                async with self._database.read() as own:
                    self._ring = await load_key_ring(own, self._settings)
            self._loaded_at = time.monotonic()
            return self._ring

    async def reload_if_stale(self, session: AsyncSession | None = None) -> KeyRing | None:
        """Reloads unless a reload happened within the throttle interval; None if skipped."""
        self._check_available()
        if time.monotonic() - self._loaded_at < RELOAD_INTERVAL_SECONDS:
            return None
        return await self.reload(session)

    async def reload_for_unknown_kid(self) -> KeyRing | None:
        """A token names a ``kid`` the ring lacks: reload, at most once per interval on this
        account alone, so that the reloads before issuing (``reload_if_stale``) never hold
        it back; None if skipped. Forged kids still cost one read per interval at most."""
        self._check_available()
        now = time.monotonic()
        if now - self._unknown_kid_reload_at < RELOAD_INTERVAL_SECONDS:
            return None
        self._unknown_kid_reload_at = now
        return await self.reload()
