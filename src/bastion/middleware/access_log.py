"""One JSON line per request, written after the response is complete.

The route template (``/notes/{note_id}``) is logged, never the query string, so ids stay
groupable and secrets passed in URLs never reach the log. Where no route template is known
(no route matched, or a mount such as the docs assets) the path is logged instead, cut short
since it is attacker-chosen, so probes remain visible.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bastion.logs import write_access_line
from bastion.middleware.request_id import request_id_of
from bastion.middleware.route_template import route_template
from bastion.security.client_ip import client_address

USER_ID_SCOPE_KEY = "bastion.user_id"
MAX_LOGGED_PATH = 200

AccessSink = Callable[[dict[str, Any]], None]


class AccessLogMiddleware:
    """``sink`` receives each line's fields; by default they go to stdout as JSON."""

    def __init__(self, app: ASGIApp, *, sink: AccessSink = write_access_line) -> None:
        self.app = app
        self.sink = sink

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        started = time.perf_counter()
        status = 500

        async def send_recording_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_recording_status)
        finally:
            route = route_template(scope)
            self.sink(
                {
                    "method": scope["method"],
                    "route": route,
                    "path": None if route else scope["path"][:MAX_LOGGED_PATH],
                    "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 3),
                    "client_ip": client_address(scope),
                    "request_id": request_id_of(scope),
                    "user_id": scope.get(USER_ID_SCOPE_KEY),
                }
            )
