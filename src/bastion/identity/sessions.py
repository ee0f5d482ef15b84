"""A user's own live sessions: list them, and end any one of them.

A person who sees a session they do not recognise (another device, another address) ends it
here, and its tokens stop working at once in every process, as with a logout. Only the
owner's sessions are visible or reachable: another user's session id is a 404, the same
answer as an id that does not exist.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from bastion.audit.context import AuditContext
from bastion.audit.events import AuditEventType, Outcome
from bastion.clock import Clock, utc_now
from bastion.errors import NotFound
from bastion.identity.cookie_sessions import COOKIE_KIND
from bastion.identity.revocation import Revocation
from bastion.pagination import TimeIdPosition
from bastion.security.principal import Principal
from bastion.storage.tables import LoginSession


class SessionNotFound(NotFound):
    detail = "The session does not exist."


def _live(user_id: uuid.UUID, now: datetime, idle: timedelta) -> ColumnElement[bool]:
    """Not ended, not past its absolute deadline, and (a cookie session) not idle too long."""
    return and_(
        LoginSession.user_id == user_id,
        LoginSession.revoked_at.is_(None),
        LoginSession.expires_at > now,
        or_(LoginSession.kind != COOKIE_KIND, LoginSession.last_used_at > now - idle),
    )


@dataclass(kw_only=True, slots=True)
class Sessions:
    revocation: Revocation
    clock: Clock = utc_now

    @property
    def _idle(self) -> timedelta:
        return timedelta(seconds=self.revocation.settings.cookie_idle_ttl)

    async def list_live(
        self,
        session: AsyncSession,
        principal: Principal,
        *,
        limit: int,
        after: TimeIdPosition | None,
    ) -> tuple[list[LoginSession], bool]:
        """One page of the caller's live sessions, newest first, and whether more follow."""
        query = (
            select(LoginSession)
            .where(_live(uuid.UUID(principal.user_id), self.clock(), self._idle))
            .order_by(LoginSession.created_at.desc(), LoginSession.id.desc())
            .limit(limit + 1)
        )
        if after is not None:
            created_at, session_id = after
            query = query.where(
                or_(
                    LoginSession.created_at < created_at,
                    and_(LoginSession.created_at == created_at, LoginSession.id < session_id),
                )
            )
        found = list(await session.scalars(query))
        return found[:limit], len(found) > limit

    async def end(
        self, session: AsyncSession, principal: Principal, raw_id: str, audit: AuditContext
    ) -> None:
        """Revokes one of the caller's live sessions, audited; 404 for anything else."""
        try:
            session_id = uuid.UUID(raw_id)
        except ValueError:
            raise SessionNotFound from None
        owner = uuid.UUID(principal.user_id)
        login = await session.scalar(
            select(LoginSession)
            .where(LoginSession.id == session_id, _live(owner, self.clock(), self._idle))
            .with_for_update()
        )
        if login is None:
            raise SessionNotFound
        await self.revocation.revoke_sessions(session, [login], reason="signed_out")
        await audit.as_actor(principal.user_id).record(
            session, AuditEventType.LOGOUT, Outcome.SUCCESS,
            subject=principal.user_id, session_id=str(session_id), kind=login.kind,
            current=str(session_id) == principal.session_id,
        )
