"""The OAuth2 grants (RFC 6749): a password login and a refresh, each one unit of work.

Failures the client must not be able to tell apart (unknown user, wrong password, disabled,
locked) all end in the same ``GrantError("invalid_grant")`` after the same work: one
Argon2id verification, one audit insert.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bastion.audit.context import AuditContext
from bastion.audit.events import AuditEventType, Outcome
from bastion.clock import Clock, utc_now
from bastion.config import Settings
from bastion.identity.lockout import Lockout, is_locked
from bastion.identity.revocation import Revocation
from bastion.identity.schemas import TokenResponse
from bastion.security.passwords import PasswordHasher
from bastion.security.permissions import (
    UnknownScope,
    granted_permissions,
    parse_scope,
    resolve_scope,
)
from bastion.security.tokens import access_token_claims, hash_refresh_token, new_refresh_token
from bastion.storage.database import Database
from bastion.storage.signing_keys import KeyRingHolder
from bastion.storage.tables import LoginSession, RefreshToken, User


class GrantError(Exception):
    """An RFC 6749 §5.2 error; ``description`` is fixed text, safe for the client."""

    error = "invalid_grant"
    description = "The credentials or the grant are not valid."


class InvalidScope(GrantError):
    error = "invalid_scope"
    description = "The requested scope is not valid."


def requested_scope(scope: str | None) -> frozenset[str] | None:
    """The scope a grant asks for; unknown permissions are refused before any other work."""
    try:
        requested = parse_scope(scope)
        resolve_scope(requested, frozenset())
    except UnknownScope:
        raise InvalidScope from None
    return requested


class Grants:
    def __init__(
        self,
        *,
        settings: Settings,
        database: Database,
        hasher: PasswordHasher,
        keys: KeyRingHolder,
        lockout: Lockout,
        revocation: Revocation,
        clock: Clock = utc_now,
    ) -> None:
        self.settings = settings
        self.database = database
        self.hasher = hasher
        self.keys = keys
        self.lockout = lockout
        self.revocation = revocation
        self.clock = clock

    async def password_grant(
        self,
        session: AsyncSession,
        *,
        username: str,
        password: str,
        scope: str | None,
        audit: AuditContext,
    ) -> TokenResponse:
        requested = requested_scope(scope)
        # Read, then hash outside any transaction: on SQLite a transaction holds the
        # database's write lock, and Argon2id takes tens of milliseconds.
        async with self.database.transaction() as lookup:
            user = await lookup.scalar(select(User).where(User.username == username.lower()))
        if user is None:
            await self.hasher.verify_dummy(password)
            await audit.record(
                session, AuditEventType.LOGIN_FAILURE, Outcome.FAILURE, reason="unknown_user"
            )
            raise GrantError
        verification = await self.hasher.verify(password, user.password_hash)
        now = self.clock()
        if user.disabled:
            reason = "disabled"
        elif is_locked(user.locked_until, now):
            reason = "locked"  # refused even with the right password; does not extend the lock
        elif not verification.valid:
            reason = "wrong_password"
            await self.lockout.count_failure(session, user.id, now, audit)
        else:
            reason = ""
        if reason:
            await audit.record(
                session, AuditEventType.LOGIN_FAILURE, Outcome.FAILURE,
                subject=str(user.id), reason=reason,
            )
            raise GrantError

        reset: dict[str, object] = {
            "failed_logins": 0, "lockouts": 0, "locked_until": None, "updated_at": now
        }
        if verification.new_hash is not None:
            reset["password_hash"] = verification.new_hash
        # The lookup ran before hashing, outside this transaction: re-check, in it, that the
        # account was not disabled meanwhile.
        still_enabled = await session.execute(
            update(User).where(User.id == user.id, User.disabled.is_(False)).values(**reset)
        )
        if still_enabled.rowcount != 1:  # type: ignore[attr-defined]
            raise GrantError
        granted = resolve_scope(requested, granted_permissions(user.roles))
        login = LoginSession(
            id=uuid.uuid4(),
            user_id=user.id,
            scope=" ".join(sorted(granted)),
            created_at=now,
            expires_at=now + timedelta(seconds=self.settings.session_max_age),
        )
        session.add(login)
        return await self._issue_tokens(
            session, user, login, granted, now, audit, AuditEventType.LOGIN_SUCCESS
        )

    async def _issue_tokens(
        self,
        session: AsyncSession,
        user: User,
        login: LoginSession,
        scopes: frozenset[str],
        now: datetime,
        audit: AuditContext,
        event: AuditEventType,
    ) -> TokenResponse:
        """New access and refresh tokens for ``login``, audited as ``event``."""
        refresh = new_refresh_token()
        refresh_expiry = min(
            now + timedelta(seconds=self.settings.refresh_token_ttl), login.expires_at
        )
        session.add(
            RefreshToken(
                session_id=login.id,
                token_hash=hash_refresh_token(refresh),
                created_at=now,
                expires_at=refresh_expiry,
            )
        )
        ring = await self.keys.reload_if_stale(session) or await self.keys.ring()
        lifetime = self.settings.access_token_ttl
        # A role change or disable refuses tokens issued before the user's cut-off (the next
        # whole second); a token issued now must not fall under it, so it starts there.
        issued_at = max(int(now.timestamp()), user.tokens_revoked_before or 0)
        access = ring.sign(
            access_token_claims(
                issuer=self.settings.issuer,
                audience=self.settings.audience,
                subject=str(user.id),
                session_id=str(login.id),
                scopes=scopes,
                lifetime=lifetime,
                now=issued_at,
            )
        )
        await audit.as_actor(str(user.id)).record(
            session, event, Outcome.SUCCESS, subject=str(user.id), session_id=str(login.id)
        )
        return TokenResponse(
            access_token=access,
            expires_in=lifetime,
            refresh_token=refresh,
            scope=" ".join(sorted(scopes)),
        )

    async def refresh_grant(
        self,
        session: AsyncSession,
        *,
        refresh_token: str,
        scope: str | None,
        audit: AuditContext,
    ) -> TokenResponse:
        requested = requested_scope(scope)
        row = await session.execute(
            select(RefreshToken, LoginSession, User)
            .join(LoginSession, RefreshToken.session_id == LoginSession.id)
            .join(User, LoginSession.user_id == User.id)
            .where(RefreshToken.token_hash == hash_refresh_token(refresh_token))
        )
        found = row.one_or_none()
        if found is None:
            raise GrantError
        token, login, user = found
        now = self.clock()
        if token.used_at is not None:
            await self._refresh_reuse(session, login, user, audit)
            raise GrantError
        if (
            login.revoked_at is not None
            or login.expires_at <= now
            or token.expires_at <= now
            or user.disabled
        ):
            raise GrantError
        session_scopes = frozenset(login.scope.split())
        if requested is not None and not requested <= session_scopes:
            raise InvalidScope  # before the token is spent: a retry with it is no replay
        # Single use, decided by the database: of two concurrent uses exactly one row
        # update succeeds; the other is a reuse like any replay.
        claimed = await session.execute(
            update(RefreshToken)
            .where(RefreshToken.id == token.id, RefreshToken.used_at.is_(None))
            .values(used_at=now)
        )
        if claimed.rowcount != 1:  # type: ignore[attr-defined]
            await self._refresh_reuse(session, login, user, audit)
            raise GrantError
        scopes = resolve_scope(requested or session_scopes, granted_permissions(user.roles))
        return await self._issue_tokens(
            session, user, login, scopes, now, audit, AuditEventType.TOKEN_REFRESH
        )

    async def _refresh_reuse(
        self, session: AsyncSession, login: LoginSession, user: User, audit: AuditContext
    ) -> None:
        """A used refresh token came back: someone holds a copy. The session dies whole."""
        await self.revocation.revoke_sessions(session, [login], reason="refresh_reuse")
        await audit.record(
            session, AuditEventType.REFRESH_REUSE, Outcome.DENIED,
            subject=str(user.id), session_id=str(login.id),
        )
