"""The OAuth2 grants (RFC 6749): a password login and a refresh.

Each grant is its own unit of work: a refusal's audit event and lockout count commit, and
the grant then raises ``GrantError``. Failures the client must not be able to tell apart
(unknown user, wrong password, disabled, locked) all end in the same
``GrantError("invalid_grant")`` after the same work: one Argon2id verification (a dummy one
where there is no hash to check), one audit insert. The password grant follows
``freshness``: what it decided before the hash is decided again on the locked row.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bastion.audit.context import AuditContext
from bastion.audit.events import AuditEventType, Outcome
from bastion.clock import Clock, utc_now
from bastion.identity.cookie_sessions import COOKIE_KIND, CookieLogin, CookieSessions
from bastion.identity.freshness import (
    AccountState,
    lock_account,
    read_account,
    verify_unless_locked,
    write_if_unchanged,
)
from bastion.identity.issuance import TokenIssuer
from bastion.identity.lockout import Lockout
from bastion.identity.revocation import Revocation
from bastion.identity.schemas import TokenResponse
from bastion.identity.second_factor import PASSWORD_ONLY, FactorProof, SecondFactorCheck
from bastion.security.passwords import PasswordHasher, Verification
from bastion.security.permissions import (
    UnknownScope,
    granted_permissions,
    parse_scope,
    resolve_scope,
)
from bastion.security.tokens import hash_secret_token, new_secret_token
from bastion.storage.database import Database
from bastion.storage.tables import LoginSession, MfaChallenge, RefreshToken, User


class GrantError(Exception):
    """An RFC 6749 §5.2 error; ``description`` is fixed text, safe for the client."""

    error = "invalid_grant"
    description = "The credentials or the grant are not valid."


class InvalidScope(GrantError):
    error = "invalid_scope"
    description = "The requested scope is not valid."


class MfaRequired(GrantError):
    """The password was right and the account has a second factor: the client must send a
    code. The password grant hands out ``mfa_token`` to complete it with the MFA grant; a
    browser sign-in sends the form again with ``otp`` or ``recovery_code``."""

    error = "mfa_required"
    description = "A second factor is required: send a TOTP code or a recovery code."

    def __init__(self, mfa_token: str | None = None) -> None:
        super().__init__()
        self.mfa_token = mfa_token


@dataclass(frozen=True, slots=True)
class _Challenged:
    """A password grant that now waits for its second factor (``MfaChallenge``)."""

    mfa_token: str


class _Refusal:
    """Why a settled grant issued nothing (the transaction still commits its audit)."""


_REFUSED = _Refusal()  # invalid_grant
_INVALID_SCOPE = _Refusal()  # invalid_scope
_STALE = _Refusal()  # what the slow step verified changed meanwhile: verify again
_NEEDS_SECOND_FACTOR = _Refusal()  # the password was right; no code was sent

MFA_CHALLENGE_SECONDS = 300

_Opened = TypeVar("_Opened")
# Opens the session of a verified sign-in, inside the transaction that locked the account,
# with the methods (``amr``) the sign-in proved.
_SessionOpener = Callable[
    [AsyncSession, AccountState, datetime, tuple[str, ...]], Awaitable[_Opened]
]
# What a sign-in whose account has a second factor does when no code was sent.
_WithoutCode = Callable[[AsyncSession, AccountState, datetime], Awaitable[_Opened | _Refusal]]


def _refuse_without_code(audit: AuditContext) -> _WithoutCode[Any]:
    """A browser sign-in without its code: audited like the password grant's challenge,
    then refused (the form comes again with the code)."""

    async def refuse(session: AsyncSession, account: AccountState, now: datetime) -> _Refusal:  # noqa: ARG001
        await audit.record(
            session, AuditEventType.MFA_CHALLENGE, Outcome.SUCCESS,
            subject=str(account.user_id), kind="cookie",
        )
        return _NEEDS_SECOND_FACTOR

    return refuse


def requested_scope(scope: str | None) -> frozenset[str] | None:
    """The scope a grant asks for; unknown permissions are refused before any other work."""
    try:
        requested = parse_scope(scope)
        resolve_scope(requested, frozenset())
    except UnknownScope:
        raise InvalidScope from None
    return requested


@dataclass(kw_only=True, slots=True)
class Grants:
    database: Database
    hasher: PasswordHasher
    issuer: TokenIssuer
    lockout: Lockout
    revocation: Revocation
    cookies: CookieSessions
    factors: SecondFactorCheck
    clock: Clock = utc_now

    async def password_grant(
        self, *, username: str, password: str, scope: str | None, audit: AuditContext
    ) -> TokenResponse:
        """The password grant: a bearer session and its tokens, the scope narrowed to
        ``scope`` when one is asked for. With a second factor on the account, a verified
        password ends in ``MfaRequired`` with an ``mfa_token`` instead."""
        requested = requested_scope(scope)

        async def issue_tokens(
            session: AsyncSession, fresh: AccountState, now: datetime, methods: tuple[str, ...]
        ) -> TokenResponse:
            return await self._issue_login(session, fresh, requested, now, methods, audit)

        async def challenge(
            session: AsyncSession, fresh: AccountState, now: datetime
        ) -> _Challenged:
            # Nothing is reset here: a right password alone must not clear the wrong
            # codes counted so far, or each password would buy a fresh round of guesses.
            # The user's spent and expired challenges go: rows stay bounded by the quota.
            await session.execute(
                delete(MfaChallenge).where(
                    MfaChallenge.user_id == fresh.user_id,
                    or_(MfaChallenge.used_at.is_not(None), MfaChallenge.expires_at <= now),
                )
            )
            token = new_secret_token()
            session.add(
                MfaChallenge(
                    id=uuid.uuid4(),
                    user_id=fresh.user_id,
                    token_hash=hash_secret_token(token),
                    scope=None if requested is None else " ".join(sorted(requested)),
                    created_at=now,
                    expires_at=now + timedelta(seconds=MFA_CHALLENGE_SECONDS),
                )
            )
            # Audited: a right password without its second factor is worth an admin's eye.
            await audit.record(
                session, AuditEventType.MFA_CHALLENGE, Outcome.SUCCESS,
                subject=str(fresh.user_id), kind="bearer",
            )
            return _Challenged(token)

        issued: TokenResponse | _Challenged = await self._sign_in(
            username, password, audit, issue_tokens, challenge
        )
        if isinstance(issued, _Challenged):
            raise MfaRequired(issued.mfa_token)
        return issued

    async def _issue_login(
        self,
        session: AsyncSession,
        fresh: AccountState,
        requested: frozenset[str] | None,
        now: datetime,
        methods: tuple[str, ...],
        audit: AuditContext,
    ) -> TokenResponse:
        # Scope and iat come from the locked row: the roles and cut-off as they are now.
        granted = resolve_scope(requested, granted_permissions(fresh.roles))
        login = self.issuer.open_session(session, fresh, granted, now, audit, methods)
        return await self.issuer.issue(
            session, fresh, login, granted, now, audit, AuditEventType.LOGIN_SUCCESS
        )

    async def cookie_sign_in(
        self,
        *,
        username: str,
        password: str,
        audit: AuditContext,
        proof: FactorProof | None = None,
    ) -> CookieLogin:
        """``POST /auth/session``: the same password check, lockout and audit as the
        password grant, opening a browser (cookie) session instead of issuing tokens. An
        account with a second factor needs ``proof`` in the same request (``MfaRequired``
        once the password is right and no code was sent)."""

        async def open_cookie_session(
            session: AsyncSession, fresh: AccountState, now: datetime, methods: tuple[str, ...]
        ) -> CookieLogin:
            login = self.cookies.open(session, fresh, now, audit, methods)
            subject = str(fresh.user_id)
            await audit.as_actor(subject).record(
                session, AuditEventType.LOGIN_SUCCESS, Outcome.SUCCESS,
                subject=subject, session_id=login.session_id, kind=COOKIE_KIND,
                amr=" ".join(methods),
            )
            return login

        return await self._sign_in(
            username, password, audit, open_cookie_session, _refuse_without_code(audit), proof
        )

    async def _sign_in(
        self,
        username: str,
        password: str,
        audit: AuditContext,
        open_session: _SessionOpener[_Opened],
        without_code: _WithoutCode[_Opened],
        proof: FactorProof | None = None,
    ) -> _Opened:
        """A password sign-in, decided twice: on the account read before the hash, and
        again on the row-locked account inside the transaction that opens the session."""
        for _attempt in range(2):
            seen = await read_account(self.database, User.username == username.lower())
            if seen is None:
                await self.hasher.verify_dummy(password)
                await audit.record_detached(
                    self.database, AuditEventType.LOGIN_FAILURE, Outcome.FAILURE,
                    reason="unknown_user",
                )
                raise GrantError
            verification = await verify_unless_locked(self.hasher, seen, password, self.clock())
            async with self.database.transaction() as session:
                settled = await self._settle_sign_in(
                    session, seen, verification, audit, open_session, without_code, proof
                )
            if not isinstance(settled, _Refusal):
                return settled
            if settled is _NEEDS_SECOND_FACTOR:
                raise MfaRequired
            if settled is not _STALE:
                raise GrantError
        # The hash changed under this request twice (two password changes or rehashes in a
        # row): refuse rather than hash a third time.
        raise GrantError

    async def _settle_sign_in(
        self,
        session: AsyncSession,
        seen: AccountState,
        verification: Verification | None,
        audit: AuditContext,
        open_session: _SessionOpener[_Opened],
        without_code: _WithoutCode[_Opened],
        proof: FactorProof | None,
    ) -> _Opened | _Refusal:
        now = self.clock()
        fresh = await lock_account(session, seen.user_id)
        if fresh is not None and fresh.password_hash != seen.password_hash:
            # Changed (or rehashed) during the hash: what was verified is stale. Verify
            # again against the new hash, as if this request had arrived after the change.
            return _STALE
        if fresh is None:
            reason = "unknown_user"
        elif fresh.disabled:
            reason = "disabled"
        elif verification is None or fresh.locked(now):
            reason = "locked"  # refused even with the right password; not counted
        elif not verification.valid:
            counted = await self.lockout.count_failure(session, fresh.user_id, now, audit)
            reason = "wrong_password" if counted else "locked"
        else:
            methods = PASSWORD_ONLY
            if fresh.mfa_enabled:
                # The second factor, checked on the same locked row; a wrong code is
                # counted and audited by the check, and nothing is reset.
                if proof is None:
                    return await without_code(session, fresh, now)
                proven = await self.factors.verify(session, fresh, proof, now, audit)
                if proven is None:
                    return _REFUSED
                methods = proven
            # A verified password (and code) on a fresh, locked row: clear the counters
            # (and store the rehash) with a compare-and-set, then open the session.
            reset: dict[str, object] = {
                "failed_logins": 0, "lockouts": 0, "locked_until": None, "updated_at": now
            }
            if verification.new_hash is not None:
                reset["password_hash"] = verification.new_hash
            if not await write_if_unchanged(session, fresh, now, **reset):
                return _STALE  # cannot happen under the row lock; never open on a failed write
            return await open_session(session, fresh, now, methods)
        await audit.record(
            session, AuditEventType.LOGIN_FAILURE, Outcome.FAILURE,
            subject=str(seen.user_id), reason=reason,
        )
        return _REFUSED

    async def mfa_grant(
        self, *, mfa_token: str, proof: FactorProof, audit: AuditContext
    ) -> TokenResponse:
        """``urn:bastion:params:oauth:grant-type:mfa``: completes a password grant that
        answered ``mfa_required``. One transaction on the locked account and challenge; a
        wrong code is counted and leaves the challenge unspent; success spends it."""
        async with self.database.transaction() as session:
            settled = await self._settle_mfa(session, mfa_token, proof, audit)
        if isinstance(settled, TokenResponse):
            return settled
        raise GrantError

    async def _settle_mfa(
        self, session: AsyncSession, mfa_token: str, proof: FactorProof, audit: AuditContext
    ) -> TokenResponse | _Refusal:
        token_hash = hash_secret_token(mfa_token)
        owner = await session.scalar(
            select(MfaChallenge.user_id).where(MfaChallenge.token_hash == token_hash)
        )
        if owner is None:
            await audit.record(
                session, AuditEventType.LOGIN_FAILURE, Outcome.FAILURE,
                reason="unknown_mfa_token",
            )
            return _REFUSED
        account = await lock_account(session, owner)  # the user row first, as every writer
        challenge = await session.scalar(
            select(MfaChallenge)
            .where(MfaChallenge.token_hash == token_hash)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        now = self.clock()
        if account is None or challenge is None:
            return _REFUSED
        if challenge.used_at is not None or challenge.expires_at <= now:
            reason = "spent_or_expired_mfa_token"
        elif account.disabled:
            reason = "disabled"
        elif account.locked(now):
            reason = "locked"  # refused even with the right code; not counted
        elif not account.mfa_enabled:
            reason = "mfa_off"  # turned off meanwhile: sign in again with the password
        else:
            methods = await self.factors.verify(session, account, proof, now, audit)
            if methods is None:
                return _REFUSED
            spent = await session.execute(
                update(MfaChallenge)
                .where(MfaChallenge.id == challenge.id, MfaChallenge.used_at.is_(None))
                .values(used_at=now)
                .execution_options(synchronize_session=False)
            )
            reset = {"failed_logins": 0, "lockouts": 0, "locked_until": None, "updated_at": now}
            if spent.rowcount != 1 or not await write_if_unchanged(  # type: ignore[attr-defined]
                session, account, now, **reset
            ):
                return _REFUSED  # cannot happen under the locks
            requested = None if challenge.scope is None else frozenset(challenge.scope.split())
            return await self._issue_login(session, account, requested, now, methods, audit)
        await audit.record(
            session, AuditEventType.LOGIN_FAILURE, Outcome.FAILURE,
            subject=str(account.user_id), reason=reason,
        )
        return _REFUSED

    async def refresh_grant(
        self, *, refresh_token: str, scope: str | None, audit: AuditContext
    ) -> TokenResponse:
        requested = requested_scope(scope)
        async with self.database.transaction() as session:
            settled = await self._settle_refresh(session, refresh_token, requested, audit)
        if isinstance(settled, TokenResponse):
            return settled
        if settled is _INVALID_SCOPE:
            raise InvalidScope
        raise GrantError

    async def _settle_refresh(
        self,
        session: AsyncSession,
        refresh_token: str,
        requested: frozenset[str] | None,
        audit: AuditContext,
    ) -> TokenResponse | _Refusal:
        """One transaction: find the token, lock the user, its session and the token (in
        that order, like every writer), decide on that fresh state, spend the token."""
        token_hash = hash_secret_token(refresh_token)
        owner = await session.execute(
            select(LoginSession.user_id, LoginSession.id)
            .join(RefreshToken, RefreshToken.session_id == LoginSession.id)
            .where(RefreshToken.token_hash == token_hash)
        )
        found = owner.one_or_none()
        if found is None:
            return _REFUSED
        user_id, login_id = found
        account = await lock_account(session, user_id)
        login = await session.scalar(
            select(LoginSession)
            .where(LoginSession.id == login_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        token = await session.scalar(
            select(RefreshToken)
            .where(RefreshToken.token_hash == token_hash)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        if account is None or login is None or token is None:
            return _REFUSED
        now = self.clock()
        if token.used_at is not None:
            await self._refresh_reuse(session, login, audit)
            return _REFUSED
        if (
            login.revoked_at is not None
            or login.expires_at <= now
            or token.expires_at <= now
            or account.disabled
        ):
            return _REFUSED
        session_scopes = frozenset(login.scope.split())
        if requested is not None and not requested <= session_scopes:
            return _INVALID_SCOPE  # before the token is spent: a retry with it is no replay
        # Single use, decided by the database: of two concurrent uses exactly one row
        # update succeeds; the other is a reuse like any replay.
        claimed = await session.execute(
            update(RefreshToken)
            .where(RefreshToken.id == token.id, RefreshToken.used_at.is_(None))
            .values(used_at=now)
        )
        if claimed.rowcount != 1:  # type: ignore[attr-defined]
            await self._refresh_reuse(session, login, audit)
            return _REFUSED
        login.last_used_at = now
        # The roles of the locked row: a refresh never keeps what a demotion took away.
        scopes = resolve_scope(requested or session_scopes, granted_permissions(account.roles))
        return await self.issuer.issue(
            session, account, login, scopes, now, audit, AuditEventType.TOKEN_REFRESH
        )

    async def _refresh_reuse(
        self, session: AsyncSession, login: LoginSession, audit: AuditContext
    ) -> None:
        """A used refresh token came back: someone holds a copy. The session dies whole."""
        await self.revocation.revoke_sessions(session, [login], reason="refresh_reuse")
        await audit.record(
            session, AuditEventType.REFRESH_REUSE, Outcome.DENIED,
            subject=str(login.user_id), session_id=str(login.id),
        )
