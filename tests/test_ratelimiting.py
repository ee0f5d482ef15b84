"""Rate limiting through the application: quotas, headers, keys, login floods, Redis loss."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute

from bastion.app import create_app
from bastion.dependencies import public
from bastion.route_inventory import route_rate_limits
from bastion.security.passwords import PasswordHasher
from bastion.security.ratelimits import RateLimit
from bastion.services import services_of
from bastion.storage.migrate import upgrade_to_head
from tests.conftest import FAST_HASHING, make_settings
from tests.identity.helpers import PASSWORD, bearer, login, password_grant, register
from tests.servers.postgres import free_port
from tests.servers.redis import RedisServer

PROBLEM = "application/problem+json"
JWKS = "/.well-known/jwks.json"

Started = tuple[FastAPI, httpx.AsyncClient]
Start = Callable[..., Awaitable[Started]]


@pytest.fixture
async def start(tmp_path: Path) -> AsyncIterator[Start]:
    """Starts an app (migrated, lifespan run) with the given settings and a client for it."""
    async with AsyncExitStack() as stack:

        async def starter(**overrides: Any) -> Started:
            data_dir = tmp_path / uuid.uuid4().hex
            app = create_app(make_settings(data_dir, **FAST_HASHING, **overrides))
            await upgrade_to_head(app.state.bastion.database.engine)
            await stack.enter_async_context(app.router.lifespan_context(app))
            transport = httpx.ASGITransport(app=app)
            client = httpx.AsyncClient(transport=transport, base_url="http://testserver")
            await stack.enter_async_context(client)
            return app, client

        yield starter


def assert_limit_headers(response: httpx.Response, name: str, quota: int, window: int) -> int:
    """The IETF fields are present and well formed; returns the remaining count."""
    assert response.headers["ratelimit-policy"] == f'"{name}";q={quota};w={window}'
    fields = response.headers["ratelimit"].split(";")
    assert fields[0] == f'"{name}"'
    remaining, reset = fields[1], fields[2]
    assert remaining.startswith("r=") and reset.startswith("t=")
    assert int(reset[2:]) >= 0
    return int(remaining[2:])


async def test_the_request_past_the_quota_is_a_429_problem(start: Start) -> None:
    _, client = await start(rate_limit_default="5/minute")
    for expected_remaining in (4, 3, 2, 1, 0):
        response = await client.get(JWKS)
        assert response.status_code == 200
        assert assert_limit_headers(response, "default", 5, 60) == expected_remaining
    refused = await client.get(JWKS)
    assert refused.status_code == 429
    assert refused.headers["content-type"] == PROBLEM
    assert refused.json()["status"] == 429
    assert int(refused.headers["retry-after"]) >= 1
    assert assert_limit_headers(refused, "default", 5, 60) == 0
    # Security headers and the request id are there as on every response.
    assert refused.headers["x-content-type-options"] == "nosniff"
    assert refused.headers["x-request-id"]


async def test_liveness_is_never_limited(start: Start) -> None:
    _, client = await start(rate_limit_default="2/minute")
    for _ in range(5):
        response = await client.get("/health/live")
        assert response.status_code == 200
        assert "ratelimit" not in response.headers


async def test_exactly_the_quota_passes_concurrent_requests(start: Start) -> None:
    _, client = await start(rate_limit_default="10/minute")
    responses = await asyncio.gather(*(client.get(JWKS) for _ in range(30)))
    statuses = sorted(response.status_code for response in responses)
    assert statuses == [200] * 10 + [429] * 20


async def test_the_key_is_the_route_template_not_the_raw_path(start: Start) -> None:
    _, client = await start(rate_limit_default="3/minute")
    await register(client, "alice")
    headers = bearer((await login(client, "alice"))["access_token"])
    for _ in range(3):
        missing = await client.get(f"/notes/{uuid.uuid4()}", headers=headers)
        assert missing.status_code == 404
        assert_limit_headers(missing, "default", 3, 60)  # errors carry the fields too
    assert (await client.get(f"/notes/{uuid.uuid4()}", headers=headers)).status_code == 429
    # Another route has its own count.
    assert (await client.get("/notes", headers=headers)).status_code == 200


async def test_users_count_apart_and_anonymous_callers_per_address(start: Start) -> None:
    _, client = await start(rate_limit_default="3/minute")
    for name in ("alice", "bob"):
        await register(client, name)
    alice = bearer((await login(client, "alice"))["access_token"])
    bob = bearer((await login(client, "bob"))["access_token"])
    for _ in range(3):
        assert (await client.get("/auth/me", headers=alice)).status_code == 200
    assert (await client.get("/auth/me", headers=alice)).status_code == 429
    assert (await client.get("/auth/me", headers=bob)).status_code == 200
    # Guessing tokens is counted per address: the 401s run out like anything else.
    forged = bearer("not.a.token")
    for _ in range(3):
        assert (await client.get("/auth/me", headers=forged)).status_code == 401
    assert (await client.get("/auth/me", headers=forged)).status_code == 429


class CountingHasher(PasswordHasher):
    """The real hasher, counting how many passwords it was asked to check."""

    def __init__(self, inner: PasswordHasher) -> None:
        self.__dict__.update(inner.__dict__)
        self.checks = 0

    async def verify(self, password: str, stored_hash: str) -> Any:
        self.checks += 1
        return await super().verify(password, stored_hash)

    async def verify_dummy(self, password: str) -> None:
        self.checks += 1
        await super().verify_dummy(password)


async def test_a_login_flood_is_refused_before_any_password_is_hashed(start: Start) -> None:
    app, client = await start(rate_limit_login="3/minute", lockout_threshold=100)
    await register(client, "alice")
    services = services_of(app)
    hasher = CountingHasher(services.grants.hasher)
    services.grants.hasher = hasher
    guesses = [password_grant(client, "alice", f"guess number {n} long enough") for n in range(20)]
    responses = await asyncio.gather(*guesses)
    statuses = sorted(response.status_code for response in responses)
    assert statuses == [400] * 3 + [429] * 17
    assert hasher.checks == 3
    for response in responses:
        assert_limit_headers(response, "login", 3, 60)
    # Unknown users cost nothing either once the address is spent.
    assert (await password_grant(client, "nobody", PASSWORD)).status_code == 429
    # The quota is per address and shared by every password check: changing a password
    # (which checks the current one) is refused too.
    assert hasher.checks == 3


async def test_changing_a_password_shares_the_login_quota(start: Start) -> None:
    _, client = await start(rate_limit_login="2/minute")
    await register(client, "alice")
    tokens = await login(client, "alice")  # 1 of 2
    change = {"current_password": "wrong but long enough", "new_password": "x" * 20}
    first = await client.post("/auth/password", json=change, headers=bearer(tokens["access_token"]))
    assert first.status_code == 400
    second = await client.post(
        "/auth/password", json=change, headers=bearer(tokens["access_token"])
    )
    assert second.status_code == 429
    assert (await password_grant(client, "alice")).status_code == 429


async def test_a_browser_sign_in_shares_the_login_quota(start: Start) -> None:
    """/auth/session is a password guess like /auth/token: one quota per address for both,
    spent before any hash."""
    _, client = await start(rate_limit_login="3/minute")
    await register(client, "alice")
    sign_in = {"username": "alice", "password": "a wrong guess, long enough"}
    same_origin = {"Sec-Fetch-Site": "same-origin"}
    statuses = [(await password_grant(client, "alice", sign_in["password"])).status_code]
    for _ in range(3):
        response = await client.post("/auth/session", data=sign_in, headers=same_origin)
        statuses.append(response.status_code)
    assert statuses == [400, 400, 400, 429]
    assert_limit_headers(response, "login", 3, 60)
    assert (await password_grant(client, "alice")).status_code == 429


async def test_a_spoofed_forwarded_for_gains_nothing_without_a_trusted_proxy(
    start: Start,
) -> None:
    _, client = await start(rate_limit_login="3/minute")
    await register(client, "alice")
    statuses = []
    for n in range(5):
        response = await client.post(
            "/auth/token",
            data={"grant_type": "password", "username": "alice", "password": "wrong guess long"},
            headers={"X-Forwarded-For": f"198.51.100.{n}"},
        )
        statuses.append(response.status_code)
    assert statuses == [400, 400, 400, 429, 429]


async def test_a_trusted_proxy_gives_each_client_its_own_quota_and_lockout_still_counts(
    start: Start,
) -> None:
    """Many addresses each stay under the per-address quota; the account lock, counted per
    account, stops the guessing anyway."""
    _, client = await start(
        rate_limit_login="3/minute", trusted_proxies=["127.0.0.1"], lockout_threshold=5
    )
    await register(client, "alice")
    for n in range(5):
        response = await client.post(
            "/auth/token",
            data={"grant_type": "password", "username": "alice", "password": "wrong guess long"},
            headers={"X-Forwarded-For": f"198.51.100.{n}"},
        )
        assert response.status_code == 400
        assert assert_limit_headers(response, "login", 3, 60) == 2
    # Locked now: even the right password from yet another address is refused.
    right = await client.post(
        "/auth/token",
        data={"grant_type": "password", "username": "alice", "password": PASSWORD},
        headers={"X-Forwarded-For": "198.51.100.99"},
    )
    assert right.status_code == 400
    assert right.json()["error"] == "invalid_grant"


async def test_disabled_limits_count_nothing_and_send_no_fields(start: Start) -> None:
    _, client = await start(rate_limit_default="1/minute", rate_limits_enabled=False)
    for _ in range(3):
        response = await client.get(JWKS)
        assert response.status_code == 200
        assert "ratelimit" not in response.headers


async def test_two_processes_sharing_redis_share_one_quota(
    start: Start, own_redis: RedisServer
) -> None:
    """Two app instances (as two workers would be) against one Redis: one total."""
    _, first = await start(rate_limit_default="10/minute", redis_url=own_redis.url)
    _, second = await start(rate_limit_default="10/minute", redis_url=own_redis.url)
    responses = await asyncio.gather(
        *(client.get(JWKS) for client in (first, second) for _ in range(15))
    )
    assert sum(response.status_code == 200 for response in responses) == 10
    assert sum(response.status_code == 429 for response in responses) == 20


async def test_redis_down_refuses_logins_and_follows_the_policy_elsewhere(start: Start) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    _, closed = await start(redis_url=dead)
    login_attempt = await password_grant(closed, "alice")
    assert login_attempt.status_code == 503
    assert login_attempt.headers["content-type"] == PROBLEM
    assert login_attempt.headers["retry-after"]
    assert (await closed.get(JWKS)).status_code == 503
    assert (await closed.get("/health/ready")).status_code == 503
    assert (await closed.get("/health/live")).status_code == 200

    _, open_ = await start(redis_url=dead, rate_limit_fail_open=True)
    passed = await open_.get(JWKS)
    assert passed.status_code == 200
    assert "ratelimit" not in passed.headers  # nothing was counted, so nothing is claimed
    assert (await password_grant(open_, "alice")).status_code == 503


async def test_a_quota_name_without_a_configured_limit_stops_the_start(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path / "data", **FAST_HASHING))

    @app.get("/custom", dependencies=[public(rate_limit=RateLimit("nowhere"))])
    async def custom() -> None:
        return None

    await upgrade_to_head(app.state.bastion.database.engine)
    with pytest.raises(LookupError, match="nowhere"):
        async with app.router.lifespan_context(app):
            pass
    await app.state.bastion.database.dispose()


async def test_a_route_declares_its_own_quota(start: Start) -> None:
    app, client = await start()

    @app.get("/scarce", dependencies=[public(rate_limit=RateLimit("scarce", "2/hour"))])
    async def scarce() -> dict[str, str]:
        return {"status": "ok"}

    first = await client.get("/scarce")
    assert first.status_code == 200
    assert_limit_headers(first, "scarce", 2, 3600)
    assert (await client.get("/scarce")).status_code == 200
    assert (await client.get("/scarce")).status_code == 429


async def test_head_and_get_share_one_count(start: Start) -> None:
    app, client = await start(rate_limit_default="2/minute")

    @app.api_route("/both", methods=["GET", "HEAD"], dependencies=[public()])
    async def both() -> dict[str, str]:
        return {"status": "ok"}

    assert (await client.head("/both")).status_code == 200
    assert (await client.get("/both")).status_code == 200
    assert (await client.head("/both")).status_code == 429


async def test_the_probes_are_never_metered(start: Start) -> None:
    """Orchestrators call them freely; readiness must say which dependency is down, not
    fail at the quota."""
    _, client = await start(rate_limit_default="2/minute")
    for path in ("/health/live", "/health/ready"):
        for _ in range(5):
            response = await client.get(path)
            assert response.status_code == 200, (path, response.text)
            assert "ratelimit" not in response.headers


async def test_routers_included_under_prefixes_count_apart(start: Start) -> None:
    """A toolkit user's routers, included with prefixes: the key is the full template."""
    app, client = await start(rate_limit_default="2/minute")
    router = APIRouter()

    @router.get("/items/{item_id}", dependencies=[public()])
    async def item(item_id: str) -> dict[str, str]:
        return {"id": item_id}

    app.include_router(router, prefix="/v1")
    app.include_router(router, prefix="/v2")
    for number in range(2):
        assert (await client.get(f"/v1/items/{number}")).status_code == 200
    assert (await client.get("/v1/items/9")).status_code == 429
    assert (await client.get("/v2/items/1")).status_code == 200


def test_every_limited_route_documents_its_429(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path / "data"))
    document = app.openapi()
    checked = 0
    for route in app.routes:
        if not isinstance(route, APIRoute) or not route.include_in_schema:
            continue
        for method in route.methods or ():
            responses = document["paths"][route.path][method.lower()]["responses"]
            limited = bool(route_rate_limits(route))
            assert ("429" in responses) is limited, (method, route.path)
            checked += limited
    assert checked >= 15
