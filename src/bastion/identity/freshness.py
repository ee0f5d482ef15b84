"""Decisions made before a slow step, re-checked where they commit.

A credential check reads the account, then spends tens of milliseconds in Argon2id (later:
a TOTP check, a mail round trip). Whatever it decided on that copy — the password matched,
the account is not locked or disabled, these are its roles — may be stale by the time it
commits. So every such flow has the same three steps:

1. ``read_account``: a short read of its own, so no lock is held during the slow step;
2. the slow step, outside any transaction;
3. inside the transaction that commits the effect: ``lock_account`` reads the row again,
   locked until the commit (``SELECT … FOR UPDATE`` on PostgreSQL; on SQLite the
   transaction's ``BEGIN IMMEDIATE`` already serialises every writer), the decision is
   taken again on that fresh state, and the write is a compare-and-set
   (``write_if_unchanged``) against what the slow step relied on.

A request that loses a race is answered as if it had arrived after the winner.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bastion.security.passwords import PasswordHasher, Verification
from bastion.storage.database import Database
from bastion.storage.tables import User


@dataclass(frozen=True, slots=True)
class AccountState:
    """An account as one read saw it; immutable, so it cannot silently follow later reads."""

    user_id: uuid.UUID
    username: str
    email: str
    password_hash: str
    roles: tuple[str, ...]
    disabled: bool
    locked_until: datetime | None
    tokens_revoked_before: int | None
    # The second factor: on, its encrypted TOTP secret, the last step a code was accepted for.
    mfa_enabled: bool = False
    totp_secret: str | None = None
    totp_last_step: int | None = None

    @classmethod
    def of(cls, user: User) -> AccountState:
        return cls(
            user_id=user.id,
            username=user.username,
            email=user.email,
            password_hash=user.password_hash,
            roles=tuple(user.roles),
            disabled=user.disabled,
            locked_until=user.locked_until,
            tokens_revoked_before=user.tokens_revoked_before,
            mfa_enabled=user.mfa_enabled,
            totp_secret=user.totp_secret,
            totp_last_step=user.totp_last_step,
        )

    def locked(self, now: datetime) -> bool:
        return self.locked_until is not None and self.locked_until > now

    def issued_at(self, now: datetime) -> int:
        """The ``iat`` of a token issued now: a role change or disable refuses tokens issued
        before the user's cut-off (the next whole second), so a new token starts there."""
        return max(int(now.timestamp()), self.tokens_revoked_before or 0)


async def verify_unless_locked(
    hasher: PasswordHasher, seen: AccountState, password: str, now: datetime
) -> Verification | None:
    """Step 2 for a password: None when ``seen`` is locked, after a dummy verification, so
    a lock costs the same work as any refusal and cannot be told apart by time."""
    if seen.locked(now):
        await hasher.verify_dummy(password)
        return None
    return await hasher.verify(password, seen.password_hash)


def not_locked(now: datetime) -> ColumnElement[bool]:
    """SQL: the account is not locked at ``now``."""
    return or_(User.locked_until.is_(None), User.locked_until <= now)


async def read_account(database: Database, *where: ColumnElement[bool]) -> AccountState | None:
    """Step 1: the account before the slow step, in a read of its own: it neither takes
    nor waits for SQLite's write lock; step 3 re-reads the row under the lock anyway."""
    async with database.read() as session:
        user = await session.scalar(select(User).where(*where))
    return AccountState.of(user) if user is not None else None


async def lock_user(session: AsyncSession, user_id: uuid.UUID) -> User | None:
    """The user row as it is now, row-locked until ``session`` commits (for a unit of work
    that changes the row through the ORM).

    Lock order everywhere: the user row first, then its sessions and refresh tokens, the
    audit chain head last, so two units of work wait for each other instead of deadlocking.
    """
    user: User | None = await session.scalar(
        select(User)
        .where(User.id == user_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return user


async def lock_account(session: AsyncSession, user_id: uuid.UUID) -> AccountState | None:
    """Step 3: the account as it is now, row-locked until ``session`` commits."""
    user = await lock_user(session, user_id)
    return AccountState.of(user) if user is not None else None


async def write_if_unchanged(
    session: AsyncSession, seen: AccountState, now: datetime, **values: Any
) -> bool:
    """The compare-and-set: writes ``values`` only while the password hash is the one the
    slow step verified and the account is enabled and not locked at ``now``. False when
    any of that changed."""
    result = await session.execute(
        update(User)
        .where(
            User.id == seen.user_id,
            User.password_hash == seen.password_hash,
            User.disabled.is_(False),
            not_locked(now),
        )
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]
