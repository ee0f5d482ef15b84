"""Turns an unhandled exception into a generic 500 problem that keeps the request id.

Starlette's own ServerErrorMiddleware sits outside every user middleware, so its 500 would
miss the request id and the security headers; this one sits inside them. The exception is
logged with the request id; the client sees only a fixed sentence.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from bastion.logs import get_logger
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
        except Exception:
            request_id = request_id_of(scope)
            log.exception("unhandled_exception", request_id=request_id, path=scope["path"])
            if not tracked.started:
                await send_problem(send, 500, INTERNAL_DETAIL, request_id)
