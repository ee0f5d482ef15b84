"""Turns an unhandled exception into a generic 500 problem that keeps the request id.

Starlette's own ServerErrorMiddleware sits outside every user middleware, so its 500 would
miss the request id and the security headers; this one sits inside them. The exception is
logged with the request id; the client sees only a fixed sentence.

The traceback is logged as text made here (frames and source lines, never local variables)
with every credential masked, not as the exception object: whatever renderer the host app
configured (structlog's default prints each frame's locals, a bearer token among them), it
receives a string that holds no secret.
"""

from __future__ import annotations

import traceback

from starlette.types import ASGIApp, Receive, Scope, Send

from bastion.logs import get_logger, redact
from bastion.middleware.request_id import request_id_of
from bastion.middleware.response_start import ResponseStartTracker
from bastion.problems import send_problem

log = get_logger("bastion.errors")

INTERNAL_DETAIL = "The server could not handle this request. Quote the request id when reporting."


class ServerErrorMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        tracked = ResponseStartTracker(send)
        try:
            await self.app(scope, receive, tracked)
        except Exception as error:
            request_id = request_id_of(scope)
            log.error(  # noqa: TRY400 (the traceback is logged as redacted text instead)
                "unhandled_exception",
                request_id=request_id,
                path=redact(scope["path"]),
                error=type(error).__name__,
                traceback=redact("".join(traceback.format_exception(error))),
            )
            if not tracked.started:
                await send_problem(send, 500, INTERNAL_DETAIL, request_id)
