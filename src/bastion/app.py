"""``create_app`` is the one place where middleware order and routers are wired.

Request path, outermost first: proxy headers → request id → access log → secure headers →
server errors → trusted host → HTTPS redirect → CORS → body limit → router. The client address
is settled first so every later step sees the same one. Secure headers sit outside the
server-error catcher so even a 500 has them; the access log sits outside both so it records
the final status. The Host is checked before the redirect builds a URL from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import replace
from typing import Any

from fastapi import APIRouter, FastAPI
from starlette.middleware import Middleware

from bastion import __version__
from bastion.admin.router import router as admin_router
from bastion.admin.service import AdminService
from bastion.apidocs.router import mount_docs
from bastion.audit.sinks import DatabaseAuditSink
from bastion.authentication import Authenticator
from bastion.clock import utc_now
from bastion.config import Settings
from bastion.console.router import mount_console
from bastion.dependencies import TOKEN_URL
from bastion.health.router import router as health_router
from bastion.identity.accounts import Accounts
from bastion.identity.cookie_sessions import CookieSessions
from bastion.identity.email_flows import EmailFlows
from bastion.identity.email_router import router as email_router
from bastion.identity.grants import Grants
from bastion.identity.issuance import TokenIssuer
from bastion.identity.lockout import Lockout
from bastion.identity.mfa import MfaEnrolment
from bastion.identity.mfa_router import router as mfa_router
from bastion.identity.revocation import Revocation
from bastion.identity.router import router as identity_router
from bastion.identity.second_factor import SecondFactorCheck
from bastion.identity.sessions import Sessions
from bastion.logs import configure_logging, get_logger
from bastion.mail.sender import MailSender
from bastion.mail.transport import transport_for
from bastion.middleware import (
    CORSMiddleware,
    HTTPSRedirectMiddleware,
    ProxyHeadersMiddleware,
    TrustedHostMiddleware,
)
from bastion.notes.router import router as notes_router
from bastion.ratelimiting import RateLimiter
from bastion.security.client_ip import TrustedProxies
from bastion.security.cursors import CursorCodec
from bastion.security.passwords import PasswordHasher
from bastion.security.permissions import ALL_PERMISSIONS, USERS_WRITE
from bastion.security.tokens import TokenVerifier, VerifiedTokenCache
from bastion.services import STATE_KEY, Services, services_of
from bastion.storage import Database, StorageUnavailable
from bastion.storage.encryption_key import load_encryption_keys
from bastion.storage.ratelimits import (
    MemoryRateLimitStore,
    RateLimitStore,
    RedisRateLimitStore,
)
from bastion.storage.redis_client import redis_client_from_url
from bastion.storage.revocations import (
    MemoryRevocationStore,
    RedisRevocationStore,
    RevocationStore,
)
from bastion.storage.service_secrets import service_secret
from bastion.storage.signing_keys import KeyRingHolder, ensure_signing_key
from bastion.toolkit._security import BastionSecurity

log = get_logger("bastion.app")
CURSOR_SECRET_NAME = "cursor"  # noqa: S105 (the row name, not the secret)
CSRF_SECRET_NAME = "csrf"  # noqa: S105 (the row name, not the secret)


def add_routes(app: FastAPI, router: APIRouter) -> None:
    """Adds the router's routes to the app itself rather than including the router.

    The routers carry their prefixes and dependencies on every route already. Included
    routers are matched through FastAPI's per-include route contexts, which cost bastion's
    route table about 36 us a request (wrk, one uvicorn worker: 7.2k against 9.7k req/s for
    the same routes added flat), more than all of bastion's middleware.
    """
    app.router.routes.extend(router.routes)


def _edge_middleware(settings: Settings) -> tuple[list[Middleware], list[Middleware]]:
    """The service's own middleware around the toolkit's core (the proxy headers, outermost)
    and inside it (host allow-list, HTTPS redirect, CORS). The optional steps are left out
    entirely when not configured, so they cost nothing per request."""
    edge: list[Middleware] = []
    if settings.trusted_proxies:
        edge.append(
            Middleware(
                ProxyHeadersMiddleware,
                trusted=TrustedProxies(settings.trusted_proxies),
                header=settings.proxy_header,
            )
        )
    checks: list[Middleware] = []
    if "*" not in settings.allowed_hosts:
        checks.append(Middleware(TrustedHostMiddleware, allowed_hosts=settings.allowed_hosts))
    if settings.https_redirect:
        checks.append(Middleware(HTTPSRedirectMiddleware))
    if settings.cors_origins:
        checks.append(Middleware(CORSMiddleware, origins=settings.cors_origins))
    return edge, checks


def service_security(services: Services) -> BastionSecurity:
    """The service's security layer: the toolkit's ``BastionSecurity`` with bastion's own
    authenticator, permissions, rate limiter (and its login quotas), hash-chained audit
    log, browser sessions and edge middleware. One code path with any toolkit app."""
    settings = services.settings
    edge, checks = _edge_middleware(settings)
    return BastionSecurity(
        authenticator=services.authenticator,
        permissions=ALL_PERMISSIONS,
        token_url=TOKEN_URL,
        # BASTION_ADMIN_MFA=required: changing users needs a second factor (RFC 9470).
        second_factor_for={USERS_WRITE} if settings.admin_mfa_required else (),
        max_body_bytes=settings.max_body_bytes,
        rate_limiter=services.rate_limiter,
        audit=DatabaseAuditSink(services.database),
        browser_sessions=services.cookie_sessions,
        outer_middleware=edge,
        inner_middleware=checks,
    )


def shared_stores(settings: Settings) -> tuple[RevocationStore, RateLimitStore]:
    """Revocations and rate-limit counters: both in Redis (one client, one connection
    pool) when ``BASTION_REDIS_URL`` is set, otherwise both in this process."""
    if settings.redis_url is None:
        return MemoryRevocationStore(), MemoryRateLimitStore()
    client = redis_client_from_url(settings.redis_url.get_secret_value())
    return RedisRevocationStore(client), RedisRateLimitStore(client)


def build_services(settings: Settings) -> Services:
    """Everything the routes and policies use, wired once. The pagination cursors' secret
    is in the database, so ``start_services`` adds it."""
    database = Database.from_settings(settings)
    revocations, counters = shared_stores(settings)
    keys = KeyRingHolder(database, settings)
    verifier = TokenVerifier(
        issuer=settings.issuer, audience=settings.audience, cache=VerifiedTokenCache()
    )
    hasher = PasswordHasher(
        memory_kib=settings.password_hash_memory_kib,
        time_cost=settings.password_hash_time_cost,
        parallelism=settings.password_hash_parallelism,
    )
    revocation = Revocation(
        settings=settings, database=database, keys=keys, verifier=verifier, store=revocations
    )
    revocations.restore_with(revocation.restore_quietly)
    lockout = Lockout(settings=settings)
    encryption = load_encryption_keys(settings)
    factors = SecondFactorCheck(keys=encryption, lockout=lockout)
    cookie_sessions = CookieSessions(
        settings=settings, database=database, revocations=revocations
    )
    mail = MailSender(database=database, keys=encryption, transport=transport_for(settings))
    return Services(
        settings=settings,
        database=database,
        keys=keys,
        authenticator=Authenticator(keys=keys, verifier=verifier, revocations=revocations),
        rate_limiter=RateLimiter.from_settings(settings, counters),
        accounts=Accounts(
            database=database, hasher=hasher, lockout=lockout, revocation=revocation
        ),
        grants=Grants(
            database=database,
            hasher=hasher,
            issuer=TokenIssuer(settings=settings, keys=keys),
            lockout=lockout,
            revocation=revocation,
            cookies=cookie_sessions,
            factors=factors,
        ),
        revocation=revocation,
        admin=AdminService(revocation=revocation),
        sessions=Sessions(revocation=revocation),
        cookie_sessions=cookie_sessions,
        mfa=MfaEnrolment(
            settings=settings,
            database=database,
            hasher=hasher,
            lockout=lockout,
            revocation=revocation,
            factors=factors,
            keys=encryption,
        ),
        mail=mail,
        encryption=encryption,
        email_flows=EmailFlows(
            settings=settings,
            database=database,
            hasher=hasher,
            revocation=revocation,
            encryption=encryption,
            mail=mail,
        ),
    )


def install_services(app: FastAPI, services: Services) -> None:
    """Makes ``services`` what this app's routes and policies use."""
    setattr(app.state, STATE_KEY, services)


# While the database does not answer at start, the start-up work is retried this often.
START_RETRY_SECONDS = (0.5, 1.0, 2.0, 5.0)
_deferred_starts: dict[int, asyncio.Task[None]] = {}


async def start_services(app: FastAPI) -> None:
    """First start generates the signing key; every start re-applies recent revocations
    (the in-process store begins empty) and loads the cursor secret.

    When the database does not answer, the service starts anyway (``serve`` must not exit
    on a database that is restarting) and finishes this work in the background once it
    answers. Until then no token is issued or accepted (the key ring answers 503: the
    revocations are not restored yet) and readiness says 503."""
    services = services_of(app)
    try:
        await _start_work(app)
    except StorageUnavailable as unavailable:
        outage = unavailable.outage
        log.warning(
            "start_deferred_until_the_database_answers",
            dependency=outage.dependency, error=outage.error, code=outage.code,
        )
        services.keys.available = False
        task = asyncio.create_task(_start_when_the_database_answers(app))
        _deferred_starts[id(services.keys)] = task
        task.add_done_callback(lambda _: _deferred_starts.pop(id(services.keys), None))
    # Also while the database is away: the sender waits out outages on its own.
    await services.mail.start()


async def _start_work(app: FastAPI) -> None:
    services = services_of(app)
    database = services.database
    async with database.transaction() as session:
        await ensure_signing_key(session, services.settings, now=utc_now())
    try:
        await services.revocation.restore()
    except StorageUnavailable as unavailable:
        if unavailable.outage.dependency == "database":
            raise
        # Redis is down: start anyway (readiness says 503, checks fail closed). The
        # restore marker is unset, so the first check after Redis returns restores.
        log.warning("revocation_store_unavailable_at_start")
    await services.keys.reload()
    async with database.transaction() as session:
        secret = await service_secret(session, CURSOR_SECRET_NAME, now=utc_now())
        csrf_secret = await service_secret(session, CSRF_SECRET_NAME, now=utc_now())
    services.cookie_sessions.start(csrf_secret)
    install_services(app, replace(services, cursor_codec=CursorCodec(secret)))


async def _start_when_the_database_answers(app: FastAPI) -> None:
    for attempt in itertools.count():
        await asyncio.sleep(START_RETRY_SECONDS[min(attempt, len(START_RETRY_SECONDS) - 1)])
        try:
            await _start_work(app)
        except StorageUnavailable:
            continue
        services_of(app).keys.available = True
        log.info("start_completed")
        return


async def stop_services(services: Services) -> None:
    await services.mail.stop()
    deferred = _deferred_starts.pop(id(services.keys), None)
    if deferred is not None:
        deferred.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await deferred
    # One Redis client serves both stores: closing it twice is harmless.
    await services.rate_limiter.close()
    await services.authenticator.revocations.close()
    await services.database.dispose()


def create_app(settings: Settings | None = None) -> FastAPI:
    services = build_services(settings or Settings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The security layer checked every route before this runs (routes added after
        # create_app count too): guarded, known permissions, resolvable quotas.
        await start_services(app)
        yield
        await stop_services(services)

    app = FastAPI(
        title="bastion",
        version=__version__,
        description="A secure-by-default API: accounts, tokens, access control, audit.",
        docs_url=None,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
        # Served by bastion.apidocs as a metered public route instead.
        openapi_url=None,
        # A path with a trailing slash is not a path of the API: 404, like any other. The
        # redirect was answered before any policy, telling anyone which paths exist.
        redirect_slashes=False,
        lifespan=lifespan,
    )
    # Middleware, problem handlers, PolicyRoute for routes declared later (a toolkit
    # user's, a test's), the OpenAPI completion and the start-up check of every route.
    service_security(services).install(app)
    install_services(app, services)
    for router in (
        health_router, identity_router, mfa_router, email_router, notes_router, admin_router
    ):
        add_routes(app, router)
    mount_docs(app)
    mount_console(app)
    return app


def app_from_environment() -> FastAPI:
    """The uvicorn factory: each worker process reads the environment and sets up logging."""
    settings = Settings()
    configure_logging(settings.log_level)
    app = create_app(settings)
    app.router.lifespan_context = _freezing_after_start(app.router.lifespan_context)
    return app


_Lifespan = Callable[[Any], AbstractAsyncContextManager[Any]]


def _freezing_after_start(lifespan: _Lifespan) -> _Lifespan:
    """What a served worker builds at start (routes, services, compiled statements) lives
    as long as the process: ``gc.freeze()`` spares every full collection from walking it
    again (one took 138 ms under the bench's mixed load). Only for the served process: an
    app that is built and dropped, as in tests, would keep its objects for good."""

    @asynccontextmanager
    async def started_then_frozen(app: Any) -> AsyncIterator[Any]:
        async with lifespan(app) as state:
            gc.freeze()
            yield state

    return started_then_frozen
