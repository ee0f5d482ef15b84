"""Refuses request bodies over a size limit without ever holding them whole.

A declared ``Content-Length`` over the limit is answered 413 before the application runs. A
chunked or under-declared body is counted while the application reads it; the read that
crosses the limit raises ``RequestBodyTooLarge``. It is an ``HTTPException`` so FastAPI's body
parsing passes it through untouched to the problem handlers (any other exception there would
become a 400); anything that does not translate it is answered here.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bastion.middleware.request_id import request_id_of
from bastion.middleware.response_start import ResponseStartTracker
from bastion.problems import send_problem

TOO_LARGE_DETAIL = "The request body is larger than this server accepts."
# The per-route limit of bodies that carry a few short fields (login and token forms,
# registration, password change, shares, role changes), under the global ceiling
# BASTION_MAX_BODY_BYTES. A route declares its own with FastAPI's ``max_body_size``.
SMALL_BODY_BYTES = 16 * 1024


class RequestBodyTooLarge(HTTPException):
    def __init__(self) -> None:
        super().__init__(status_code=413, detail=TOO_LARGE_DETAIL)


_NO_BODY = -1


def _declared_length(scope: Scope) -> int | None:
    """The declared ``Content-Length``; ``_NO_BODY`` when the request can carry none (no
    length, or 0, and no ``Transfer-Encoding``); None when it may carry one of unknown size."""
    length: int | None = None
    chunked = False
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                return None
        elif name == b"transfer-encoding":
            chunked = True
    if chunked:
        return None
    if not length:
        return _NO_BODY
    return length


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        declared = _declared_length(scope)
        if declared == _NO_BODY:
            # Nothing to count (most GETs): no wrappers on the hot path.
            await self.app(scope, receive, send)
            return
        if declared is not None and declared > self.max_body_bytes:
            await send_problem(send, 413, TOO_LARGE_DETAIL, request_id_of(scope))
            return

        received = 0
        tracked = ResponseStartTracker(send)

        async def receive_within_limit() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise RequestBodyTooLarge
            return message

        try:
            await self.app(scope, receive_within_limit, tracked)
        except RequestBodyTooLarge:
            if tracked.started:
                raise
            await send_problem(send, 413, TOO_LARGE_DETAIL, request_id_of(scope))
