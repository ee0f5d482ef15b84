"""CPU cost of bastion's middleware stack over a bare FastAPI route, measured in-process.

Drives the ASGI apps directly (no sockets, no client) so the number is the stack's own
cost per request. Run: ``.venv/bin/python bench/overhead.py > /dev/null`` (the report
goes to stderr). Not part of the test run.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from bastion.app import create_app
from bastion.config import Settings
from bastion.logs import configure_logging

REQUESTS = 20_000


def _bare() -> FastAPI:
    app = FastAPI()

    @app.get("/ping")
    async def ping() -> dict[str, str]:
        return {"status": "ok"}

    return app


def _guarded(data_dir: Path) -> FastAPI:
    app = create_app(Settings(_env_file=None, data_dir=data_dir))

    @app.get("/ping")
    async def ping() -> dict[str, str]:
        return {"status": "ok"}

    return app


async def _drive(app: Any, count: int) -> float:
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": "/ping", "raw_path": b"/ping", "query_string": b"",
        "root_path": "", "headers": [(b"host", b"bench"), (b"accept", b"*/*")],
        "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000),
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(_message: dict[str, Any]) -> None:
        return None

    started = time.process_time()
    for _ in range(count):
        await app(dict(scope), receive, send)
    return (time.process_time() - started) / count * 1e6


async def main() -> None:
    configure_logging("INFO")  # the production pipeline; run with stdout sent to /dev/null
    with tempfile.TemporaryDirectory() as data_dir:
        bare, guarded = _bare(), _guarded(Path(data_dir))
        await _drive(bare, 2_000)
        await _drive(guarded, 2_000)
        bare_us = await _drive(bare, REQUESTS)
        guarded_us = await _drive(guarded, REQUESTS)
        await guarded.state.database.dispose()
    report = (
        f"bare FastAPI route:   {bare_us:7.1f} µs/request\n"
        f"bastion middleware:   {guarded_us:7.1f} µs/request (+{guarded_us - bare_us:.1f} µs)\n"
        f"relative throughput:  {bare_us / guarded_us:.2f}x of bare\n"
    )
    sys.stderr.write(report)


if __name__ == "__main__":
    asyncio.run(main())
