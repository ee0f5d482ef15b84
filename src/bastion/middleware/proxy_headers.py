"""Puts the client's real address and scheme into the ASGI scope, from trusted proxies only.

This is the one place bastion believes forwarded headers (uvicorn's own ``proxy_headers`` is
off under ``bastion serve``), so the rate limiter, the access log, the audit log, HSTS and the
HTTPS redirect all see the same client. It sits outermost so every later step does.

When the socket peer is a trusted proxy, ``scope["client"]`` becomes ``(client, 0)`` (the
client's port is not known) and ``scope["scheme"]`` the scheme the proxy reports, if any. When
it is not, the scope is left alone: the peer is the client and its headers are ignored.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from bastion.security.client_ip import ClientResolver, ProxyHeader, TrustedProxies

_WEBSOCKET_SCHEMES = {"http": "ws", "https": "wss"}


class ProxyHeadersMiddleware:
    """Rewrites the client address and scheme of HTTP and WebSocket requests from a trusted
    proxy's ``X-Forwarded-For``/``X-Forwarded-Proto`` or ``Forwarded`` (``header``)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        trusted: TrustedProxies | Iterable[str],
        header: ProxyHeader = "x-forwarded-for",
    ) -> None:
        self.app = app
        proxies = trusted if isinstance(trusted, TrustedProxies) else TrustedProxies(trusted)
        self.resolver = ClientResolver(proxies, header)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http" or kind == "websocket":
            peer = scope.get("client")
            found = self.resolver.resolve(peer[0] if peer else None, scope["headers"])
            if found is not None:
                scope["client"] = (found.address, 0)
                if found.scheme is not None:
                    scope["scheme"] = (
                        found.scheme if kind == "http" else _WEBSOCKET_SCHEMES[found.scheme]
                    )
        await self.app(scope, receive, send)
