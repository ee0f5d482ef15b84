"""Sends plain-HTTP requests to the same URL over HTTPS (``BASTION_HTTPS_REDIRECT``).

307 keeps the method and body, so a client that POSTs to ``http://`` is told to repeat the
same POST over TLS rather than being turned into a GET. The redirect is temporary on purpose:
a cached permanent one would outlive a configuration change.

Behind a TLS-terminating proxy the scheme is the one the trusted proxy reports (see
``ProxyHeadersMiddleware``), so only requests that really arrived over plain HTTP are sent
away. The target host is the request's ``Host``, which is why this runs after the trusted-host
check: the redirect can only point at a host the service answers to. The port is dropped
(the default HTTPS port): the port a plain request came to never also speaks TLS. Unlike
Starlette's ``HTTPSRedirectMiddleware``, a request whose ``Host`` is unusable gets a 400
problem, not plain text, and the path is sent back exactly as the client wrote it.
"""

from __future__ import annotations

import re
from urllib.parse import quote, quote_from_bytes

from starlette.types import ASGIApp, Receive, Scope, Send

from bastion.middleware.request_id import request_id_of
from bastion.middleware.trusted_host import INVALID_HOST_DETAIL, WEBSOCKET_POLICY_VIOLATION
from bastion.problems import send_problem

# A name, an IPv4 address or a bracketed IPv6 literal, and an optional port: nothing that
# could end a header line or smuggle a path into the Location.
_HOST = re.compile(rb"(?P<host>[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{0,5})?")
# RFC 3986 path and query characters, plus "%" so existing escapes are kept as sent.
_PATH_SAFE = "/:@!$&'()*+,;=-._~%"
_QUERY_SAFE = _PATH_SAFE + "?"


class HTTPSRedirectMiddleware:
    """307 to ``https://`` for plain HTTP; plain WebSocket handshakes are refused."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "websocket" and scope.get("scheme") == "ws":
            await send({"type": "websocket.close", "code": WEBSOCKET_POLICY_VIOLATION})
            return
        if kind != "http" or scope.get("scheme") != "http":
            await self.app(scope, receive, send)
            return

        location = _https_location(scope)
        if location is None:
            await send_problem(send, 400, INVALID_HOST_DETAIL, request_id_of(scope))
            return
        await send(
            {
                "type": "http.response.start",
                "status": 307,
                "headers": [(b"location", location), (b"content-length", b"0")],
            }
        )
        await send({"type": "http.response.body", "body": b""})


def _https_location(scope: Scope) -> bytes | None:
    hosts = [value for name, value in scope["headers"] if name == b"host"]
    match = _HOST.fullmatch(hosts[0]) if len(hosts) == 1 else None
    if match is None:
        return None
    raw_path: bytes | None = scope.get("raw_path")
    path = (
        quote_from_bytes(raw_path, safe=_PATH_SAFE)
        if raw_path
        else quote(scope["path"], safe=_PATH_SAFE)
    )
    location = "https://" + match.group("host").decode("ascii") + path
    query: bytes = scope.get("query_string", b"")
    if query:
        location += "?" + quote_from_bytes(query, safe=_QUERY_SAFE)
    return location.encode("ascii")
