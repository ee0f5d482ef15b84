"""Ending sessions and tokens, at once: logout, RFC 7009 revocation, per-user cut-offs.

The database is the record; the revocation store (in-process or Redis) makes a revocation
effective without a query per request. Store writes come after the database flush: if the
commit then fails, something is refused that the database still allows, the safe direction.
``restore`` re-applies the record to an empty or wiped store.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from bastion.audit.context import AuditContext
from bastion.audit.events import AuditEventType, Outcome
from bastion.clock import Clock, utc_now
from bastion.config import Settings
from bastion.security.principal import Principal
from bastion.security.tokens import LEEWAY_SECONDS, InvalidToken, TokenVerifier, hash_secret_token
from bastion.storage.database import Database
from bastion.storage.revocations import RevocationStore
from bastion.storage.signing_keys import KeyRingHolder
from bastion.storage.tables import (
    LoginSession,
    MfaChallenge,
    RefreshToken,
    RevokedAccessToken,
    User,
)


@dataclass(kw_only=True, slots=True)
class Revocation:
    settings: Settings
    database: Database
    keys: KeyRingHolder
    verifier: TokenVerifier
    store: RevocationStore
    clock: Clock = utc_now

    @property
    def remember_seconds(self) -> int:
        """How long a revocation must be remembered: until every token it covers expired."""
        return self.settings.access_token_ttl + LEEWAY_SECONDS

    async def revoke_sessions(
        self, session: AsyncSession, logins: Iterable[LoginSession], *, reason: str
    ) -> None:
        logins = list(logins)
        now = self.clock()
        for login in logins:
            if login.revoked_at is None:
                login.revoked_at = now
                login.revoked_reason = reason
        await session.flush()
        for login in logins:
            await self.store.revoke_session(str(login.id), ttl_seconds=self.remember_seconds)

    async def revoke_live_sessions(
        self,
        session: AsyncSession,
        user_id: uuid.UUID,
        *,
        reason: str,
        keep: uuid.UUID | None = None,
    ) -> None:
        """Every session of the user that is still live, except ``keep``, and every
        password grant still waiting for its second factor (``mfa_token``): whatever
        ended the sessions (a password change or reset, a disable) ends those too."""
        query = select(LoginSession).where(
            LoginSession.user_id == user_id, LoginSession.revoked_at.is_(None)
        )
        if keep is not None:
            query = query.where(LoginSession.id != keep)
        await self.revoke_sessions(session, await session.scalars(query), reason=reason)
        await session.execute(delete(MfaChallenge).where(MfaChallenge.user_id == user_id))

    async def cut_off_user(self, session: AsyncSession, user: User, now: datetime) -> int:
        """Refuses every access token of ``user`` issued so far; returns the cut-off second.

        ``iat`` has whole-second precision, so the cut-off is the *next* second, and past any
        earlier cut-off: tokens issued after an earlier change start at that cut-off
        (``grants``), so the new one must lie beyond it.
        """
        cutoff = max(int(now.timestamp()), user.tokens_revoked_before or 0) + 1
        user.tokens_revoked_before = cutoff
        await session.flush()
        await self.store.revoke_user_tokens_before(
            str(user.id), cutoff, ttl_seconds=self.remember_seconds
        )
        return cutoff

    async def logout(
        self, session: AsyncSession, principal: Principal, audit: AuditContext
    ) -> None:
        login = await session.get(LoginSession, uuid.UUID(principal.session_id))
        if login is not None:
            await self.revoke_sessions(session, [login], reason="logout")
        await audit.as_actor(principal.user_id).record(
            session, AuditEventType.LOGOUT, Outcome.SUCCESS,
            subject=principal.user_id, session_id=principal.session_id,
            kind="cookie" if principal.via_cookie else "bearer",
        )

    async def revoke(self, session: AsyncSession, *, token: str, audit: AuditContext) -> None:
        """RFC 7009: a refresh token ends its session; an access token ends itself.

        Anything else is ignored; the endpoint answers 200 either way, so it tells nobody
        whether a token was valid.
        """
        row = await session.execute(
            select(RefreshToken, LoginSession)
            .join(LoginSession, RefreshToken.session_id == LoginSession.id)
            .where(RefreshToken.token_hash == hash_secret_token(token))
        )
        found = row.one_or_none()
        if found is not None:
            _refresh, login = found
            await self.revoke_sessions(session, [login], reason="revoked")
            await audit.record(
                session, AuditEventType.REVOCATION, Outcome.SUCCESS,
                subject=str(login.user_id), session_id=str(login.id), kind="refresh_token",
            )
            return
        try:
            claims = self.verifier.verify(token, await self.keys.ring())
        except InvalidToken:
            return
        now = self.clock()
        remaining = max(claims.expires_at - int(now.timestamp()), 0) + LEEWAY_SECONDS
        await session.execute(
            delete(RevokedAccessToken).where(RevokedAccessToken.expires_at < now)
        )
        if await session.get(RevokedAccessToken, claims.token_id) is None:
            session.add(
                RevokedAccessToken(
                    jti=claims.token_id, expires_at=now + timedelta(seconds=remaining)
                )
            )
        await session.flush()
        await self.store.revoke_token(claims.token_id, ttl_seconds=remaining)
        await audit.record(
            session, AuditEventType.REVOCATION, Outcome.SUCCESS,
            subject=claims.subject, session_id=claims.session_id, kind="access_token",
        )

    async def restore(self) -> int:
        """Re-applies the database's record of revocations to the store; returns how many.

        Run at start-up (an in-process store begins empty) and by a shared store that finds
        itself wiped or replaced (a Redis restarted, from an older snapshot or none, or failed
        over).
        """
        target = await self.store.begin_restore()
        now = self.clock()
        since = now - timedelta(seconds=self.remember_seconds)
        # Only reads: a start or a wiped store's restore must not queue behind writers.
        async with self.database.read() as session:
            revoked_sessions = list(
                await session.scalars(
                    select(LoginSession.id).where(LoginSession.revoked_at >= since)
                )
            )
            revoked_tokens = list(
                await session.execute(
                    select(RevokedAccessToken.jti, RevokedAccessToken.expires_at).where(
                        RevokedAccessToken.expires_at > now
                    )
                )
            )
            # A cut-off still matters while a token issued just before it may be alive.
            user_cutoffs = list(
                await session.execute(
                    select(User.id, User.tokens_revoked_before).where(
                        User.tokens_revoked_before > int(since.timestamp())
                    )
                )
            )
        for session_id in revoked_sessions:
            await self.store.revoke_session(str(session_id), ttl_seconds=self.remember_seconds)
        for jti, expires_at in revoked_tokens:
            remaining = max(int((expires_at - now).total_seconds()), 1)
            await self.store.revoke_token(jti, ttl_seconds=remaining)
        for user_id, cutoff in user_cutoffs:
            if cutoff is None:  # not selected; narrows the type
                continue
            # Tokens issued before ``cutoff`` (the last at cutoff - 1) are accepted until
            # their exp plus the leeway: remember the cut-off that long from now.
            remaining = max(cutoff + self.remember_seconds - int(now.timestamp()), 1)
            await self.store.revoke_user_tokens_before(
                str(user_id), cutoff, ttl_seconds=remaining
            )
        await self.store.mark_restored(target)
        return len(revoked_sessions) + len(revoked_tokens) + len(user_cutoffs)

    async def restore_quietly(self) -> None:
        """The store's restorer: the same work, no result."""
        await self.restore()
