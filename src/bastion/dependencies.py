"""Route policies and ``Annotated`` aliases that routes declare.

Every route declares exactly how it may be reached: ``public()``, ``authenticated()`` or
``require("resource:action", ...)``. A route that declares none stops the application
from starting (``assert_routes_guarded``), so a forgotten check is a start-up failure,
not an open endpoint. Everything here is ``async def``: a sync dependency would cost a
threadpool hop per request.

In an app whose routes are ``bastion.routing.PolicyRoute`` (``create_app``'s), the policies
are not resolved as dependencies at all: the route runs them up front through ``enforce``,
which keeps their order, counting and answers. Elsewhere FastAPI resolves them as declared.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.dependencies.models import Dependant
from fastapi.openapi.models import OAuthFlowPassword, OAuthFlows
from fastapi.security import OAuth2, SecurityScopes
from sqlalchemy.ext.asyncio import AsyncSession

from bastion.audit.context import AuditContext
from bastion.audit.events import AuditEventType, Outcome
from bastion.audit.sinks import SecurityEvent
from bastion.errors import InsufficientScope, InsufficientUserAuthentication, Unauthenticated
from bastion.layer import layer_of
from bastion.middleware.access_log import USER_ID_SCOPE_KEY
from bastion.middleware.route_template import route_template
from bastion.security.csrf import SAFE_METHODS
from bastion.security.permissions import ALL_PERMISSIONS
from bastion.security.principal import Principal
from bastion.security.ratelimits import DEFAULT_LIMIT, RateLimit
from bastion.security.tokens import INVALID_TOKEN_DETAIL, InvalidToken
from bastion.services import services_of
from bastion.storage import Database

TOKEN_URL = "/auth/token"  # noqa: S105 (a path, not a secret)
OAUTH2_SCHEME_NAME = "OAuth2PasswordBearer"
# The principal the route policy verified, for the endpoint and its dependencies.
PRINCIPAL_SCOPE_KEY = "bastion.principal"


async def _database(request: Request) -> Database:
    return services_of(request.app).database


async def _transaction(request: Request) -> AsyncIterator[AsyncSession]:
    async with services_of(request.app).database.transaction() as session:
        yield session


async def _read(request: Request) -> AsyncIterator[AsyncSession]:
    async with services_of(request.app).database.read() as session:
        yield session


async def _scan(request: Request) -> AsyncIterator[AsyncSession]:
    async with services_of(request.app).database.scan() as session:
        yield session


class BearerToken(OAuth2):
    """Resolves ``Authorization: Bearer`` (or, without it, a browser's session cookie) to a
    ``Principal``, or answers 401.

    A subclass of FastAPI's ``OAuth2`` so the OpenAPI document declares the password flow
    and Swagger UI's "Authorize" works, while staying one async dependency per request.
    """

    def __init__(self, rate_limit: RateLimit | None = DEFAULT_LIMIT) -> None:
        self.rate_limit = rate_limit
        super().__init__(
            flows=OAuthFlows(
                password=OAuthFlowPassword(
                    tokenUrl=TOKEN_URL,
                    scopes={permission: permission for permission in sorted(ALL_PERMISSIONS)},
                )
            ),
            scheme_name=OAUTH2_SCHEME_NAME,
            auto_error=False,
        )

    async def __call__(  # type: ignore[override]
        self, request: Request, security_scopes: SecurityScopes
    ) -> Principal:
        principal = await self.authenticate(request)
        await self.authorize(request, principal, security_scopes.scopes)
        return principal

    async def authenticate(self, request: Request) -> Principal:
        """The request's principal, the request counted against the limit (per user, or per
        address when the token is missing or refused: guessing tokens is limited too)."""
        try:
            principal = await self._principal(request)
        except Unauthenticated:
            await _count(request, self.rate_limit, user_id=None)
            raise
        await _count(request, self.rate_limit, user_id=principal.user_id)
        if principal.via_cookie and request.method not in SAFE_METHODS:
            sessions = layer_of(request.app).browser_sessions
            assert sessions is not None  # noqa: S101 (only they make cookie principals)
            await sessions.check_csrf(request, principal)
        return principal

    async def authorize(
        self, request: Request, principal: Principal, scopes: Sequence[str]
    ) -> None:
        """403 (audited) unless the principal's scope holds every one of ``scopes``, and,
        for a permission that needs one, the principal signed in with a second factor."""
        missing = set(scopes) - principal.scopes
        if missing:
            await audit_denial(request, principal, sorted(missing))
            raise InsufficientScope(sorted(scopes))
        if scopes and not principal.second_factor:
            stepping_up = layer_of(request.app).second_factor_for.intersection(scopes)
            if stepping_up:
                await audit_denial(
                    request, principal, sorted(stepping_up), reason="second_factor_required"
                )
                raise InsufficientUserAuthentication

    async def _principal(self, request: Request) -> Principal:
        header = request.headers.get("authorization")
        if not header:
            # A browser's session cookie, only when no token is sent: a request carrying
            # both is the token's alone, and the token's path does not look at cookies.
            sessions = layer_of(request.app).browser_sessions
            principal = None if sessions is None else await sessions.principal(request)
            if principal is None:
                raise Unauthenticated
            request.scope[USER_ID_SCOPE_KEY] = principal.user_id
            request.scope[PRINCIPAL_SCOPE_KEY] = principal
            return principal
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated(token_presented=True)
        try:
            principal = await layer_of(request.app).authenticator.authenticate(token.strip())
        except InvalidToken:
            raise Unauthenticated(INVALID_TOKEN_DETAIL, token_presented=True) from None
        request.scope[USER_ID_SCOPE_KEY] = principal.user_id
        request.scope[PRINCIPAL_SCOPE_KEY] = principal
        return principal


async def _count(request: Request, rate_limit: RateLimit | None, *, user_id: str | None) -> None:
    if rate_limit is not None:
        limiter = layer_of(request.app).rate_limiter
        await limiter.check(request.scope, rate_limit, user_id=user_id)


@cache
def _bearer_token(rate_limit: RateLimit | None) -> BearerToken:
    """One dependency object per rate limit, so FastAPI's per-request cache still applies."""
    return BearerToken(rate_limit)


bearer_token = _bearer_token(DEFAULT_LIMIT)


async def audit_denial(
    request: Request, principal: Principal, missing: list[str], *, reason: str | None = None
) -> None:
    """Every 403 is an audit event, recorded by the app's audit sink before the 403 is
    sent (bastion's service: committed to its audit log on its own)."""
    context = AuditContext.of(request)
    await layer_of(request.app).audit.record(
        SecurityEvent(
            type=AuditEventType.ACCESS_DENIED.value,
            outcome=Outcome.DENIED.value,
            actor_id=principal.user_id,
            subject_id=principal.user_id,
            client_ip=context.client_ip,
            request_id=context.request_id,
            details={
                "method": request.method,
                "route": route_template(request.scope),
                "missing": " ".join(missing),
                **({"reason": reason} if reason else {}),
            },
        )
    )


class PublicPolicy:
    """The marker of a route anyone may call; it counts the request against its limit."""

    def __init__(self, rate_limit: RateLimit | None) -> None:
        self.rate_limit = rate_limit

    async def __call__(self, request: Request) -> None:
        await _count(request, self.rate_limit, user_id=None)


@cache
def _public_policy(rate_limit: RateLimit | None) -> PublicPolicy:
    return PublicPolicy(rate_limit)


def public(*, rate_limit: RateLimit | None = DEFAULT_LIMIT) -> Any:
    """Policy: anyone may call the route, with or without a token.

    ``rate_limit`` is the route's quota per client address (``None``: not limited, for
    liveness probes that must answer whatever happens to the rate-limit store).
    """
    return Depends(_public_policy(rate_limit))


def authenticated(*, rate_limit: RateLimit | None = DEFAULT_LIMIT) -> Any:
    """Policy: any valid, unrevoked access token; counted per user."""
    return Security(_bearer_token(rate_limit))


def require(*permissions: str, rate_limit: RateLimit | None = DEFAULT_LIMIT) -> Any:
    """Policy: a valid token whose scope holds every one of ``permissions`` (else 403);
    counted per user against ``rate_limit``."""
    if not permissions:
        raise ValueError("require() needs at least one permission")
    # Whether each is a permission of the app is checked when the app starts (the
    # BastionSecurity's ``permissions``): the names are the app's own, not bastion's.
    return Security(_bearer_token(rate_limit), scopes=list(permissions))


Policy = PublicPolicy | BearerToken


@dataclass(frozen=True, slots=True)
class PolicyCheck:
    """One policy dependency of a route, with the scopes FastAPI would hand it."""

    policy: Policy
    scopes: tuple[str, ...]


def policy_checks(dependant: Dependant) -> list[PolicyCheck]:
    """The policy dependencies of ``dependant`` in the order FastAPI resolves them (depth
    first, each dependency's own dependencies before it), each (policy, scopes) once, as
    FastAPI's per-request cache calls it once."""
    found: list[PolicyCheck] = []
    seen: set[tuple[int, tuple[str, ...]]] = set()

    def visit(parent: Dependant) -> None:
        for sub in parent.dependencies:
            if isinstance(sub.call, PublicPolicy | BearerToken):
                scopes = tuple(
                    dict.fromkeys([*(sub.parent_oauth_scopes or []), *(sub.own_oauth_scopes or [])])
                )
                key = (id(sub.call), tuple(sorted(scopes)))
                if key not in seen:
                    seen.add(key)
                    found.append(PolicyCheck(sub.call, scopes))
            else:
                visit(sub)

    visit(dependant)
    return found


async def enforce(request: Request, checks: Sequence[PolicyCheck]) -> Principal | None:
    """Runs a route's policies as its dependencies would, in the same order, without
    FastAPI's per-dependency resolution: count, then token → principal → permission. The
    principal is verified once and left in the scope (``PRINCIPAL_SCOPE_KEY``)."""
    principal: Principal | None = None
    for check in checks:
        policy = check.policy
        if isinstance(policy, PublicPolicy):
            await policy(request)
            continue
        if principal is None:
            principal = await policy.authenticate(request)
        else:
            await _count(request, policy.rate_limit, user_id=principal.user_id)
        await policy.authorize(request, principal, check.scopes)
    return principal


AppDatabase = Annotated[Database, Depends(_database)]
# scope="function": the transaction commits when the route returns, before the response is
# sent, so a failed commit is reported to the client instead of a success it never got.
DbSession = Annotated[AsyncSession, Depends(_transaction, scope="function")]
# A route that only reads: never waits for (or takes) SQLite's write lock; writes fail.
DbReader = Annotated[AsyncSession, Depends(_read, scope="function")]
# A read whose cost may grow with the data (a filtered log): on SQLite, off the loop's thread.
DbScanner = Annotated[AsyncSession, Depends(_scan, scope="function")]
CurrentPrincipal = Annotated[Principal, authenticated()]
