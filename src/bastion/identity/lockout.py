"""Counting failed password checks and locking the account for a growing period.

Counters are changed by single conditional UPDATE statements, so parallel guesses cannot
race a counter past the threshold: exactly one of them sets the lock, and a guess that
arrives while the account is locked is never counted and never extends the lock.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from bastion.audit.context import AuditContext
from bastion.audit.events import AuditEventType, Outcome
from bastion.config import Settings
from bastion.identity.freshness import not_locked
from bastion.storage.tables import User


@dataclass(kw_only=True, slots=True)
class Lockout:
    settings: Settings

    def period(self, lockouts: int) -> timedelta:
        """The length of the ``lockouts``-th lock: the base period, doubled each time."""
        seconds = self.settings.lockout_base_seconds * 2 ** min(lockouts - 1, 30)
        return timedelta(seconds=min(seconds, self.settings.lockout_max_seconds))

    async def count_failure(
        self, session: AsyncSession, user_id: uuid.UUID, now: datetime, audit: AuditContext
    ) -> bool:
        """Counts one failure unless the account is locked at ``now``; False when it was
        locked (the caller then answers and audits the attempt as ``locked``)."""
        failures = await session.scalar(
            update(User)
            .where(User.id == user_id, not_locked(now))
            .values(failed_logins=User.failed_logins + 1, updated_at=now)
            .returning(User.failed_logins)
        )
        if failures is None:
            return False
        threshold = self.settings.lockout_threshold
        if failures < threshold:
            return True
        lockouts = await session.scalar(
            update(User)
            .where(User.id == user_id, User.failed_logins >= threshold)
            .values(failed_logins=0, lockouts=User.lockouts + 1)
            .returning(User.lockouts)
        )
        if lockouts is None:  # another request set this lock already
            return True
        period = self.period(lockouts)
        await session.execute(
            update(User).where(User.id == user_id).values(locked_until=now + period)
        )
        await audit.record(
            session, AuditEventType.LOCKOUT, Outcome.DENIED,
            subject=str(user_id), seconds=int(period.total_seconds()), lockouts=lockouts,
        )
        return True
