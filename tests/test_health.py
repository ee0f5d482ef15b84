"""Readiness follows the database and, when configured, Redis."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from bastion.app import create_app
from bastion.storage.migrate import upgrade_to_head
from tests.conftest import FAST_HASHING, make_settings
from tests.servers.redis import RedisServer


async def test_readiness_follows_redis_and_recovers(tmp_path: Path, own_redis: RedisServer) -> None:
    app = create_app(
        make_settings(tmp_path / "data", redis_url=own_redis.url, **FAST_HASHING)
    )
    await upgrade_to_head(app.state.bastion.database.engine)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://testserver") as client,
    ):
        assert (await client.get("/health/ready")).status_code == 200
        own_redis.stop()
        started = time.monotonic()
        down = await client.get("/health/ready")
        assert down.status_code == 503
        assert down.headers["content-type"] == "application/problem+json"
        assert down.json()["checks"] == {"database": "ok", "redis": "unavailable"}
        assert time.monotonic() - started < 5
        assert (await client.get("/health/live")).status_code == 200
        own_redis.start()
        assert (await client.get("/health/ready")).status_code == 200


async def test_the_app_starts_with_redis_down_and_restores_when_it_returns(
    tmp_path: Path, own_redis: RedisServer
) -> None:
    app = create_app(
        make_settings(tmp_path / "data", redis_url=own_redis.url, **FAST_HASHING)
    )
    await upgrade_to_head(app.state.bastion.database.engine)
    own_redis.stop()
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://testserver") as client,
    ):
        assert (await client.get("/health/live")).status_code == 200
        starting = await client.get("/health/ready")
        assert starting.status_code == 503
        assert starting.json()["checks"]["redis"] == "unavailable"
        own_redis.start()
        assert (await client.get("/health/ready")).status_code == 200


async def test_liveness_answers_its_json_body_unmetered_and_head_without_one(
    tmp_path: Path,
) -> None:
    app = create_app(make_settings(tmp_path / "data", **FAST_HASHING))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        live = await client.get("/health/live")
        head = await client.head("/health/live")
    assert live.status_code == head.status_code == 200
    assert live.headers["content-type"] == "application/json"
    assert live.json() == {"status": "ok"}
    assert head.content == b""
    assert head.headers["content-length"] == live.headers["content-length"]
    assert "ratelimit" not in live.headers  # liveness is never rate limited
    assert live.headers["x-content-type-options"] == "nosniff"
