"""Counting failed password checks and locking the account for a growing period.

Counters are changed by single UPDATE statements in the database, so parallel guesses
cannot race a counter past the threshold: exactly one of them sets the lock.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from bastion.audit.context import AuditContext
from bastion.audit.events import AuditEventType, Outcome
from bastion.config import Settings
from bastion.storage.tables import User


def is_locked(locked_until: datetime | None, now: datetime) -> bool:
    return locked_until is not None and locked_until > now


class Lockout:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def period(self, lockouts: int) -> timedelta:
        """The length of the ``lockouts``-th lock: the base period, doubled each time."""
        seconds = self.settings.lockout_base_seconds * 2 ** min(lockouts - 1, 30)
        return timedelta(seconds=min(seconds, self.settings.lockout_max_seconds))

    async def count_failure(
        self, session: AsyncSession, user_id: uuid.UUID, now: datetime, audit: AuditContext
    ) -> None:
        failures = await session.scalar(
            update(User)
            .where(User.id == user_id)
            .values(failed_logins=User.failed_logins + 1, updated_at=now)
            .returning(User.failed_logins)
        )
        threshold = self.settings.lockout_threshold
        if failures is None or failures < threshold:
            return
        lockouts = await session.scalar(
            update(User)
            .where(User.id == user_id, User.failed_logins >= threshold)
            .values(failed_logins=0, lockouts=User.lockouts + 1)
            .returning(User.lockouts)
        )
        if lockouts is None:  # another request set this lock already
            return
        period = self.period(lockouts)
        await session.execute(
            update(User).where(User.id == user_id).values(locked_until=now + period)
        )
        await audit.record(
            session, AuditEventType.LOCKOUT, Outcome.DENIED,
            subject=str(user_id), seconds=int(period.total_seconds()), lockouts=lockouts,
        )
