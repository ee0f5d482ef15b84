"""The security headers of CONTRACT.md on every HTTP response.

API responses get a CSP that allows nothing; the interactive docs and the console get the
narrowest policy that lets each run (own scripts and styles, no inline script, no other
host). Header lists are encoded once at start; per request only the choice of list is made.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.types import ASGIApp, Message, Receive, Scope, Send

API_CSP = "default-src 'none'; frame-ancestors 'none'"
DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
# The console (/app): its own scripts, styles and API only; images may be data: URIs (the
# MFA QR code); no inline code, no plugins, no framing. Its forms are sent by its script
# (fetch), never by the browser, so none may submit natively. Trusted Types: no string
# reaches an HTML or script sink except through the one policy that hands a note's HTML to
# DOMParser (an inert document the console copies an allow-list from).
CONSOLE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'; "
    "require-trusted-types-for 'script'; trusted-types bastion-note"
)
PERMISSIONS_POLICY = ", ".join(
    f"{feature}=()"
    for feature in (
        "accelerometer",
        "autoplay",
        "camera",
        "display-capture",
        "encrypted-media",
        "fullscreen",
        "geolocation",
        "gyroscope",
        "hid",
        "magnetometer",
        "microphone",
        "midi",
        "payment",
        "picture-in-picture",
        "publickey-credentials-get",
        "screen-wake-lock",
        "serial",
        "sync-xhr",
        "usb",
        "xr-spatial-tracking",
    )
)
HSTS = "max-age=63072000; includeSubDomains"
# Headers that inner layers (the rate limiter) ask to add to whatever response is sent in the
# end, errors included: a list of (name, value) byte pairs in the ASGI scope.
EXTRA_HEADERS_SCOPE_KEY = "bastion.response_headers"

Headers = list[tuple[bytes, bytes]]


def _encode(pairs: Sequence[tuple[str, str]]) -> Headers:
    return [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in pairs]


def _common_headers(csp: str) -> Headers:
    return _encode(
        [
            ("X-Content-Type-Options", "nosniff"),
            ("X-Frame-Options", "DENY"),
            ("Content-Security-Policy", csp),
            ("Referrer-Policy", "no-referrer"),
            ("Cross-Origin-Opener-Policy", "same-origin"),
            ("Cross-Origin-Resource-Policy", "same-origin"),
            ("Permissions-Policy", PERMISSIONS_POLICY),
        ]
    )


# What every API answer carries; also sent by the server layer's own answers (431, 400
# for an unparsable request), which never reach this middleware.
API_HEADERS = _common_headers(API_CSP)
_REPLACED = frozenset(name for name, _ in API_HEADERS) | {b"server"}
_NO_STORE = (b"cache-control", b"no-store")
_HSTS = (b"strict-transport-security", HSTS.encode())


class SecureHeadersMiddleware:
    """Adds the security headers; ``no_store_prefixes`` responses are never cached."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        docs_prefixes: Sequence[str] = ("/docs",),
        console_prefixes: Sequence[str] = ("/app",),
        no_store_prefixes: Sequence[str] = ("/auth",),
    ) -> None:
        self.app = app
        self.api_headers = API_HEADERS
        self.docs_headers = _common_headers(DOCS_CSP)
        self.console_headers = _common_headers(CONSOLE_CSP)
        self.https_api_headers = [*self.api_headers, _HSTS]
        self.https_docs_headers = [*self.docs_headers, _HSTS]
        self.https_console_headers = [*self.console_headers, _HSTS]
        self.docs_prefixes = _Prefixes(docs_prefixes)
        self.console_prefixes = _Prefixes(console_prefixes)
        self.no_store_prefixes = _Prefixes(no_store_prefixes)

    def _headers_for(self, scope: Scope) -> Headers:
        path = scope["path"]
        https = scope.get("scheme") == "https"
        if self.docs_prefixes.holds(path):
            return self.https_docs_headers if https else self.docs_headers
        if self.console_prefixes.holds(path):
            return self.https_console_headers if https else self.console_headers
        return self.https_api_headers if https else self.api_headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        security_headers = self._headers_for(scope)
        no_store = self.no_store_prefixes.holds(scope["path"])

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", []) if h[0] not in _REPLACED]
                if no_store:
                    headers = [h for h in headers if h[0] != b"cache-control"]
                    headers.append(_NO_STORE)
                headers.extend(security_headers)
                extra = scope.get(EXTRA_HEADERS_SCOPE_KEY)
                if extra:
                    headers.extend(extra)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


class _Prefixes:
    """Paths equal to a prefix or below it (``/auth``, ``/auth/token``; not ``/authx``)."""

    def __init__(self, prefixes: Sequence[str]) -> None:
        self.exact = frozenset(prefixes)
        self.below = tuple(prefix + "/" for prefix in prefixes)

    def holds(self, path: str) -> bool:
        return path in self.exact or path.startswith(self.below)
