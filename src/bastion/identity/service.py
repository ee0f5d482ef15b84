"""Registration, login, refresh with reuse detection, revocation, lockout, password change.

Every method runs inside the caller's transaction (one per request) and writes its audit
event in that same transaction, so a change and its record commit or vanish together.
Failures the client must not be able to tell apart (unknown user, wrong password, disabled,
locked) all end in the same ``GrantError("invalid_grant")`` after the same work: one
Argon2id verification, one audit insert.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import HTTPConnection

from bastion.audit.events import AuditEventType, AuditRecord, Outcome
from bastion.audit.service import audit_context, record_event
from bastion.config import Settings
from bastion.errors import BadRequest, Conflict, InvalidFields, Unauthenticated
from bastion.identity.schemas import RegisterRequest, TokenResponse
from bastion.problems import FieldError
from bastion.security.passwords import PasswordHasher, password_problems
from bastion.security.permissions import (
    DEFAULT_ROLES,
    UnknownScope,
    granted_permissions,
    parse_scope,
    resolve_scope,
)
from bastion.security.principal import Principal
from bastion.security.tokens import (
    INVALID_TOKEN_DETAIL,
    LEEWAY_SECONDS,
    InvalidToken,
    TokenVerifier,
    access_token_claims,
    hash_refresh_token,
    new_refresh_token,
)
from bastion.storage.database import Database
from bastion.storage.revocations import RevocationStore
from bastion.storage.signing_keys import KeyRingHolder
from bastion.storage.tables import LoginSession, RefreshToken, RevokedAccessToken, User

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class RequestContext:
    """Who is asking, for the audit log."""

    client_ip: str | None
    request_id: str | None

    @classmethod
    def of(cls, connection: HTTPConnection) -> RequestContext:
        client_ip, request_id = audit_context(connection)
        return cls(client_ip=client_ip, request_id=request_id)


class GrantError(Exception):
    """An RFC 6749 §5.2 error; ``description`` is fixed text, safe for the client."""

    error = "invalid_grant"
    description = "The credentials or the grant are not valid."


class InvalidScope(GrantError):
    error = "invalid_scope"
    description = "The requested scope is not valid."


class AccountExists(Conflict):
    detail = "That username or email address is already registered."


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


def _requested_scope(scope: str | None) -> frozenset[str] | None:
    """The scope a grant asks for; unknown permissions are refused before any other work."""
    try:
        requested = parse_scope(scope)
        resolve_scope(requested, frozenset())
    except UnknownScope:
        raise InvalidScope from None
    return requested


class IdentityService:
    def __init__(
        self,
        *,
        settings: Settings,
        database: Database,
        hasher: PasswordHasher,
        keys: KeyRingHolder,
        verifier: TokenVerifier,
        revocations: RevocationStore,
        clock: Clock = utc_now,
    ) -> None:
        self.settings = settings
        self.database = database
        self.hasher = hasher
        self.keys = keys
        self.verifier = verifier
        self.revocations = revocations
        self.clock = clock

    # -- audit -------------------------------------------------------------------------

    async def _audit(
        self,
        session: AsyncSession,
        context: RequestContext,
        event: AuditEventType,
        outcome: Outcome,
        *,
        actor: str | None = None,
        subject: str | None = None,
        **details: str | int | bool | None,
    ) -> None:
        await record_event(
            session,
            AuditRecord(
                occurred_at=self.clock(),
                type=event,
                outcome=outcome,
                actor_id=actor,
                subject_id=subject,
                client_ip=context.client_ip,
                request_id=context.request_id,
                details=details,
            ),
        )

    # -- registration --------------------------------------------------------------------

    async def register(
        self, session: AsyncSession, request: RegisterRequest, context: RequestContext
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
        await self._audit(
            session, context, AuditEventType.REGISTRATION, Outcome.SUCCESS,
            actor=str(user.id), subject=str(user.id),
        )
        return user

    # -- password grant ------------------------------------------------------------------

    def _lock_period(self, lockouts: int) -> timedelta:
        seconds = self.settings.lockout_base_seconds * 2 ** min(lockouts - 1, 30)
        return timedelta(seconds=min(seconds, self.settings.lockout_max_seconds))

    async def password_grant(
        self,
        session: AsyncSession,
        *,
        username: str,
        password: str,
        scope: str | None,
        context: RequestContext,
    ) -> TokenResponse:
        requested = _requested_scope(scope)
        # Read, then hash outside any transaction: on SQLite a transaction holds the
        # database's write lock, and Argon2id takes tens of milliseconds.
        async with self.database.transaction() as lookup:
            user = await lookup.scalar(select(User).where(User.username == username.lower()))
        if user is None:
            await self.hasher.verify_dummy(password)
            await self._audit(
                session, context, AuditEventType.LOGIN_FAILURE, Outcome.FAILURE,
                reason="unknown_user",
            )
            raise GrantError
        verification = await self.hasher.verify(password, user.password_hash)
        now = self.clock()
        if user.disabled:
            reason = "disabled"
        elif user.locked_until is not None and user.locked_until > now:
            reason = "locked"  # refused even with the right password; does not extend the lock
        elif not verification.valid:
            reason = "wrong_password"
            await self._count_failure(session, user.id, now, context)
        else:
            reason = ""
        if reason:
            await self._audit(
                session, context, AuditEventType.LOGIN_FAILURE, Outcome.FAILURE,
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
            session, user, login, granted, now, context, AuditEventType.LOGIN_SUCCESS
        )

    async def _count_failure(
        self, session: AsyncSession, user_id: uuid.UUID, now: datetime, context: RequestContext
    ) -> None:
        """Counts one failure atomically in the database, so parallel guesses cannot race
        the counter past the threshold; exactly one of them sets the lock."""
        failures = await session.scalar(
            update(User)
            .where(User.id == user_id)
            .values(failed_logins=User.failed_logins + 1, updated_at=now)
            .returning(User.failed_logins)
        )
        threshold = self.settings.lockout_threshold
        if failures is None or failures < threshold:
            return
        lockouts = await session.scalar(
            update(User)
            .where(User.id == user_id, User.failed_logins >= threshold)
            .values(failed_logins=0, lockouts=User.lockouts + 1)
            .returning(User.lockouts)
        )
        if lockouts is None:  # another request set this lock already
            return
        period = self._lock_period(lockouts)
        await session.execute(
            update(User).where(User.id == user_id).values(locked_until=now + period)
        )
        await self._audit(
            session, context, AuditEventType.LOCKOUT, Outcome.DENIED,
            subject=str(user_id), seconds=int(period.total_seconds()), lockouts=lockouts,
        )

    async def _issue_tokens(
        self,
        session: AsyncSession,
        user: User,
        login: LoginSession,
        scopes: frozenset[str],
        now: datetime,
        context: RequestContext,
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
        await self._audit(
            session, context, event, Outcome.SUCCESS,
            actor=str(user.id), subject=str(user.id), session_id=str(login.id),
        )
        return TokenResponse(
            access_token=access,
            expires_in=lifetime,
            refresh_token=refresh,
            scope=" ".join(sorted(scopes)),
        )

    # -- refresh grant -------------------------------------------------------------------

    async def refresh_grant(
        self,
        session: AsyncSession,
        *,
        refresh_token: str,
        scope: str | None,
        context: RequestContext,
    ) -> TokenResponse:
        requested = _requested_scope(scope)
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
            await self._refresh_reuse(session, login, user, context)
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
            await self._refresh_reuse(session, login, user, context)
            raise GrantError
        scopes = resolve_scope(requested or session_scopes, granted_permissions(user.roles))
        return await self._issue_tokens(
            session, user, login, scopes, now, context, AuditEventType.TOKEN_REFRESH
        )

    async def _refresh_reuse(
        self, session: AsyncSession, login: LoginSession, user: User, context: RequestContext
    ) -> None:
        """A used refresh token came back: someone holds a copy. The session dies whole."""
        await self._revoke_sessions(session, [login], reason="refresh_reuse")
        await self._audit(
            session, context, AuditEventType.REFRESH_REUSE, Outcome.DENIED,
            subject=str(user.id), session_id=str(login.id),
        )

    # -- revocation ----------------------------------------------------------------------

    def _access_token_ttl(self) -> int:
        """How long a revocation must be remembered: until every token it covers expired."""
        return self.settings.access_token_ttl + LEEWAY_SECONDS

    async def _revoke_sessions(
        self, session: AsyncSession, logins: list[LoginSession], *, reason: str
    ) -> None:
        now = self.clock()
        for login in logins:
            if login.revoked_at is None:
                login.revoked_at = now
                login.revoked_reason = reason
        await session.flush()
        # The database is the record; the store makes it effective at once, without a
        # query per request. Written after the flush: if the commit then fails, a session
        # is revoked that the database still lists as live, the safe direction.
        for login in logins:
            await self.revocations.revoke_session(
                str(login.id), ttl_seconds=self._access_token_ttl()
            )

    async def logout(
        self, session: AsyncSession, principal: Principal, context: RequestContext
    ) -> None:
        login = await session.get(LoginSession, uuid.UUID(principal.session_id))
        if login is not None:
            await self._revoke_sessions(session, [login], reason="logout")
        await self._audit(
            session, context, AuditEventType.LOGOUT, Outcome.SUCCESS,
            actor=principal.user_id, subject=principal.user_id,
            session_id=principal.session_id,
        )

    async def revoke(
        self, session: AsyncSession, *, token: str, context: RequestContext
    ) -> None:
        """RFC 7009: a refresh token ends its session; an access token ends itself.

        Anything else is ignored; the endpoint answers 200 either way, so it tells nobody
        whether a token was valid.
        """
        row = await session.execute(
            select(RefreshToken, LoginSession)
            .join(LoginSession, RefreshToken.session_id == LoginSession.id)
            .where(RefreshToken.token_hash == hash_refresh_token(token))
        )
        found = row.one_or_none()
        if found is not None:
            _refresh, login = found
            await self._revoke_sessions(session, [login], reason="revoked")
            await self._audit(
                session, context, AuditEventType.REVOCATION, Outcome.SUCCESS,
                subject=str(login.user_id), session_id=str(login.id), kind="refresh_token",
            )
            return
        try:
            claims = self.verifier.verify(token, await self.keys.ring())
        except InvalidToken:
            return
        now = self.clock()
        remaining = max(claims.expires_at - int(now.timestamp()), 0) + LEEWAY_SECONDS
        expires_at = now + timedelta(seconds=remaining)
        await session.execute(
            delete(RevokedAccessToken).where(RevokedAccessToken.expires_at < now)
        )
        if await session.get(RevokedAccessToken, claims.token_id) is None:
            session.add(RevokedAccessToken(jti=claims.token_id, expires_at=expires_at))
        await session.flush()
        await self.revocations.revoke_token(claims.token_id, ttl_seconds=remaining)
        await self._audit(
            session, context, AuditEventType.REVOCATION, Outcome.SUCCESS,
            subject=claims.subject, session_id=claims.session_id, kind="access_token",
        )

    # -- the signed-in user --------------------------------------------------------------

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
        context: RequestContext,
    ) -> None:
        async with self.database.transaction() as lookup:  # released before hashing
            user = await lookup.get(User, uuid.UUID(principal.user_id))
        if user is None or user.disabled:
            raise Unauthenticated(INVALID_TOKEN_DETAIL, token_presented=True)
        verification = await self.hasher.verify(current_password, user.password_hash)
        now = self.clock()
        if user.locked_until is not None and user.locked_until > now:
            raise _WrongCurrentPassword  # like the token endpoint: no change, no extension
        if not verification.valid:
            # A stolen access token must not become a free password oracle: the failure
            # counts toward the lockout. It is its own unit of work, committed before the
            # refusal, because the request's transaction rolls back with the error.
            async with self.database.transaction() as failure:
                await self._count_failure(failure, user.id, now, context)
                await self._audit(
                    failure, context, AuditEventType.PASSWORD_CHANGE, Outcome.FAILURE,
                    actor=str(user.id), subject=str(user.id), reason="wrong_password",
                )
            raise _WrongCurrentPassword
        problems = password_problems(new_password, username=user.username, email=user.email)
        if new_password == current_password:
            problems.append("The new password must differ from the current one.")
        if problems:
            errors: list[FieldError] = [
                {"loc": ["body", "new_password"], "msg": msg} for msg in problems
            ]
            raise InvalidFields(errors)
        new_hash = await self.hasher.hash(new_password)
        await session.execute(
            update(User)
            .where(User.id == user.id)
            .values(password_hash=new_hash, updated_at=now, failed_logins=0)
        )
        others = await session.scalars(
            select(LoginSession).where(
                LoginSession.user_id == user.id,
                LoginSession.id != uuid.UUID(principal.session_id),
                LoginSession.revoked_at.is_(None),
            )
        )
        await self._revoke_sessions(session, list(others), reason="password_change")
        await self._audit(
            session, context, AuditEventType.PASSWORD_CHANGE, Outcome.SUCCESS,
            actor=str(user.id), subject=str(user.id),
        )

    # -- start-up ------------------------------------------------------------------------

    async def restore_revocations(self) -> int:
        """Re-applies the database's record of revocations to the revocation store.

        Run at start-up (an in-process store begins empty) and by a shared store that
        finds itself wiped (a Redis restarted without persistence). Returns how many.
        """
        now = self.clock()
        since = now - timedelta(seconds=self._access_token_ttl())
        async with self.database.transaction() as session:
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
            await self.revocations.revoke_session(
                str(session_id), ttl_seconds=self._access_token_ttl()
            )
        for jti, expires_at in revoked_tokens:
            remaining = max(int((expires_at - now).total_seconds()), 1)
            await self.revocations.revoke_token(jti, ttl_seconds=remaining)
        for user_id, cutoff in user_cutoffs:
            if cutoff is None:  # not selected; narrows the type
                continue
            # Tokens issued before ``cutoff`` (the last at cutoff - 1) are accepted until
            # their exp plus the leeway: remember the cut-off that long from now.
            remaining = max(cutoff + self._access_token_ttl() - int(now.timestamp()), 1)
            await self.revocations.revoke_user_tokens_before(
                str(user_id), cutoff, ttl_seconds=remaining
            )
        await self.revocations.mark_restored()
        return len(revoked_sessions) + len(revoked_tokens) + len(user_cutoffs)

    async def restore_revocations_quietly(self) -> None:
        """The store's restorer: same work, no result."""
        await self.restore_revocations()


class _WrongCurrentPassword(BadRequest):
    detail = "The current password is not correct."
