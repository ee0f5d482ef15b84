"""Accounts: registration, the signed-in user, and changing the password."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from bastion.audit.context import AuditContext
from bastion.audit.events import AuditEventType, Outcome
from bastion.clock import Clock, utc_now
from bastion.errors import BadRequest, Conflict, InvalidFields, Unauthenticated
from bastion.identity.lockout import Lockout, is_locked
from bastion.identity.revocation import Revocation
from bastion.identity.schemas import RegisterRequest
from bastion.problems import FieldError
from bastion.security.passwords import PasswordHasher, password_problems
from bastion.security.permissions import DEFAULT_ROLES
from bastion.security.principal import Principal
from bastion.security.tokens import INVALID_TOKEN_DETAIL
from bastion.storage.database import Database
from bastion.storage.tables import User


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
        token_version=0,
        failed_logins=0,
        lockouts=0,
        created_at=now,
        updated_at=now,
    )
    try:
        async with session.begin_nested():
            session.add(user)
    except IntegrityError:
        raise AccountExists from None
    return user


def _new_password_problems(user: User, current: str, new: str) -> list[FieldError]:
    problems = password_problems(new, username=user.username, email=user.email)
    if new == current:
        problems.append("The new password must differ from the current one.")
    return [{"loc": ["body", "new_password"], "msg": msg} for msg in problems]


class Accounts:
    def __init__(
        self,
        *,
        database: Database,
        hasher: PasswordHasher,
        lockout: Lockout,
        revocation: Revocation,
        clock: Clock = utc_now,
    ) -> None:
        self.database = database
        self.hasher = hasher
        self.lockout = lockout
        self.revocation = revocation
        self.clock = clock

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

    async def current_user(self, session: AsyncSession, principal: Principal) -> User:
        user = await session.get(User, uuid.UUID(principal.user_id))
        if user is None or user.disabled:
            raise Unauthenticated(INVALID_TOKEN_DETAIL, token_presented=True)
        return user

    async def change_password(
        self,
        session: AsyncSession,
        principal: Principal,
        *,
        current_password: str,
        new_password: str,
        audit: AuditContext,
    ) -> None:
        audit = audit.as_actor(principal.user_id)
        async with self.database.transaction() as lookup:  # released before hashing
            user = await lookup.get(User, uuid.UUID(principal.user_id))
        if user is None or user.disabled:
            raise Unauthenticated(INVALID_TOKEN_DETAIL, token_presented=True)
        verification = await self.hasher.verify(current_password, user.password_hash)
        now = self.clock()
        if is_locked(user.locked_until, now):
            raise WrongCurrentPassword  # like the token endpoint: no change, no extension
        if not verification.valid:
            # A stolen access token must not become a free password oracle: the failure
            # counts toward the lockout. It is its own unit of work, committed before the
            # refusal, because the request's transaction rolls back with the error.
            async with self.database.transaction() as failure:
                await self.lockout.count_failure(failure, user.id, now, audit)
                await audit.record(
                    failure, AuditEventType.PASSWORD_CHANGE, Outcome.FAILURE,
                    subject=str(user.id), reason="wrong_password",
                )
            raise WrongCurrentPassword
        problems = _new_password_problems(user, current_password, new_password)
        if problems:
            raise InvalidFields(problems)
        new_hash = await self.hasher.hash(new_password)
        await session.execute(
            update(User)
            .where(User.id == user.id)
            .values(password_hash=new_hash, updated_at=now, failed_logins=0)
        )
        await self.revocation.revoke_live_sessions(
            session, user.id, reason="password_change", keep=uuid.UUID(principal.session_id)
        )
        await audit.record(
            session, AuditEventType.PASSWORD_CHANGE, Outcome.SUCCESS, subject=str(user.id)
        )
