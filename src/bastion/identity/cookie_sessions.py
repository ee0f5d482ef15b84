"""Browser sessions: an opaque cookie that authenticates like a bearer token.

``POST /auth/session`` opens a session of kind ``cookie`` and hands the browser two cookies:
the session cookie (HttpOnly, a random 256-bit value the database keeps only as its
SHA-256) and the CSRF cookie (readable by the console's script, the session-bound HMAC of
``security.csrf``). From then on the session cookie authenticates every route a bearer token
does, with the same permissions and the same revocation: a cookie principal is a
``Principal`` like a token's, checked against the same revocation store.

The hot path is a token's: a dict lookup of the cookie's hash in this process, then the
revocation store (``is_revoked`` on the session, the user's cut-off). The database is read
when this process has not seen the cookie, at most every ``_recheck_seconds`` after (so an
entry never outlives what the store remembers of a revocation), and when the store says the
session or the user changed. The session slides: its ``last_used_at`` is written at most
every tenth of the idle TTL (a conditional ``UPDATE`` on a live session), so reads stay reads.

A session expires ``BASTION_COOKIE_IDLE_TTL`` after its last *recorded* use (between 0.9
and 1.0 of the idle TTL after the last request) and ``BASTION_COOKIE_MAX_TTL`` after it was
opened, however active.
"""

from __future__ import annotations

import re
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta

from fastapi import Request, Response
from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.types import Scope

from bastion.audit.context import AuditContext
from bastion.audit.events import AuditEventType, Outcome
from bastion.audit.sinks import SecurityEvent
from bastion.clock import Clock, utc_now
from bastion.config import Settings
from bastion.errors import CsrfRefused, Unauthenticated
from bastion.identity.freshness import AccountState
from bastion.identity.issuance import new_login_session
from bastion.layer import layer_of
from bastion.middleware.route_template import route_template
from bastion.security.csrf import CSRF_HEADER, CsrfTokens, origin_refusal
from bastion.security.permissions import granted_permissions
from bastion.security.principal import Principal
from bastion.security.secret_tokens import hash_secret_token, new_secret_token
from bastion.storage.database import Database, StorageUnavailable
from bastion.storage.outages import Outage
from bastion.storage.revocations import RevocationStore
from bastion.storage.tables import LoginSession, User

COOKIE_KIND = "cookie"
SESSION_COOKIE = "bastion_session"
CSRF_COOKIE = "bastion_csrf"
HOST_PREFIX = "__Host-"
INVALID_SESSION_DETAIL = "The session is not valid; sign in again."
# What ``new_secret_token()`` makes; anything else is refused before it is hashed.
_WELL_FORMED = re.compile(r"[A-Za-z0-9_-]{43}")
_CACHE_ENTRIES = 10_000

_sessions = LoginSession.__table__.c
_users = User.__table__.c
_BY_SECRET = (
    select(
        _sessions.id,
        _sessions.user_id,
        _sessions.kind,
        _sessions.scope,
        _sessions.amr,
        _sessions.expires_at,
        _sessions.last_used_at,
        _sessions.revoked_at,
        _users.roles,
        _users.disabled,
        _users.tokens_revoked_before,
    )
    .join(User.__table__, _users.id == _sessions.user_id)
    .where(_sessions.secret_hash == bindparam("secret_hash"))
)


@dataclass(frozen=True, slots=True)
class CookieNames:
    """Over HTTPS the cookies are ``Secure`` and ``__Host-`` prefixed: the browser then
    accepts them only from this exact host over TLS, so a sibling subdomain or a network
    attacker on plain HTTP cannot plant or overwrite them. A request is read under the
    names of its own scheme only."""

    session: str
    csrf: str
    secure: bool

    @classmethod
    def of(cls, scope: Scope) -> CookieNames:
        return _HTTPS_NAMES if scope.get("scheme") == "https" else _HTTP_NAMES


_HTTPS_NAMES = CookieNames(HOST_PREFIX + SESSION_COOKIE, HOST_PREFIX + CSRF_COOKIE, secure=True)
_HTTP_NAMES = CookieNames(SESSION_COOKIE, CSRF_COOKIE, secure=False)


@dataclass(frozen=True, slots=True)
class CookieLogin:
    """What a cookie sign-in hands the browser: the session's secret and its id."""

    secret: str
    session_id: str


@dataclass(slots=True)
class _Known:
    """A cookie session as this process last read it from the database."""

    session_id: str
    user_id: str
    scopes: frozenset[str]
    methods: frozenset[str]
    # The cut-off it was read against: a later role change or disable moves the user's
    # cut-off past it, and the revocation store then sends this entry back to the database.
    issued_at: int
    expires_at: datetime
    last_used_at: datetime
    read_at: float  # time.monotonic()

    def principal(self) -> Principal:
        return Principal(
            user_id=self.user_id,
            session_id=self.session_id,
            token_id=f"cookie:{self.session_id}",
            scopes=self.scopes,
            issued_at=self.issued_at,
            expires_at=int(self.expires_at.timestamp()),
            via_cookie=True,
            methods=self.methods,
        )


class CookieSessions:
    def __init__(
        self,
        *,
        settings: Settings,
        database: Database,
        revocations: RevocationStore,
        clock: Clock = utc_now,
    ) -> None:
        self.settings = settings
        self.database = database
        self.revocations = revocations
        self.clock = clock
        self.public_origin = settings.public_origin
        self.idle = timedelta(seconds=settings.cookie_idle_ttl)
        self.touch_every = self.idle / 10
        # A revocation is remembered by the store for an access token's lifetime; an entry
        # read longer ago than that could miss one, so it is read again before then.
        self._recheck_seconds = min(
            settings.cookie_idle_ttl / 10, float(settings.access_token_ttl)
        )
        self._known: OrderedDict[str, _Known] = OrderedDict()
        self._csrf: CsrfTokens | None = None

    def start(self, csrf_secret: bytes) -> None:
        """The CSRF secret lives in the database (shared by every process): set at start."""
        self._csrf = CsrfTokens(csrf_secret)

    def require_started(self) -> None:
        """503 until the start-up work has read the secret (a database that did not answer
        at start): no cookie is issued or accepted before then, as no token is."""
        if self._csrf is None:
            raise StorageUnavailable(outage=Outage("database", "StartUpIncomplete"))

    @property
    def csrf(self) -> CsrfTokens:
        if self._csrf is None:
            self.require_started()
        assert self._csrf is not None  # noqa: S101 (require_started raised otherwise)
        return self._csrf

    # Opening and ending ------------------------------------------------------------

    def open(
        self,
        session: AsyncSession,
        account: AccountState,
        now: datetime,
        audit: AuditContext,
        methods: tuple[str, ...] = ("pwd",),
    ) -> CookieLogin:
        """A new cookie session for an account whose password (and second factor) was just
        verified on its locked row (``Grants.cookie_sign_in``), holding every permission of
        its roles."""
        secret = new_secret_token()
        login = new_login_session(
            account, granted_permissions(account.roles), now, audit,
            lifetime_seconds=self.settings.cookie_max_ttl,
            kind=COOKIE_KIND, secret_hash=hash_secret_token(secret), methods=methods,
        )
        session.add(login)
        return CookieLogin(secret=secret, session_id=str(login.id))

    def set_cookies(self, response: Response, scope: Scope, login: CookieLogin) -> None:
        """Both cookies, for the browser's session only (no ``Max-Age``: closing the
        browser ends them; the server ends the session on its own deadlines anyway)."""
        names = CookieNames.of(scope)
        response.set_cookie(
            names.session, login.secret,
            path="/", secure=names.secure, httponly=True, samesite="strict",
        )
        response.set_cookie(
            names.csrf, self.csrf.token_for(login.session_id),
            path="/", secure=names.secure, httponly=False, samesite="strict",
        )

    @staticmethod
    def clear_cookies(response: Response, scope: Scope) -> None:
        names = CookieNames.of(scope)
        for name, httponly in ((names.session, True), (names.csrf, False)):
            response.delete_cookie(
                name, path="/", secure=names.secure, httponly=httponly, samesite="strict"
            )

    # Authenticating ----------------------------------------------------------------

    async def principal(self, request: Request) -> Principal | None:
        """The principal of the request's session cookie; None without one; 401
        (``Unauthenticated``) for a cookie that is not a live session."""
        value = request.cookies.get(CookieNames.of(request.scope).session)
        if value is None:
            return None
        self.require_started()
        if not _WELL_FORMED.fullmatch(value):
            raise Unauthenticated(INVALID_SESSION_DETAIL, token_presented=True)
        key = hash_secret_token(value)
        now = self.clock()
        known = self._known.get(key)
        if known is None or time.monotonic() - known.read_at >= self._recheck_seconds:
            known = await self._read(key, now)
        else:
            self._known.move_to_end(key)
        if not self._within_deadlines(known, now):
            self._forget(key)
            raise Unauthenticated(INVALID_SESSION_DETAIL, token_presented=True)
        if await self._revoked(known):
            # Ended, or the user's roles or state changed since this process read it.
            known = await self._read(key, now)
            if await self._revoked(known):
                self._forget(key)
                raise Unauthenticated(INVALID_SESSION_DETAIL, token_presented=True)
        if now - known.last_used_at >= self.touch_every:
            await self._touch(key, known, now)
        return known.principal()

    async def check_csrf(self, request: Request, principal: Principal) -> None:
        """403 (audited) unless an unsafe cookie-authenticated request came from this
        service's own pages and carries this session's token."""
        names = CookieNames.of(request.scope)
        reason = origin_refusal(request.headers, self.public_origin) or self.csrf.refusal(
            principal.session_id,
            header=request.headers.get(CSRF_HEADER),
            cookie=request.cookies.get(names.csrf),
        )
        if reason is not None:
            await self.refuse(request, reason, principal)

    async def refuse(
        self, request: Request, reason: str, principal: Principal | None = None
    ) -> None:
        """Records the refusal through the app's audit sink, as every 403 of the policies
        is (the service's commits it on its own: the request fails right after), and raises
        the 403."""
        context = AuditContext.of(request)
        await layer_of(request.app).audit.record(
            SecurityEvent(
                type=AuditEventType.CSRF_REFUSAL.value,
                outcome=Outcome.DENIED.value,
                actor_id=principal.user_id if principal else context.actor_id,
                subject_id=principal.user_id if principal else None,
                client_ip=context.client_ip,
                request_id=context.request_id,
                details={
                    "session_id": principal.session_id if principal else None,
                    "method": request.method,
                    "route": route_template(request.scope),
                    "reason": reason,
                },
            )
        )
        raise CsrfRefused

    # The database and the cache -------------------------------------------------------

    async def _read(self, key: str, now: datetime) -> _Known:
        rows = await self.database.lookup(_BY_SECRET, {"secret_hash": key})
        row = rows[0] if rows else None
        if (
            row is None
            or row.kind != COOKIE_KIND
            or row.revoked_at is not None
            or row.disabled
        ):
            self._forget(key)
            raise Unauthenticated(INVALID_SESSION_DETAIL, token_presented=True)
        scopes = frozenset(row.scope.split()) & granted_permissions(tuple(row.roles))
        known = _Known(
            session_id=str(row.id),
            user_id=str(row.user_id),
            scopes=scopes,
            methods=frozenset(row.amr.split()),
            issued_at=max(int(now.timestamp()), row.tokens_revoked_before or 0),
            expires_at=row.expires_at,
            last_used_at=row.last_used_at or now,
            read_at=time.monotonic(),
        )
        self._known[key] = known
        self._known.move_to_end(key)
        while len(self._known) > _CACHE_ENTRIES:
            self._known.popitem(last=False)
        return known

    def _within_deadlines(self, known: _Known, now: datetime) -> bool:
        return now < known.expires_at and now < known.last_used_at + self.idle

    async def _revoked(self, known: _Known) -> bool:
        return await self.revocations.is_revoked(
            jti=f"cookie:{known.session_id}",
            sid=known.session_id,
            user_id=known.user_id,
            issued_at=known.issued_at,
        )

    async def _touch(self, key: str, known: _Known, now: datetime) -> None:
        """Slides the idle deadline, on a session still live in the database."""
        async with self.database.transaction() as session:
            result = await session.execute(
                update(LoginSession)
                .where(
                    LoginSession.id == uuid.UUID(known.session_id),
                    LoginSession.revoked_at.is_(None),
                )
                .values(last_used_at=now)
            )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            self._forget(key)
            raise Unauthenticated(INVALID_SESSION_DETAIL, token_presented=True)
        known.last_used_at = now

    def _forget(self, key: str) -> None:
        self._known.pop(key, None)
