"""What operators do to accounts: list, change roles, disable, unlock; and the first admin.

Changes run inside the caller's transaction and write their audit event in it. A change
that narrows what a user may do takes effect at once for tokens already issued: the user's
cut-off (``Revocation.cut_off_user``) refuses every access token issued before it; tokens
issued after the change start at the cut-off, so a client that refreshes at once gets a
token the cut-off does not cover.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import String, and_, cast, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bastion.admin.schemas import UserUpdate
from bastion.audit.context import SYSTEM, AuditContext
from bastion.audit.events import AuditEventType, Outcome
from bastion.audit.service import StoredAuditEvent, list_events
from bastion.clock import Clock, utc_now
from bastion.errors import Conflict, NotFound
from bastion.identity.accounts import insert_user
from bastion.identity.revocation import Revocation
from bastion.security.principal import Principal
from bastion.storage.database import Database
from bastion.storage.tables import User

ADMIN_ROLE = "admin"
CREATED_ADMIN_ROLES = ("admin", "user")


class UserNotFound(NotFound):
    detail = "The user does not exist."


class RefusedChange(Conflict):
    """A change that would lock every operator out, or an admin out of their own account.

    ``event`` and ``reason`` name the audit event the route records (in a transaction of
    its own: the change's transaction rolls back with this error)."""

    def __init__(self, detail: str, *, event: AuditEventType, reason: str) -> None:
        super().__init__(detail)
        self.event = event
        self.reason = reason


def _may_remove_admin(change: UserUpdate) -> bool:
    """Whether the change could take the admin role away from someone (judged from the
    request alone, before any row is read)."""
    return change.disabled is True or (
        change.roles is not None and ADMIN_ROLE not in change.roles
    )


def parse_user_id(raw: str) -> uuid.UUID:
    """A path's user id; anything that is not a UUID is a user that does not exist."""
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise UserNotFound from None


def roles_text(roles: list[str]) -> str:
    return " ".join(sorted(roles))


@dataclass(frozen=True, slots=True)
class UsersPosition:
    """Keyset position in the user listing: the last item of the previous page."""

    created_at: datetime
    user_id: uuid.UUID


@dataclass(kw_only=True, slots=True)
class AdminService:
    revocation: Revocation
    clock: Clock = utc_now

    # -- reading -------------------------------------------------------------------------

    async def list_users(
        self, session: AsyncSession, *, limit: int, after: UsersPosition | None
    ) -> tuple[list[User], bool]:
        """One page ordered by (created_at, id), and whether another page follows."""
        query = select(User).order_by(User.created_at, User.id).limit(limit + 1)
        if after is not None:
            query = query.where(
                or_(
                    User.created_at > after.created_at,
                    and_(User.created_at == after.created_at, User.id > after.user_id),
                )
            )
        users = list(await session.scalars(query))
        return users[:limit], len(users) > limit

    async def list_audit(
        self,
        session: AsyncSession,
        *,
        type: AuditEventType | None,
        user_id: uuid.UUID | None,
        since: datetime | None,
        limit: int,
        before_seq: int | None,
    ) -> tuple[list[StoredAuditEvent], bool]:
        events = await list_events(
            session,
            type=type,
            user_id=str(user_id) if user_id is not None else None,
            since=since,
            limit=limit + 1,
            before_seq=before_seq,
        )
        return events[:limit], len(events) > limit

    # -- changing ------------------------------------------------------------------------

    async def update_user(
        self,
        session: AsyncSession,
        actor: Principal,
        raw_user_id: str,
        change: UserUpdate,
        audit: AuditContext,
    ) -> User:
        user_id = parse_user_id(raw_user_id)
        # Row locks in one order (admins by id, then the target), so two changes at once
        # wait for each other instead of deadlocking.
        admins = await self._lock_admins(session) if _may_remove_admin(change) else []
        user = await session.scalar(
            select(User)
            .where(User.id == user_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        if user is None:
            raise UserNotFound
        before = sorted(user.roles)
        after = change.roles if change.roles is not None else before
        roles_change = after != before
        disable = change.disabled is True and not user.disabled
        enable = change.disabled is False and user.disabled

        if disable and str(user.id) == actor.user_id:
            raise RefusedChange(
                "You cannot disable your own account.",
                event=AuditEventType.DISABLE,
                reason="self_disable",
            )
        if ADMIN_ROLE in before and not user.disabled and (disable or ADMIN_ROLE not in after):
            others = [
                admin
                for admin in admins
                if admin.id != user.id and ADMIN_ROLE in admin.roles and not admin.disabled
            ]
            if not others:
                raise RefusedChange(
                    "This is the last enabled admin; make another admin first.",
                    event=AuditEventType.DISABLE if disable else AuditEventType.ROLE_CHANGE,
                    reason="last_admin",
                )

        now = self.clock()
        if roles_change:
            user.roles = list(after)
        if disable or enable:
            user.disabled = bool(disable)
        if roles_change or disable or enable:
            user.updated_at = now
        await session.flush()

        if disable:
            await self.revocation.revoke_live_sessions(session, user.id, reason="disabled")
        if roles_change or disable:
            await self.revocation.cut_off_user(session, user, now)

        audit = audit.as_actor(actor.user_id)
        subject = str(user.id)
        if roles_change:
            await audit.record(
                session, AuditEventType.ROLE_CHANGE, Outcome.SUCCESS, subject=subject,
                before=roles_text(before), after=roles_text(after),
            )
        if disable or enable:
            await audit.record(
                session, AuditEventType.DISABLE, Outcome.SUCCESS, subject=subject,
                disabled=bool(disable),
            )
        return user

    async def _lock_admins(self, session: AsyncSession) -> list[User]:
        """Every admin's row, locked in id order, to count the admins that would remain.

        On PostgreSQL two admins demoting each other at once are serialised this way, and
        the second sees the first's change (on SQLite every write transaction is serialised
        already). The text match only narrows the rows to lock; the caller decides
        membership from the roles themselves.
        """
        return list(
            await session.scalars(
                select(User)
                .where(cast(User.roles, String).like(f'%"{ADMIN_ROLE}"%'))
                .order_by(User.id)
                .with_for_update()
                .execution_options(populate_existing=True)
            )
        )

    async def update_user_audited(
        self,
        database: Database,
        actor: Principal,
        raw_user_id: str,
        change: UserUpdate,
        audit: AuditContext,
    ) -> User:
        """``update_user`` as its own unit of work; a refused change is audited after the
        rollback, so the refusal is on record while nothing of the change is."""
        try:
            async with database.transaction() as session:
                return await self.update_user(session, actor, raw_user_id, change, audit)
        except RefusedChange as refused:
            await audit.as_actor(actor.user_id).record_detached(
                database, refused.event, Outcome.DENIED,
                subject=str(parse_user_id(raw_user_id)), reason=refused.reason,
            )
            raise

    async def unlock(
        self,
        session: AsyncSession,
        actor: Principal,
        raw_user_id: str,
        audit: AuditContext,
    ) -> None:
        user_id = parse_user_id(raw_user_id)
        now = self.clock()
        user = await session.scalar(select(User).where(User.id == user_id).with_for_update())
        if user is None:
            raise UserNotFound
        was_locked = user.locked_until is not None and user.locked_until > now
        await session.execute(
            update(User)
            .where(User.id == user_id)
            .values(locked_until=None, failed_logins=0, lockouts=0, updated_at=now)
        )
        await audit.as_actor(actor.user_id).record(
            session, AuditEventType.UNLOCK, Outcome.SUCCESS,
            subject=str(user_id), was_locked=was_locked,
        )


async def create_admin(
    session: AsyncSession,
    *,
    username: str,
    email: str,
    age: int,
    password_hash: str,
    now: datetime,
) -> User:
    """The ``bastion create-admin`` account: roles admin and user, audited with no actor.

    ``username`` and ``email`` must be normalised already (as ``RegisterRequest`` does) and
    the password checked against the policy and hashed by the caller, outside any
    transaction. Raises ``AccountExists`` when either is taken.
    """
    user = await insert_user(
        session,
        username=username,
        email=email,
        age=age,
        password_hash=password_hash,
        roles=CREATED_ADMIN_ROLES,
        now=now,
    )
    subject = str(user.id)
    await SYSTEM.record(
        session, AuditEventType.REGISTRATION, Outcome.SUCCESS,
        subject=subject, occurred_at=now, source="cli",
    )
    await SYSTEM.record(
        session, AuditEventType.ROLE_CHANGE, Outcome.SUCCESS, subject=subject,
        occurred_at=now, source="cli", before="", after=roles_text(user.roles),
    )
    return user

