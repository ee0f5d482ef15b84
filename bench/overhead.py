"""CPU cost of bastion's middleware stack over a bare FastAPI route, measured in-process.

Drives the ASGI apps directly (no sockets, no client) so the number is the stack's own
cost per request. Run: ``.venv/bin/python -m bench.overhead > /dev/null`` (the report
goes to stderr). Not part of the test run.
"""

from __future__ import annotations

import asyncio
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
from bastion.logs import configure_logging
from bastion.security.principal import Principal
from bastion.security.tokens import access_token_claims
from bastion.storage.migrate import upgrade_to_head
from bench.asgi import get_scope, receive

REQUESTS = 20_000


def _bare(routes_of: FastAPI) -> FastAPI:
    """A bare FastAPI app with the same route table as bastion's (FastAPI matches routes
    one by one, so the table's length costs both apps alike) and no security at all."""
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    app.router.routes.extend(routes_of.router.routes)

    @app.get("/ping")
    async def ping() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/private")
    async def private() -> dict[str, str]:
        return {"status": "ok", "user": "nobody"}

    return app


def _guarded(data_dir: Path) -> FastAPI:
    app = create_app(
        Settings(_env_file=None, data_dir=data_dir, rate_limit_default="1000000000/minute")
    )

    @app.get("/ping", dependencies=[public()])
    async def ping() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/private")
    async def private(principal: Annotated[Principal, require("notes:read")]) -> dict[str, str]:
        return {"status": "ok", "user": principal.user_id}

    return app


async def _access_token(app: FastAPI) -> str:
    ring = await app.state.bastion.keys.ring()
    return str(
        ring.sign(
            access_token_claims(
                issuer=app.state.bastion.settings.issuer,
                audience=app.state.bastion.settings.audience,
                subject=str(uuid.uuid4()),
                session_id=str(uuid.uuid4()),
                scopes=["notes:read"],
                lifetime=900,
                now=int(time.time()),
            )
        )
    )


async def _drive(app: Any, count: int, path: str = "/ping", token: str | None = None) -> float:
    scope = get_scope(path, token=token)

    async def send(_message: dict[str, Any]) -> None:
        return None

    started = time.process_time()
    for _ in range(count):
        await app(dict(scope), receive, send)
    return (time.process_time() - started) / count * 1e6


async def main() -> None:
    configure_logging("INFO")  # the production pipeline; run with stdout sent to /dev/null
    with tempfile.TemporaryDirectory() as data_dir:
        guarded = _guarded(Path(data_dir))
        bare = _bare(create_app(Settings(_env_file=None, data_dir=Path(data_dir))))
        await upgrade_to_head(guarded.state.bastion.database.engine)
        async with guarded.router.lifespan_context(guarded):
            token = await _access_token(guarded)
            await _drive(bare, 2_000)
            await _drive(guarded, 2_000)
            await _drive(guarded, 2_000, "/private", token)
            bare_us = await _drive(bare, REQUESTS, "/private")
            guarded_us = await _drive(guarded, REQUESTS)
            private_us = await _drive(guarded, REQUESTS, "/private", token)
    report = (
        f"bare FastAPI route:        {bare_us:7.1f} µs/request (same route table)\n"
        f"bastion middleware:        {guarded_us:7.1f} µs/request (+{guarded_us - bare_us:.1f})\n"
        f"  + require(), cached JWT: {private_us:7.1f} µs/request (+{private_us - bare_us:.1f})\n"
        f"relative throughput:       {bare_us / guarded_us:.2f}x, {bare_us / private_us:.2f}x\n"
    )
    sys.stderr.write(report)


if __name__ == "__main__":
    asyncio.run(main())
