"""Target 5, in process: the worker's resident memory after 100,000 distinct client
addresses were counted by the rate limiter and 100,000 distinct valid tokens verified.

Drives the ASGI app directly (no sockets): each step sends one request from a new client
address to a rate-limited public route and one with a new signed token (a new user, so a
new per-user quota too) to a ``require()``-guarded route. Tokens are signed one at a time,
so the bench holds none of them. Prints one JSON line: RSS before and after, in MB.
Run: ``.venv/bin/python -m bench.memory [count]``.
"""

from __future__ import annotations

import asyncio
import gc
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI

from bastion.app import create_app
from bastion.config import Settings
from bastion.dependencies import public, require
from bastion.security.principal import Principal
from bastion.security.tokens import access_token_claims
from bastion.storage.migrate import upgrade_to_head
from bench.asgi import get_scope, receive

COUNT = 100_000


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def _app(data_dir: Path) -> FastAPI:
    # The default quota (600/minute) stays: every request is counted and none refused.
    app = create_app(Settings(_env_file=None, data_dir=data_dir))

    @app.get("/ping", dependencies=[public()])
    async def ping() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/private")
    async def private(principal: Annotated[Principal, require("notes:read")]) -> dict[str, str]:
        return {"user": principal.user_id}

    return app


async def _request(app: Any, path: str, client: str, token: str | None = None) -> int:
    status = 0

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(get_scope(path, client=client, token=token), receive, send)
    return status


def _address(number: int) -> str:
    return f"10.{number >> 16 & 255}.{number >> 8 & 255}.{number & 255}"


async def measure(count: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as data_dir:
        app = _app(Path(data_dir))
        await upgrade_to_head(app.state.bastion.database.engine)
        async with app.router.lifespan_context(app):
            settings = app.state.bastion.settings
            ring = await app.state.bastion.keys.ring()

            def token() -> str:
                claims = access_token_claims(
                    issuer=settings.issuer, audience=settings.audience,
                    subject=str(uuid.uuid4()), session_id=str(uuid.uuid4()),
                    scopes=["notes:read"], lifetime=900, now=int(time.time()),
                )
                return str(ring.sign(claims))

            for _ in range(1000):  # warm-up: imports, caches, first allocations
                await _request(app, "/ping", "192.168.0.1")
                await _request(app, "/private", "192.168.0.1", token())
            gc.collect()
            before = rss_mb()
            refused = 0
            for number in range(count):
                client = _address(number)
                ok = await _request(app, "/ping", client) == 200
                ok &= await _request(app, "/private", client, token()) == 200
                refused += not ok
            gc.collect()
            after = rss_mb()
    return {"count": count, "before_mb": before, "after_mb": after,
            "growth_mb": after - before, "refused": refused}


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else COUNT
    sys.stdout.write(json.dumps(asyncio.run(measure(count))) + "\n")
