"""Whether a response has started: after its start line, an error can only be re-raised."""

from __future__ import annotations

from starlette.types import Message, Send


class ResponseStartTracker:
    """Wraps ``send`` and remembers whether ``http.response.start`` went out, so a middleware
    that answers an error itself knows whether it still may."""

    def __init__(self, send: Send) -> None:
        self.send = send
        self.started = False

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
        await self.send(message)
