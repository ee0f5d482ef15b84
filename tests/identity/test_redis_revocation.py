"""With BASTION_REDIS_URL, revocations are shared by every worker and fail closed.

Two app instances over one database and one Redis stand in for two worker processes. Each
test runs its own redis-server, so stopping it disturbs no other test. SQLite suffices: the
point is the revocation store, not the database.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import jwt
import pytest
import redis.asyncio

from bastion.app import create_app
from bastion.config import Settings
from bastion.security.tokens import LEEWAY_SECONDS
from bastion.storage.migrate import upgrade_to_head
from tests.conftest import FAST_HASHING, make_settings
from tests.identity.helpers import login, me, register
from tests.servers.redis import RedisServer

SESSION_KEY_PREFIX = "bastion:revoked:sid:"
MARKER = "bastion:revoked:restored"
RESTORE_LOGGED = "revocations missing from Redis: restoring from the database"


@pytest.fixture
def shared_settings(tmp_path: Path, own_redis: RedisServer) -> Settings:
    return make_settings(tmp_path / "data", redis_url=own_redis.url, **FAST_HASHING)


class Workers:
    """Started app instances over the same settings, each with a client."""

    def __init__(self, settings: Settings, stack: AsyncExitStack) -> None:
        self.settings = settings
        self.stack = stack

    async def start(self) -> httpx.AsyncClient:
        application = create_app(self.settings)
        await upgrade_to_head(application.state.bastion.database.engine)
        await self.stack.enter_async_context(application.router.lifespan_context(application))
        return await self.stack.enter_async_context(
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=application), base_url="http://testserver"
            )
        )


@pytest.fixture
async def workers(shared_settings: Settings) -> AsyncIterator[Workers]:
    async with AsyncExitStack() as stack:
        yield Workers(shared_settings, stack)


@pytest.fixture
async def redis_client(own_redis: RedisServer) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(own_redis.url, decode_responses=True)
    yield client
    await client.aclose()


def session_id_of(access_token: str) -> str:
    claims = jwt.decode(access_token, options={"verify_signature": False})
    sid: str = claims["sid"]
    return sid


async def test_a_logout_is_refused_by_every_worker_at_once(
    workers: Workers, redis_client: redis.asyncio.Redis, shared_settings: Settings
) -> None:
    first = await workers.start()
    second = await workers.start()  # a second worker, up before the logout happens
    await register(first)
    tokens = await login(first)
    access = tokens["access_token"]
    # The second worker has verified (and cached) this token before the logout.
    assert (await me(second, access)).status_code == 200

    logout = await first.post("/auth/logout", headers={"Authorization": f"Bearer {access}"})
    assert logout.status_code == 204

    assert (await me(first, access)).status_code == 401
    refused = await me(second, access)  # it never saw the logout
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"].startswith("Bearer")

    key = SESSION_KEY_PREFIX + session_id_of(access)
    assert await redis_client.keys(SESSION_KEY_PREFIX + "*") == [key]
    ttl = await redis_client.ttl(key)
    assert 0 < ttl <= shared_settings.access_token_ttl + LEEWAY_SECONDS

    # A worker started later refuses it too.
    third = await workers.start()
    assert (await me(third, access)).status_code == 401


def restores_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "bastion.storage.revocations" and record.getMessage() == RESTORE_LOGGED
    ]


def kill_9(server: RedisServer) -> None:
    """SIGKILL: no shutdown, so no snapshot on the way out; the last ``SAVE`` is what stays."""
    assert server.process is not None
    server.process.kill()
    server.process.wait(timeout=10)
    server.process = None


async def test_a_redis_back_from_an_older_snapshot_does_not_bring_logged_out_tokens_back(
    workers: Workers, own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The snapshot holds the restore marker but not the logout that came after it: the
    restarted Redis is another server (another ``run_id``), so the next check restores."""
    first = await workers.start()
    second = await workers.start()
    await register(first)
    revoked = (await login(first))["access_token"]
    kept = (await login(first))["access_token"]
    assert (await me(second, revoked)).status_code == 200
    async with redis.asyncio.Redis.from_url(own_redis.url, decode_responses=True) as before:
        assert await before.save()  # the snapshot: the marker, and no logout yet
    logout = await first.post("/auth/logout", headers={"Authorization": f"Bearer {revoked}"})
    assert logout.status_code == 204
    assert (await me(second, revoked)).status_code == 401
    caplog.clear()

    kill_9(own_redis)
    own_redis.start()  # same port and directory: it loads the snapshot
    async with redis.asyncio.Redis.from_url(own_redis.url, decode_responses=True) as after:
        key = SESSION_KEY_PREFIX + session_id_of(revoked)
        assert await after.exists(MARKER)  # the loss the old marker check could not see
        assert not await after.exists(key)

        assert (await me(second, revoked)).status_code == 401
        assert (await me(first, revoked)).status_code == 401
        assert (await me(first, kept)).status_code == 200
        assert (await me(second, kept)).status_code == 200
        assert await after.exists(key)
        # The marker names the server restored into, so the other worker did not restore.
        assert await after.get(MARKER) == (await after.info("server"))["run_id"]
    assert restores_logged(caplog) == [RESTORE_LOGGED]


async def test_a_redis_restarted_with_all_its_data_is_restored_once(
    workers: Workers, own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A marker written by an earlier version (``1``) names no server: one restore. A restart
    that lost nothing is still another server: one restore, by the first check, no more."""
    client = await workers.start()
    await register(client)
    revoked = (await login(client))["access_token"]
    valid = (await login(client))["access_token"]
    await client.post("/auth/logout", headers={"Authorization": f"Bearer {revoked}"})
    async with redis.asyncio.Redis.from_url(own_redis.url, decode_responses=True) as before:
        await before.set(MARKER, "1")
        caplog.clear()
        for _ in range(3):
            assert (await me(client, revoked)).status_code == 401
            assert (await me(client, valid)).status_code == 200
        assert restores_logged(caplog) == [RESTORE_LOGGED]
        assert await before.save()

    kill_9(own_redis)
    own_redis.start()
    for _ in range(3):
        assert (await me(client, revoked)).status_code == 401
        assert (await me(client, valid)).status_code == 200
    assert restores_logged(caplog) == [RESTORE_LOGGED] * 2


async def test_without_redis_authenticated_requests_fail_closed_then_recover(
    workers: Workers, own_redis: RedisServer
) -> None:
    client = await workers.start()
    await register(client)
    live = (await login(client))["access_token"]
    revoked = (await login(client))["access_token"]
    await client.post("/auth/logout", headers={"Authorization": f"Bearer {revoked}"})
    assert (await me(client, live)).status_code == 200
    assert (await me(client, revoked)).status_code == 401

    own_redis.stop()
    try:
        for token in (live, revoked):
            response = await me(client, token)
            assert response.status_code == 503, response.text
            assert response.headers["content-type"] == "application/problem+json"
            problem = response.json()
            assert problem["status"] == 503
            assert "redis" not in response.text.lower()
            assert response.headers["retry-after"].isdigit()
    finally:
        own_redis.start()

    assert (await me(client, live)).status_code == 200


async def test_a_redis_restart_does_not_bring_logged_out_tokens_back(
    workers: Workers, own_redis: RedisServer
) -> None:
    """Redis may restart empty (no persistence, a failover, an eviction): the database still
    records the logout, and a logged-out token must not work again until it expires."""
    client = await workers.start()
    await register(client)
    revoked = (await login(client))["access_token"]
    await client.post("/auth/logout", headers={"Authorization": f"Bearer {revoked}"})
    assert (await me(client, revoked)).status_code == 401

    own_redis.stop()
    own_redis.start()  # same port, empty: the test server keeps nothing on disk

    assert (await me(client, revoked)).status_code == 401
