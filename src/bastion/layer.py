"""The security layer an app has installed: what its route policies use on each request.

``BastionSecurity.install`` (``bastion.toolkit``) puts it on ``app.state``; the policies
(``bastion.dependencies``) read it here. It is its own small module so that the policies
depend on this shape, not on the toolkit class that builds it, nor on bastion's service.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from fastapi import FastAPI

    from bastion.audit.sinks import AuditSink
    from bastion.identity.cookie_sessions import CookieSessions
    from bastion.ratelimiting import RateLimiter
    from bastion.security.principal import Principal

SECURITY_STATE_KEY = "bastion_security"
DEFAULT_REALM = "bastion"


class TokenAuthenticator(Protocol):
    """Turns a bearer token into a ``Principal``; raises ``InvalidToken`` to refuse it (a
    401), ``StorageUnavailable`` when it cannot decide (a 503)."""

    async def authenticate(self, token: str) -> Principal: ...


class SecurityLayer(Protocol):
    @property
    def authenticator(self) -> TokenAuthenticator: ...
    @property
    def rate_limiter(self) -> RateLimiter: ...
    @property
    def audit(self) -> AuditSink: ...
    @property
    def browser_sessions(self) -> CookieSessions | None: ...
    @property
    def realm(self) -> str: ...
    @property
    def second_factor_for(self) -> frozenset[str]: ...


class SecurityMisconfigured(ValueError):
    """What an app's security layer (or its authenticator) was given cannot work; the
    message says what to fix. Raised at construction, never per request."""


class SecurityNotInstalled(RuntimeError):
    def __init__(self) -> None:
        super().__init__(
            "no bastion security layer on this app: build one with "
            "bastion.toolkit.BastionSecurity(...) and pass its lifespan to FastAPI "
            "(FastAPI(lifespan=security.lifespan)) or call security.install(app)"
        )


def layer_of(app: Any) -> SecurityLayer:
    layer: SecurityLayer | None = getattr(app.state, SECURITY_STATE_KEY, None)
    if layer is None:
        raise SecurityNotInstalled
    return layer


def realm_of(app: FastAPI) -> str:
    """The realm of the app's challenges; bastion's own when nothing is installed."""
    layer: SecurityLayer | None = getattr(app.state, SECURITY_STATE_KEY, None)
    return DEFAULT_REALM if layer is None else layer.realm
