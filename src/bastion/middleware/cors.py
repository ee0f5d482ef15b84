"""CORS for the configured browser origins only (``BASTION_CORS_ORIGINS``).

Starlette's ``CORSMiddleware`` does the work (it is pure ASGI and precomputes its headers);
this subclass fixes bastion's policy and makes a refused preflight a 400 problem details body
with the request id, like every other error, instead of Starlette's plain text. The refusal
keeps only Starlette's ``Vary`` (so caches keep refusals and grants apart) and none of the
``Access-Control-Allow-*`` headers: a refused preflight grants nothing.

Policy: credentials (cookies, ``Authorization``) are allowed for listed origins, never with
``*``, where a browser would refuse them anyway and where they would hand every site the
user's session. ``*`` is a ``bastion check`` finding of its own. Preflights are cached for
10 minutes. Responses to an origin not on the list get no CORS headers at all (Starlette
would still add the credentials and expose headers), so the browser keeps the response from
the calling page.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware import cors
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bastion.middleware.request_id import request_id_of
from bastion.problems import send_problem

ALLOW_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
ALLOW_HEADERS = ("Authorization", "Content-Type", "X-Request-ID", "X-CSRF-Token")
EXPOSE_HEADERS = (
    "X-Request-ID",
    "RateLimit",
    "RateLimit-Policy",
    "Retry-After",
    "WWW-Authenticate",
)
PREFLIGHT_MAX_AGE = 600
REFUSED_PREFLIGHT_DETAIL = (
    "This cross-origin request is not allowed: the origin, method or headers are not permitted."
)


class CORSMiddleware(cors.CORSMiddleware):
    """Starlette's CORS with bastion's fixed policy for ``origins`` (``*`` allows any origin,
    without credentials)."""

    def __init__(self, app: ASGIApp, *, origins: Sequence[str]) -> None:
        allow_any = "*" in origins
        super().__init__(
            app,
            allow_origins=frozenset({"*"} if allow_any else origins),
            allow_methods=ALLOW_METHODS,
            allow_headers=ALLOW_HEADERS,
            allow_credentials=not allow_any,
            expose_headers=EXPOSE_HEADERS,
            max_age=PREFLIGHT_MAX_AGE,
        )
        self.refusal_headers = [(b"vary", self.preflight_headers["Vary"].encode("latin-1"))]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        headers = Headers(scope=scope)
        if (
            scope["method"] == "OPTIONS"
            and "origin" in headers
            and "access-control-request-method" in headers
        ):
            response = self.preflight_response(request_headers=headers)
            if response.status_code == 200:
                await response(scope, receive, send)
            else:
                await send_problem(
                    send,
                    400,
                    REFUSED_PREFLIGHT_DETAIL,
                    request_id_of(scope),
                    headers=self.refusal_headers,
                )
            return

        await self.simple_response(scope, receive, send, request_headers=headers)

    async def send(self, message: Message, send: Send, request_headers: Headers) -> None:
        """Starlette adds ``Access-Control-Allow-Credentials`` and ``-Expose-Headers`` to the
        response for any ``Origin``; a refused one gets only ``Vary: Origin`` here."""
        if message["type"] == "http.response.start":
            origin = request_headers.get("origin")
            if origin is not None and not self.is_allowed_origin(origin):
                MutableHeaders(scope=message).add_vary_header("Origin")
                await send(message)
                return
        await super().send(message, send, request_headers)
