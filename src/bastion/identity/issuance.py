"""Issuing a session's tokens: a new refresh token and a signed access token, audited.

Called inside the grant's transaction, after the grant decided on the locked user row:
the scope and ``iat`` come from that fresh state (``AccountState.issued_at``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from bastion.audit.context import AuditContext
from bastion.audit.events import AuditEventType, Outcome
from bastion.config import Settings
from bastion.identity.freshness import AccountState
from bastion.identity.schemas import TokenResponse
from bastion.security.tokens import access_token_claims, hash_secret_token, new_secret_token
from bastion.storage.signing_keys import KeyRingHolder
from bastion.storage.tables import LoginSession, RefreshToken


def new_login_session(
    account: AccountState,
    scopes: frozenset[str],
    now: datetime,
    audit: AuditContext,
    *,
    lifetime_seconds: int,
    kind: str = "bearer",
    secret_hash: str | None = None,
    methods: tuple[str, ...] = ("pwd",),
) -> LoginSession:
    """A session opened now, with the address and device it was opened from (for the
    owner to recognise it in ``GET /auth/sessions``)."""
    return LoginSession(
        id=uuid.uuid4(),
        user_id=account.user_id,
        kind=kind,
        secret_hash=secret_hash,
        amr=" ".join(methods),
        scope=" ".join(sorted(scopes)),
        created_at=now,
        expires_at=now + timedelta(seconds=lifetime_seconds),
        last_used_at=now,
        client_ip=audit.client_ip,
        user_agent=audit.user_agent,
    )


@dataclass(kw_only=True, slots=True)
class TokenIssuer:
    settings: Settings
    keys: KeyRingHolder

    def open_session(
        self,
        session: AsyncSession,
        account: AccountState,
        scopes: frozenset[str],
        now: datetime,
        audit: AuditContext,
        methods: tuple[str, ...] = ("pwd",),
    ) -> LoginSession:
        """A new bearer session holding what the login granted (a refresh may narrow it)
        and how the user proved who they are (never upgraded later)."""
        login = new_login_session(
            account, scopes, now, audit,
            lifetime_seconds=self.settings.session_max_age, methods=methods,
        )
        session.add(login)
        return login

    async def issue(
        self,
        session: AsyncSession,
        account: AccountState,
        login: LoginSession,
        scopes: frozenset[str],
        now: datetime,
        audit: AuditContext,
        event: AuditEventType,
    ) -> TokenResponse:
        """New access and refresh tokens for ``login``, audited as ``event``."""
        refresh = new_secret_token()
        refresh_expiry = min(
            now + timedelta(seconds=self.settings.refresh_token_ttl), login.expires_at
        )
        session.add(
            RefreshToken(
                session_id=login.id,
                token_hash=hash_secret_token(refresh),
                created_at=now,
                expires_at=refresh_expiry,
            )
        )
        ring = await self.keys.reload_if_stale(session) or await self.keys.ring()
        lifetime = self.settings.access_token_ttl
        access = ring.sign(
            access_token_claims(
                issuer=self.settings.issuer,
                audience=self.settings.audience,
                subject=str(account.user_id),
                session_id=str(login.id),
                scopes=scopes,
                lifetime=lifetime,
                now=account.issued_at(now),
                methods=login.amr.split(),
            )
        )
        subject = str(account.user_id)
        await audit.as_actor(subject).record(
            session, event, Outcome.SUCCESS, subject=subject, session_id=str(login.id)
        )
        return TokenResponse(
            access_token=access,
            expires_in=lifetime,
            refresh_token=refresh,
            scope=" ".join(sorted(scopes)),
        )
