"""``BastionSecurity``: the one object that secures a FastAPI app, bastion's own included.

It owns what the route policies need on each request (the authenticator, the app's
permission names, the rate limiter, the audit sink) and checks them when it is built, so a
misconfiguration is an exception at construction or at start, never a 500 per request.
``install(app)`` (or ``FastAPI(lifespan=security.lifespan)``) wires the rest:

- the middleware: request id, access log, security headers, server errors (a generic 500
  that keeps the request id and logs no locals), body limit;
- the problem-details handlers (RFC 9457) for every error;
- ``PolicyRoute`` for the routes declared after it (policies checked before the body);
- the start-up check: every route declares ``public()``, ``authenticated()`` or
  ``require(...)``, every permission a route requires is one of ``permissions``, every rate
  limit a route declares resolves;
- the OpenAPI document: the app's own token URL and permission names, and each route's
  401/403/429 answers;
- safe logging when the host app configured none (JSON lines, secrets redacted, no locals).

bastion's ``create_app`` builds its service on this same object.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.middleware import Middleware

from bastion.apidocs.openapi import complete_document
from bastion.apidocs.router import self_hosted_docs
from bastion.audit.sinks import AuditSink, LogAuditSink
from bastion.dependencies import OAUTH2_SCHEME_NAME, policy_checks
from bastion.errors import install_problem_handlers
from bastion.identity.cookie_sessions import CookieSessions
from bastion.layer import (
    DEFAULT_REALM,
    SECURITY_STATE_KEY,
    SecurityMisconfigured,
    TokenAuthenticator,
)
from bastion.logs import ensure_safe_logging
from bastion.middleware import (
    AccessLogMiddleware,
    BodyLimitMiddleware,
    RequestIdMiddleware,
    SecureHeadersMiddleware,
    ServerErrorMiddleware,
)
from bastion.ratelimiting import RateLimiter
from bastion.route_inventory import assert_routes_guarded, declared_rate_limits
from bastion.routing import PolicyRoute, upgrade_to_policy_route
from bastion.security.ratelimits import DEFAULT_POLICY, parse_limit
from bastion.storage.ratelimits import MemoryRateLimitStore, RedisRateLimitStore
from bastion.storage.redis_client import redis_client_from_url

# ``resource:action``: lower-case words, as bastion's own (``notes:read``).
PERMISSION_PATTERN = re.compile(r"[a-z][a-z0-9_.-]{0,63}:[a-z][a-z0-9_.-]{0,63}")
_REALM_PATTERN = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]{1,64}")  # printable, no " or \
DEFAULT_MAX_BODY_BYTES = 1_048_576

_Lifespan = Callable[[Any], AbstractAsyncContextManager[Any]]


class UnconfiguredRateLimit(SecurityMisconfigured, LookupError):
    """A route's quota names a limit nobody configured."""


class UnknownPermissions(RuntimeError):
    def __init__(self, offenders: list[str]) -> None:
        super().__init__(
            "refusing to start: these routes require permissions that are not in "
            "BastionSecurity(permissions=...):\n"
            + "\n".join(f"  - {offender}" for offender in offenders)
        )
        self.offenders = offenders


class BastionSecurity:
    """The security layer of one FastAPI app. See the module docstring."""

    def __init__(
        self,
        *,
        authenticator: TokenAuthenticator,
        permissions: Iterable[str],
        rate_limit: str | None = "600/minute",
        redis_url: str | None = None,
        audit: AuditSink | None = None,
        realm: str = DEFAULT_REALM,
        token_url: str | None = None,
        second_factor_for: Iterable[str] = (),
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        rate_limiter: RateLimiter | None = None,
        browser_sessions: CookieSessions | None = None,
        outer_middleware: Sequence[Middleware] = (),
        inner_middleware: Sequence[Middleware] = (),
    ) -> None:
        """``authenticator`` verifies bearer tokens (``JwksAuthenticator`` for tokens a
        bastion service issued); ``permissions`` are the app's own permission names;
        ``rate_limit`` is every route's default quota per client (``"600/minute"``,
        ``None`` for none), counted in Redis when ``redis_url`` is given; ``audit``
        records refusals (default: a structured log line); ``realm`` names the
        ``WWW-Authenticate`` challenges; ``token_url`` is where the OpenAPI "Authorize"
        button gets a token (``None``: a plain bearer scheme); a route requiring any of
        ``second_factor_for`` (permissions of ``permissions``) also needs a token whose
        ``amr`` holds a second factor, else 403 ``insufficient_user_authentication``
        (RFC 9470 step-up).

        The rest is for bastion's own service: its rate limiter (with its login quotas),
        its browser sessions, and the edge middleware around and inside the core."""
        if not inspect.iscoroutinefunction(getattr(authenticator, "authenticate", None)):
            raise SecurityMisconfigured(
                "authenticator must have an async authenticate(token) method "
                "(e.g. bastion.toolkit.JwksAuthenticator)"
            )
        self._authenticator = authenticator
        self.permissions = _checked_permissions(permissions)
        if not _REALM_PATTERN.fullmatch(realm):
            raise SecurityMisconfigured(
                "realm must be 1-64 printable ASCII characters without quotes or backslashes"
            )
        self._realm = realm
        if token_url is not None and not token_url.startswith(("/", "https://", "http://")):
            raise SecurityMisconfigured(
                "token_url must be a path (/auth/token) or an absolute http(s) URL"
            )
        self.token_url = token_url
        if isinstance(second_factor_for, str):
            raise SecurityMisconfigured(
                "second_factor_for must be a collection of permission names, not one string"
            )
        self._second_factor_for = frozenset(second_factor_for)
        unknown = sorted(self._second_factor_for - self.permissions)
        if unknown:
            raise SecurityMisconfigured(
                f"second_factor_for names permissions that are not in permissions: {unknown}"
            )
        if max_body_bytes < 1:
            raise SecurityMisconfigured("max_body_bytes must be at least 1")
        self.max_body_bytes = max_body_bytes
        self._owns_rate_limiter = rate_limiter is None
        self._rate_limiter = rate_limiter or _rate_limiter(rate_limit, redis_url)
        if audit is not None and not inspect.iscoroutinefunction(getattr(audit, "record", None)):
            raise SecurityMisconfigured("audit must have an async record(event) method")
        self._audit: AuditSink = audit or LogAuditSink()
        self._browser_sessions = browser_sessions
        self._outer_middleware = list(outer_middleware)
        self._inner_middleware = list(inner_middleware)
        self._installed_on: FastAPI | None = None

    # What the route policies read per request (``bastion.layer.SecurityLayer``).
    @property
    def authenticator(self) -> TokenAuthenticator:
        return self._authenticator

    @property
    def rate_limiter(self) -> RateLimiter:
        return self._rate_limiter

    @property
    def audit(self) -> AuditSink:
        return self._audit

    @property
    def browser_sessions(self) -> CookieSessions | None:
        return self._browser_sessions

    @property
    def realm(self) -> str:
        return self._realm

    @property
    def second_factor_for(self) -> frozenset[str]:
        return self._second_factor_for

    # Wiring ------------------------------------------------------------------------

    def middleware(self) -> list[Middleware]:
        """The stack, outermost first: request id, access log, security headers, server
        errors, then the body limit innermost (the service's edge around and checks
        inside)."""
        return [
            *self._outer_middleware,
            Middleware(RequestIdMiddleware),
            Middleware(AccessLogMiddleware),
            Middleware(SecureHeadersMiddleware),
            Middleware(ServerErrorMiddleware),
            *self._inner_middleware,
            Middleware(BodyLimitMiddleware, max_body_bytes=self.max_body_bytes),
        ]

    def install(self, app: FastAPI) -> None:
        """Secures ``app``: middleware, handlers, policy routes, OpenAPI, and the start-up
        check (the app's lifespan runs it first). Once per app, before it serves."""
        self._install(app)
        self._check_at_start(app)

    @asynccontextmanager
    async def lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        """``FastAPI(lifespan=security.lifespan)``: installs itself if ``install`` was not
        called, checks the routes, starts the authenticator; stops it on shutdown."""
        if self._installed_on is not app:
            self._install(app)
        async with self._started(app):
            yield

    def _install(self, app: FastAPI) -> None:
        if getattr(app.state, SECURITY_STATE_KEY, None) is not None:
            raise SecurityMisconfigured("this app already has a bastion security layer")
        if self._installed_on is not None:
            raise SecurityMisconfigured("a BastionSecurity secures one app")
        ensure_safe_logging()
        setattr(app.state, SECURITY_STATE_KEY, self)
        self._installed_on = app
        # Outermost, around whatever the app added itself. Under ``lifespan`` the stack is
        # already built (the lifespan runs through it): build it again for the requests.
        app.user_middleware[0:0] = self.middleware()
        app.middleware_stack = None
        install_problem_handlers(app)
        app.router.route_class = PolicyRoute
        for route in app.router.routes:
            if isinstance(route, APIRoute):
                upgrade_to_policy_route(route)
        if not hasattr(app.state, "public_paths"):
            app.state.public_paths = set()
        # FastAPI's own documentation routes, when the app keeps them: public, as the app
        # asked (they are Starlette routes, outside the policies).
        app.state.public_paths.update(
            path
            for path in (
                app.openapi_url, app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url
            )
            if path
        )
        self_hosted_docs(app)
        self._document_security(app)

    def _check_at_start(self, app: FastAPI) -> None:
        """Runs ``_started`` around the app's own lifespan, for an app installed by
        ``install`` rather than built with ``lifespan``."""
        own: _Lifespan = app.router.lifespan_context
        started = self._started

        @asynccontextmanager
        async def checked(running: Any) -> AsyncIterator[Any]:
            async with started(running), own(running) as state:
                yield state

        app.router.lifespan_context = checked

    @asynccontextmanager
    async def _started(self, app: FastAPI) -> AsyncIterator[None]:
        self.check_routes(app)
        start = getattr(self._authenticator, "start", None)
        if start is not None and inspect.iscoroutinefunction(start):
            await start()
        try:
            yield
        finally:
            close = getattr(self._authenticator, "aclose", None)
            if close is not None and inspect.iscoroutinefunction(close):
                await close()
            if self._owns_rate_limiter:
                await self._rate_limiter.close()

    def check_routes(self, app: FastAPI) -> None:
        """Deny by default, at start: every route guarded, every required permission one of
        the app's, every declared rate limit resolvable."""
        assert_routes_guarded(app)
        unknown = []
        for route in app.routes:
            if not isinstance(route, APIRoute):
                continue
            for check in policy_checks(route.dependant):
                missing = sorted(set(check.scopes) - self.permissions)
                if missing:
                    methods = ",".join(sorted(route.methods or ()))
                    unknown.append(f"{methods} {route.path}: {' '.join(missing)}")
        if unknown:
            raise UnknownPermissions(unknown)
        for rate_limit in declared_rate_limits(app):
            if not self._rate_limiter.counts(rate_limit):
                continue
            try:
                self._rate_limiter.quota(rate_limit)
            except LookupError as error:
                raise UnconfiguredRateLimit(
                    f"{error}: give the route's quota its limit, "
                    "RateLimit(name, limit='100/minute')"
                ) from None

    def _document_security(self, app: FastAPI) -> None:
        """The app's document states its own token URL, permission names and every error
        answer of each route."""
        make_document: Callable[[], dict[str, Any]] = app.openapi
        permissions, token_url = sorted(self.permissions), self.token_url
        browser_session = self._browser_sessions is not None

        def openapi() -> dict[str, Any]:
            if app.openapi_schema is None:
                document = complete_document(
                    app, make_document(), browser_session=browser_session
                )
                schemes = document.get("components", {}).get("securitySchemes", {})
                if OAUTH2_SCHEME_NAME in schemes:
                    schemes[OAUTH2_SCHEME_NAME] = _bearer_scheme(token_url, permissions)
                app.openapi_schema = document
            return app.openapi_schema

        app.openapi = openapi  # type: ignore[method-assign]


def _checked_permissions(permissions: Iterable[str]) -> frozenset[str]:
    if isinstance(permissions, str):
        raise SecurityMisconfigured("permissions must be a collection of names, not one string")
    names = frozenset(permissions)
    if not names:
        raise SecurityMisconfigured("permissions must name at least one permission")
    malformed = sorted(name for name in names if not PERMISSION_PATTERN.fullmatch(str(name)))
    if malformed:
        raise SecurityMisconfigured(
            f"permissions must look like 'resource:action' (lower case): {malformed}"
        )
    return names


def _rate_limiter(rate_limit: str | None, redis_url: str | None) -> RateLimiter:
    if rate_limit is not None:
        try:
            parse_limit(rate_limit)
        except ValueError as error:
            raise SecurityMisconfigured(f"rate_limit: {error}") from None
    if redis_url is not None:
        store: Any = RedisRateLimitStore(redis_client_from_url(redis_url))
    else:
        store = MemoryRateLimitStore()
    if rate_limit is None:  # no default quota; a route's own RateLimit(limit=...) counts
        return RateLimiter(store, configured={}, uncounted=frozenset({DEFAULT_POLICY}))
    return RateLimiter(store, configured={DEFAULT_POLICY: rate_limit})


def _bearer_scheme(token_url: str | None, permissions: Collection[str]) -> dict[str, Any]:
    if token_url is None:
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "An access token (RFC 9068) of the service that issues them.",
        }
    return {
        "type": "oauth2",
        "flows": {
            "password": {
                "tokenUrl": token_url,
                "scopes": {permission: permission for permission in permissions},
            }
        },
    }
