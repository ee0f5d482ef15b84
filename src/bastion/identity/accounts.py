"""Accounts: registration, the signed-in user, and changing the password."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from bastion.audit.context import AuditContext
from bastion.audit.events import AuditEventType, Outcome
from bastion.clock import Clock, utc_now
from bastion.errors import BadRequest, Conflict, InvalidFields, Unauthenticated
from bastion.identity.freshness import (
    AccountState,
    lock_account,
    read_account,
    verify_unless_locked,
    write_if_unchanged,
)
from bastion.identity.lockout import Lockout
from bastion.identity.revocation import Revocation
from bastion.identity.schemas import RegisterRequest, UserPublic
from bastion.problems import FieldError
from bastion.security.passwords import PasswordHasher, Verification, password_problems
from bastion.security.permissions import DEFAULT_ROLES
from bastion.security.principal import Principal
from bastion.security.tokens import INVALID_TOKEN_DETAIL
from bastion.storage.database import Database
from bastion.storage.tables import User

_users = User.__table__.c
_CURRENT_USER = select(
    _users.id,
    _users.username,
    _users.email,
    _users.age,
    _users.roles,
    _users.created_at,
    _users.email_verified,
    _users.mfa_enabled,
    _users.disabled,
).where(_users.id == bindparam("user_id"))
"""What ``current_user`` reads: ``UserPublic``'s fields and whether the account is disabled."""


class AccountExists(Conflict):
    detail = "That username or email address is already registered."


class WrongCurrentPassword(BadRequest):
    detail = "The current password is not correct."


async def insert_user(
    session: AsyncSession,
    *,
    username: str,
    email: str,
    age: int,
    password_hash: str,
    roles: Iterable[str],
    now: datetime,
) -> User:
    """Adds an account; the unique constraints decide a race, so of two concurrent
    registrations of one name exactly one succeeds and the other raises ``AccountExists``
    (a savepoint keeps the caller's transaction usable)."""
    user = User(
        id=uuid.uuid4(),
        username=username,
        email=email,
        age=age,
        password_hash=password_hash,
        roles=list(roles),
        disabled=False,
        failed_logins=0,
        lockouts=0,
        email_verified=False,
        mfa_enabled=False,
        created_at=now,
        updated_at=now,
    )
    try:
        async with session.begin_nested():
            session.add(user)
    except IntegrityError:
        raise AccountExists from None
    return user


def _new_password_problems(user: AccountState, current: str, new: str) -> list[FieldError]:
    problems = password_problems(new, username=user.username, email=user.email)
    if new == current:
        problems.append("The new password must differ from the current one.")
    return [{"loc": ["body", "new_password"], "msg": msg} for msg in problems]


@dataclass(kw_only=True, slots=True)
class Accounts:
    database: Database
    hasher: PasswordHasher
    lockout: Lockout
    revocation: Revocation
    clock: Clock = utc_now

    async def register(
        self, session: AsyncSession, request: RegisterRequest, audit: AuditContext
    ) -> User:
        problems = password_problems(
            request.password, username=request.username, email=request.email
        )
        if problems:
            raise InvalidFields([{"loc": ["body", "password"], "msg": msg} for msg in problems])
        user = await insert_user(
            session,
            username=request.username,
            email=request.email,
            age=request.age,
            password_hash=await self.hasher.hash(request.password),
            roles=DEFAULT_ROLES,
            now=self.clock(),
        )
        await audit.as_actor(str(user.id)).record(
            session, AuditEventType.REGISTRATION, Outcome.SUCCESS, subject=str(user.id)
        )
        return user

    async def current_user(self, principal: Principal) -> UserPublic:
        """The signed-in account as ``UserPublic``; 401 once it is gone or disabled.

        The hottest read of the service: one prebuilt Core statement, a point read
        (``Database.lookup``), so neither a session nor the ORM's identity map is built
        per request."""
        rows = await self.database.lookup(_CURRENT_USER, {"user_id": uuid.UUID(principal.user_id)})
        row = rows[0] if rows else None
        if row is None or row.disabled:
            raise Unauthenticated(INVALID_TOKEN_DETAIL, token_presented=True)
        return UserPublic.model_validate(row)

    async def change_password(
        self,
        principal: Principal,
        *,
        current_password: str,
        new_password: str,
        audit: AuditContext,
    ) -> None:
        """Its own unit of work, following ``freshness``: the current password is verified
        outside any transaction, then the new hash is written only if the hash verified is
        still the stored one, on the row locked for the commit. Every other session of the
        account — including one a racing login opened just before — is revoked in it."""
        audit = audit.as_actor(principal.user_id)
        user_id = uuid.UUID(principal.user_id)
        new_hash: str | None = None
        for _attempt in range(2):
            seen = await read_account(self.database, User.id == user_id)
            if seen is None or seen.disabled:
                raise Unauthenticated(INVALID_TOKEN_DETAIL, token_presented=True)
            verification = await verify_unless_locked(
                self.hasher, seen, current_password, self.clock()
            )
            if verification is not None and verification.valid and new_hash is None:
                problems = _new_password_problems(seen, current_password, new_password)
                if problems:
                    raise InvalidFields(problems)
                new_hash = await self.hasher.hash(new_password)
            async with self.database.transaction() as session:
                settled = await self._settle_change(
                    session, principal, seen, verification, new_hash, audit
                )
            if settled is None:
                return
            if not isinstance(settled, _StaleCredentials):
                raise settled
        raise WrongCurrentPassword  # changed twice under this request: refuse, do not loop

    async def _settle_change(
        self,
        session: AsyncSession,
        principal: Principal,
        seen: AccountState,
        verification: Verification | None,
        new_hash: str | None,
        audit: AuditContext,
    ) -> Exception | None:
        """None once changed; otherwise the refusal to raise after the commit."""
        now = self.clock()
        fresh = await lock_account(session, seen.user_id)
        if fresh is None or fresh.disabled:
            return Unauthenticated(INVALID_TOKEN_DETAIL, token_presented=True)
        if fresh.password_hash != seen.password_hash:
            return _StaleCredentials()  # verify again against the hash that is stored now
        if verification is None or fresh.locked(now):
            # Like the token endpoint: no change, not counted, audited as locked.
            await audit.record(
                session, AuditEventType.PASSWORD_CHANGE, Outcome.FAILURE,
                subject=str(fresh.user_id), reason="locked",
            )
            return WrongCurrentPassword()
        if not verification.valid or new_hash is None:
            # A stolen access token must not become a free password oracle: the failure
            # counts toward the lockout, and commits although the request fails.
            await self.lockout.count_failure(session, fresh.user_id, now, audit)
            await audit.record(
                session, AuditEventType.PASSWORD_CHANGE, Outcome.FAILURE,
                subject=str(fresh.user_id), reason="wrong_password",
            )
            return WrongCurrentPassword()
        values = {"password_hash": new_hash, "updated_at": now, "failed_logins": 0}
        if not await write_if_unchanged(session, fresh, now, **values):
            return _StaleCredentials()
        await self.revocation.revoke_live_sessions(
            session, fresh.user_id, reason="password_change", keep=uuid.UUID(principal.session_id)
        )
        await audit.record(
            session, AuditEventType.PASSWORD_CHANGE, Outcome.SUCCESS, subject=str(fresh.user_id)
        )
        return None


class _StaleCredentials(Exception):
    """The hash verified is no longer the stored one: verify again."""
