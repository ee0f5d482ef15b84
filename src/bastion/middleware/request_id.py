"""Gives every request an id that the client, the logs and the audit trail share."""

from __future__ import annotations

import os
import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID_SCOPE_KEY = "bastion.request_id"
REQUEST_ID_HEADER = b"x-request-id"
# A client-chosen id ends up in our logs: accept only short, inert ones so it cannot
# inject log lines, markup or huge values.
_SANE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._-]{1,64}")


def request_id_of(scope: Scope) -> str | None:
    request_id = scope.get(REQUEST_ID_SCOPE_KEY)
    return request_id if isinstance(request_id, str) else None


def _incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == REQUEST_ID_HEADER:
            return value.decode("ascii") if _SANE_REQUEST_ID.fullmatch(value) else None
    return None


class RequestIdMiddleware:
    """Echoes a sane ``X-Request-ID`` or generates one, and sends it on every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        # os.urandom directly: secrets.token_hex's layers cost more than the random bytes.
        request_id = _incoming_request_id(scope) or os.urandom(16).hex()
        scope[REQUEST_ID_SCOPE_KEY] = request_id
        header = (REQUEST_ID_HEADER, request_id.encode("ascii"))

        async def send_with_request_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", []) if h[0] != REQUEST_ID_HEADER]
                message["headers"] = [*headers, header]
            await send(message)

        await self.app(scope, receive, send_with_request_id)
