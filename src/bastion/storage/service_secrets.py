"""Secrets every process must share, generated once and kept in the database."""

from __future__ import annotations

import secrets
from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from bastion.storage.tables import ServiceSecret

SECRET_BYTES = 32


async def service_secret(session: AsyncSession, name: str, *, now: datetime) -> bytes:
    """The secret ``name``; generated on first use. Two processes racing to create it
    both end up with the one that was stored first."""
    existing = await session.get(ServiceSecret, name)
    if existing is None:
        try:
            async with session.begin_nested():
                session.add(
                    ServiceSecret(name=name, value=secrets.token_hex(SECRET_BYTES), created_at=now)
                )
        except IntegrityError:
            pass
        existing = await session.get(ServiceSecret, name, populate_existing=True)
        assert existing is not None  # noqa: S101 (just stored, by us or the winner)
    return bytes.fromhex(existing.value)
