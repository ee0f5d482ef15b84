"""Rate limiting through the real server: ``bastion serve`` in a subprocess, HTTP over loopback.

- A small default quota: the IETF ``RateLimit-Policy``/``RateLimit`` fields count down, the
  request past the quota is a 429 problem with ``Retry-After``; quotas are per route template
  (a fresh path parameter is no fresh quota), and ``/health/live`` is never limited.
- A login flood at OWASP-cost hashing: only the login quota's worth of attempts reach the
  password check (the audit log and the access log agree), the rest are 429s; the quota is
  per client address, so another address still logs in.
- Two worker processes sharing a real Redis: a quota is exact in total across fresh
  connections (whichever worker answers), and a logout is refused by both workers.
- Redis killed under the running server: login and limited routes answer 503 (never 500 or
  429), ``/health/live`` stays 200; ``BASTION_RATE_LIMIT_FAIL_OPEN`` lets ordinary routes
  through but never login; Redis back on the same port and everything answers again alone.

Clients choose their source address in 127.0.0.0/8 (Linux routes the whole block to the
loopback interface): each address is a distinct client for the per-IP quotas, so one test
can be a flooding client and an innocent one at once. Every server, data dir and
redis-server here is the test's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.api import FAST_HASHING_ENV, INVALID_GRANT
from tests.e2e.conftest import (
    Command,
    Deployment,
    LiveServer,
    assert_problem,
    children_of,
    deployed,
    logger_of,
    running,
    serve_command,
    service,
    service_env,
    start_server,
    stop_server,
)
from tests.identity.helpers import PASSWORD, bearer, login, password_form, register
from tests.servers.redis import RedisServer

LOOPBACK = "127.0.0.1"
# Further loopback addresses, each a client of its own for the per-IP quotas.
FLOODER = "127.0.0.2"
BYSTANDER = "127.0.0.3"
# One TLS context for every client: httpx would otherwise load the CA bundle per client, and
# the tests make one client per request (a fresh connection each). Plain HTTP never uses it.
_TLS = ssl.create_default_context()
CLIENT_TIMEOUT = 15.0
RECOVER_WITHIN_SECONDS = 15.0
POLL_INTERVAL = 0.25

LIMITED_ROUTE = "/.well-known/jwks.json"
WRONG_PASSWORD = "not the password of this account at all"
ADMIN = "ratelimit-root"
ADMIN_PASSWORD = "the operator's own long passphrase 2026"

POLICY = re.compile(r'"(?P<name>[A-Za-z0-9_-]+)";q=(?P<q>\d+);w=(?P<w>\d+)')
STATE = re.compile(r'"(?P<name>[A-Za-z0-9_-]+)";r=(?P<r>\d+);t=(?P<t>\d+)')


# -- reading the RateLimit fields ------------------------------------------------------------


def _field(response: httpx.Response, name: str, pattern: re.Pattern[str]) -> re.Match[str]:
    """The header ``name`` matched whole by ``pattern``; fails when absent or malformed."""
    value = response.headers.get(name)
    assert value is not None, (response.status_code, dict(response.headers))
    match = pattern.fullmatch(value)
    assert match, value
    return match


def policy_of(response: httpx.Response) -> tuple[str, int, int]:
    """``RateLimit-Policy`` as (name, quota, window)."""
    match = _field(response, "ratelimit-policy", POLICY)
    return match["name"], int(match["q"]), int(match["w"])


def state_of(response: httpx.Response) -> tuple[str, int, int]:
    """``RateLimit`` as (name, remaining, seconds to reset)."""
    match = _field(response, "ratelimit", STATE)
    return match["name"], int(match["r"]), int(match["t"])


def remaining_of(response: httpx.Response) -> int:
    return state_of(response)[1]


def assert_not_limited(response: httpx.Response) -> None:
    assert "ratelimit" not in response.headers, dict(response.headers)
    assert "ratelimit-policy" not in response.headers, dict(response.headers)


def retry_after_of(response: httpx.Response) -> int:
    value = response.headers.get("retry-after", "")
    assert value.isdigit(), (response.status_code, value)
    return int(value)


def assert_rate_limited(
    response: httpx.Response, name: str, quota: int, window: int
) -> dict[str, Any]:
    """A 429 problem with a positive ``Retry-After`` and both fields, nothing left."""
    body = assert_problem(response, 429)
    assert retry_after_of(response) >= 1
    assert policy_of(response) == (name, quota, window)
    state_name, remaining, reset = state_of(response)
    assert (state_name, remaining) == (name, 0), response.headers["ratelimit"]
    assert reset >= 1
    return body


def assert_unavailable(response: httpx.Response, *secrets: str) -> None:
    """503 problem details with ``Retry-After``: the store is down, not the client's fault."""
    assert_problem(response, 503, *secrets)
    assert retry_after_of(response) >= 1
    assert "redis" not in response.text.lower(), response.text


# -- clients on fresh connections, from a chosen address ------------------------------------


@contextlib.asynccontextmanager
async def client_from(
    server: LiveServer, address: str = LOOPBACK
) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.AsyncHTTPTransport(verify=_TLS, local_address=address)
    async with httpx.AsyncClient(
        transport=transport, base_url=server.base_url, timeout=CLIENT_TIMEOUT
    ) as client:
        yield client


async def burst(
    server: LiveServer,
    count: int,
    method: str,
    path: str,
    *,
    address: str = LOOPBACK,
    **options: Any,
) -> tuple[list[httpx.Response], Counter[int]]:
    """``count`` concurrent requests, each on a connection of its own (a client each), and
    which server process holds each connection, taken while all of them are still open."""
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(client_from(server, address)) for _ in range(count)
        ]
        responses = await asyncio.gather(
            *(client.request(method, path, **options) for client in clients)
        )
        holders = connections_by_process(server)
    return list(responses), holders


def statuses(responses: list[httpx.Response]) -> Counter[int]:
    return Counter(response.status_code for response in responses)


# -- which worker process answered: /proc, from outside the server ---------------------------


def _established_inodes(port: int) -> set[str]:
    """Socket inodes of established TCP connections whose local end is ``port``: the
    server's side of each client connection."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local_port = int(fields[1].rsplit(":", 1)[1], 16)
                if local_port == port and fields[3] == "01":  # 01: TCP_ESTABLISHED
                    inodes.add(fields[9])
    return inodes


def connections_by_process(server: LiveServer) -> Counter[int]:
    """How many open client connections each process of the server (the process itself
    and its worker children) holds. The access log names no process, so this is how a test
    tells from outside which worker took a connection: the kernel knows whose socket it is."""
    inodes = _established_inodes(server.port)
    held: Counter[int] = Counter()
    for pid in (server.process.pid, *children_of(server.process.pid)):
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    target = fd.readlink().name
                    if target.startswith("socket:[") and target[8:-1] in inodes:
                        held[pid] += 1
    return held


# -- servers ---------------------------------------------------------------------------------


def workers_command(workers: int) -> Command:
    def command(port: int) -> list[str]:
        return [*serve_command(port), "--workers", str(workers)]

    return command


def kill_redis(redis_server: RedisServer) -> None:
    """SIGKILL, no shutdown: connections just drop, as when the host or container dies."""
    assert redis_server.process is not None
    redis_server.process.kill()
    redis_server.process.wait(timeout=10)


def access_lines(server: LiveServer, route: str, expected: int) -> list[dict[str, Any]]:
    """The access log lines of ``route``, once ``expected`` of them are written."""

    def of_route(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [r for r in records if logger_of(r) == "bastion.access" and r.get("route") == route]

    return of_route(server.wait_for_records(lambda records: len(of_route(records)) >= expected))


# -- 1. the quota, its fields and its 429 -------------------------------------------------------

SMALL_QUOTA = 5
WINDOW = 60


@pytest.fixture
def small_quota_server(tmp_path: Path) -> Iterator[LiveServer]:
    variables = {"rate_limit_default": f"{SMALL_QUOTA}/minute", **FAST_HASHING_ENV}
    with service(tmp_path, "sqlite", None, **variables) as server:
        yield server


async def test_the_default_quota_counts_down_then_answers_429_per_route_template(
    small_quota_server: LiveServer,
) -> None:
    server = small_quota_server
    async with client_from(server) as client:
        allowed = [await client.get(LIMITED_ROUTE) for _ in range(SMALL_QUOTA)]
        for response in allowed:
            assert response.status_code == 200, response.text
            assert policy_of(response) == ("default", SMALL_QUOTA, WINDOW)
            assert state_of(response)[0] == "default"
        assert [remaining_of(r) for r in allowed] == list(range(SMALL_QUOTA - 1, -1, -1))

        refused = await client.get(LIMITED_ROUTE)
        body = assert_rate_limited(refused, "default", SMALL_QUOTA, WINDOW)
        assert body["title"] == "Too Many Requests", body
        # Still refused: a refusal is not a request that frees anything.
        assert_rate_limited(await client.get(LIMITED_ROUTE), "default", SMALL_QUOTA, WINDOW)

        # Another route has a quota of its own for the same client (refused unauthenticated,
        # and counted all the same).
        unauthenticated = await client.get("/auth/me")
        assert unauthenticated.status_code == 401, unauthenticated.text
        assert policy_of(unauthenticated) == ("default", SMALL_QUOTA, WINDOW)
        assert remaining_of(unauthenticated) == SMALL_QUOTA - 1

        # The probes are never limited, and say nothing about quotas.
        for _ in range(3 * SMALL_QUOTA):
            for probe in ("/health/live", "/health/ready"):
                answer = await client.get(probe)
                assert answer.status_code == 200, answer.text
                assert_not_limited(answer)

    # Another client address is another client: its quota on the same route is whole.
    async with client_from(server, BYSTANDER) as other:
        response = await other.get(LIMITED_ROUTE)
        assert response.status_code == 200, response.text
        assert remaining_of(response) == SMALL_QUOTA - 1

    # The route template, not the raw path, keys the quota: fresh ids are no fresh quota.
    # Authenticated routes count per user.
    async with client_from(server, FLOODER) as client:
        username = f"templ-{uuid.uuid4().hex[:8]}"
        await register(client, username)
        auth = bearer((await login(client, username))["access_token"])
        missing = [await client.get(f"/notes/{uuid.uuid4()}", headers=auth) for _ in range(5)]
        for response in missing:
            assert_problem(response, 404)
            assert policy_of(response) == ("default", SMALL_QUOTA, WINDOW)
        assert [remaining_of(r) for r in missing] == list(range(SMALL_QUOTA - 1, -1, -1))
        refused = await client.get(f"/notes/{uuid.uuid4()}", headers=auth)
        assert_rate_limited(refused, "default", SMALL_QUOTA, WINDOW)

    # The access log recorded the 429s under the route template like any other answer.
    lines = access_lines(server, LIMITED_ROUTE, expected=SMALL_QUOTA + 3)
    assert Counter(line["status"] for line in lines) == {200: SMALL_QUOTA + 1, 429: 2}


# -- 2. a login flood stops before any password is hashed ------------------------------------

LOGIN_QUOTA = 3
FLOOD = 30


@pytest.fixture
def login_deployment(tmp_path: Path) -> Iterator[Deployment]:
    # Hashing at the defaults (OWASP's Argon2id parameters): what the quota protects.
    with deployed(tmp_path, "sqlite", rate_limit_login=f"{LOGIN_QUOTA}/minute") as deployment:
        yield deployment


async def test_a_login_flood_gets_the_quota_worth_of_password_checks_and_429s(
    login_deployment: Deployment,
) -> None:
    server = login_deployment.server
    victim = f"victim-{uuid.uuid4().hex[:8]}"
    async with client_from(server) as client:
        user = await register(client, victim)

    # Concurrent wrong-password grants for one account, each on a connection of its own.
    responses, _ = await burst(
        server,
        FLOOD,
        "POST",
        "/auth/token",
        address=FLOODER,
        data=password_form(victim, WRONG_PASSWORD),
    )
    assert statuses(responses) == {400: LOGIN_QUOTA, 429: FLOOD - LOGIN_QUOTA}, statuses(responses)
    for response in responses:
        # The allowed attempts carry the fields too (every limited response does).
        assert policy_of(response) == ("login", LOGIN_QUOTA, WINDOW)
        if response.status_code == 400:
            assert response.json()["error"] == INVALID_GRANT["error"], response.text
        else:
            assert_rate_limited(response, "login", LOGIN_QUOTA, WINDOW)
            assert WRONG_PASSWORD not in response.text
    allowed = [r for r in responses if r.status_code == 400]
    assert sorted(remaining_of(r) for r in allowed) == list(range(LOGIN_QUOTA))

    async with client_from(server, FLOODER) as flooder:
        # The right password does not help once the address's quota is spent: the quota is
        # checked before the credentials are.
        assert_rate_limited(
            await flooder.post("/auth/token", data=password_form(victim)),
            "login",
            LOGIN_QUOTA,
            WINDOW,
        )

    # The quota is per address: the admin, elsewhere, logs in and reads the audit log.
    login_deployment.create_admin(ADMIN, ADMIN_PASSWORD)
    async with client_from(server, BYSTANDER) as admin:
        auth = bearer((await login(admin, ADMIN, ADMIN_PASSWORD))["access_token"])
        page = await admin.get(
            "/admin/audit", params={"type": "login_failure", "limit": "100"}, headers=auth
        )
        assert page.status_code == 200, page.text
        failures: list[dict[str, Any]] = page.json()["items"]
        lockouts = await admin.get(
            "/admin/audit", params={"type": "lockout", "limit": "100"}, headers=auth
        )
        assert lockouts.status_code == 200, lockouts.text
        assert lockouts.json()["items"] == []

    # Only the allowed attempts reached the password check, all of them from the flooder.
    assert len(failures) == LOGIN_QUOTA, failures
    assert {event["client_ip"] for event in failures} == {FLOODER}, failures
    assert {event["subject_id"] for event in failures} == {user["id"]}, failures
    assert {event["outcome"] for event in failures} == {"failure"}, failures
    assert {event["details"].get("reason") for event in failures} == {"wrong_password"}

    # The access log agrees: the flooder's token requests were 3 answers and 28 refusals.
    lines = access_lines(server, "/auth/token", expected=FLOOD + 2)
    flooded = Counter(line["status"] for line in lines if line.get("client_ip") == FLOODER)
    assert flooded == {400: LOGIN_QUOTA, 429: FLOOD - LOGIN_QUOTA + 1}, flooded


# -- 3. two workers, one Redis ---------------------------------------------------------------

SHARED_QUOTA = 20
MIN_BATCHES = 3
# Bursts until both workers have answered, at most this many: asyncio's accept loop takes
# every pending connection on one wake-up, so a whole burst sometimes lands on one worker;
# over several bursts both take some (1 burst in 8 went to one worker when measured, so 10
# in a row is about 1 in 10**9 unless something is wrong).
MAX_BATCHES = 10
WORKERS = 2
WORKERS_START_TIMEOUT = 60.0
WARM_UP_REQUESTS = 20  # the per-user quota of GET /auth/me, all allowed


@pytest.fixture
def two_workers(tmp_path: Path, own_redis: RedisServer) -> Iterator[LiveServer]:
    env = service_env(
        tmp_path / "data",
        redis_url=own_redis.url,
        rate_limit_default=f"{SHARED_QUOTA}/minute",
        **FAST_HASHING_ENV,
    )
    with running(workers_command(WORKERS), root=tmp_path, env=env, backend="sqlite") as server:
        wait_for_workers(server)
        yield server


def wait_for_workers(server: LiveServer) -> None:
    """Waits until every worker serves: ``/health/live`` answers as soon as the first one
    does, and a busy host may take many seconds to start the others (each imports the whole
    application in a fresh interpreter)."""

    def started(records: list[dict[str, Any]]) -> bool:
        events = [r.get("event") for r in records if logger_of(r) == "uvicorn.error"]
        return events.count("Application startup complete.") >= WORKERS

    if not started(server.wait_for_records(started, timeout=WORKERS_START_TIMEOUT)):
        pytest.fail(f"not all {WORKERS} workers started:\n{server.log_tail()}")
    alive = set(children_of(server.process.pid))
    serving = {
        int(match[1])
        for record in server.log_records(strict=False)
        if (match := re.fullmatch(r"Started server process \[(\d+)\]", str(record.get("event"))))
    }
    assert len(serving & alive) == WORKERS, (serving, alive, server.log_tail())


def assert_held_by_workers(holders: Counter[int], server: LiveServer, total: int) -> None:
    """Connections were found, each held by a worker process (not the supervisor). At most
    ``total``: on a slow host the server may already have closed an idle one (keep-alive)."""
    assert 0 < sum(holders.values()) <= total, holders
    assert server.process.pid not in holders, holders
    assert len(holders) <= WORKERS, holders


async def test_a_quota_is_exact_across_workers_and_fresh_connections(
    two_workers: LiveServer,
) -> None:
    server = two_workers
    responses: list[httpx.Response] = []
    holders: Counter[int] = Counter()
    for _ in range(MAX_BATCHES):
        batch, held = await burst(server, SHARED_QUOTA, "GET", LIMITED_ROUTE)
        assert_held_by_workers(held, server, SHARED_QUOTA)
        responses += batch
        holders += held
        if len(responses) >= MIN_BATCHES * SHARED_QUOTA and len(holders) == WORKERS:
            break
    # Both workers answered: had each its own count, the second would have allowed more.
    assert len(holders) == WORKERS, f"one worker took all {len(responses)} connections"

    counts = statuses(responses)
    assert counts == {200: SHARED_QUOTA, 429: len(responses) - SHARED_QUOTA}, counts
    allowed = [r for r in responses if r.status_code == 200]
    # One atomic count in Redis: each allowed request saw a remaining count of its own.
    assert sorted(remaining_of(r) for r in allowed) == list(range(SHARED_QUOTA)), [
        r.headers["ratelimit"] for r in allowed
    ]
    for response in responses:
        assert policy_of(response) == ("default", SHARED_QUOTA, WINDOW)
        if response.status_code == 429:
            assert_rate_limited(response, "default", SHARED_QUOTA, WINDOW)


async def test_a_logout_is_refused_by_every_worker(two_workers: LiveServer) -> None:
    server = two_workers
    username = f"multi-{uuid.uuid4().hex[:8]}"
    async with client_from(server, FLOODER) as client:
        await register(client, username)
        access = (await login(client, username))["access_token"]

    # The workers verify (and may cache) the token before the logout.
    before, held = await burst(server, WARM_UP_REQUESTS, "GET", "/auth/me", headers=bearer(access))
    assert statuses(before) == {200: WARM_UP_REQUESTS}, [r.text for r in before]
    assert_held_by_workers(held, server, WARM_UP_REQUESTS)

    async with client_from(server, FLOODER) as client:
        logout = await client.post("/auth/logout", headers=bearer(access))
        assert logout.status_code == 204, logout.text

    # Fresh connections with the old token until both workers have refused it. Each burst
    # comes from an address of its own, so the per-address count of unauthenticated
    # requests to /auth/me never runs out: a 429 here fails the test as much as a 200.
    refused_by: Counter[int] = Counter()
    sent = 0
    for batch in range(MAX_BATCHES):
        after, held = await burst(
            server,
            SHARED_QUOTA,
            "GET",
            "/auth/me",
            address=f"127.0.1.{batch + 1}",
            headers=bearer(access),
        )
        sent += len(after)
        for response in after:
            assert_problem(response, 401)
            assert response.headers["www-authenticate"].startswith("Bearer"), response.headers
        assert_held_by_workers(held, server, SHARED_QUOTA)
        refused_by += held
        if len(refused_by) == WORKERS:
            break
    assert len(refused_by) == WORKERS, f"one worker took all {sent} connections"


# -- 4. Redis killed under the server -------------------------------------------------------


@pytest.fixture
def redis_backed_servers(
    tmp_path: Path, own_redis: RedisServer
) -> Iterator[tuple[LiveServer, LiveServer]]:
    """Two single-worker servers on one Redis: the default (fail closed) and fail open.
    Started side by side: each start is a few seconds of migrating and importing."""

    def start(name: str, **variables: str) -> LiveServer:
        root = tmp_path / name
        env = service_env(
            root / "data",
            redis_url=own_redis.url,
            rate_limit_login="100/minute",
            **FAST_HASHING_ENV,
            **variables,
        )
        return start_server(serve_command, root=root, env=env, backend="sqlite")

    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [
            pool.submit(start, "closed"),
            pool.submit(start, "open", rate_limit_fail_open="true"),
        ]
    started = [future.result() for future in futures if future.exception() is None]
    try:
        for future in futures:
            future.result()  # re-raises a failed start, after the other one is stopped below
        yield started[0], started[1]
    finally:
        for server in started:
            stop_server(server)


async def _recovered(client: httpx.AsyncClient, username: str) -> None:
    """Polls until readiness is 200 and a login works again, or fails."""
    deadline = time.monotonic() + RECOVER_WITHIN_SECONDS
    seen: list[tuple[int, int]] = []
    while time.monotonic() < deadline:
        ready = await client.get("/health/ready")
        token = await client.post("/auth/token", data=password_form(username))
        seen.append((ready.status_code, token.status_code))
        if (ready.status_code, token.status_code) == (200, 200):
            return
        assert ready.status_code in (200, 503) and token.status_code in (200, 503), seen
        await asyncio.sleep(POLL_INTERVAL)
    raise AssertionError(f"not recovered within {RECOVER_WITHIN_SECONDS} s: {seen}")


async def test_without_redis_login_fails_closed_and_everything_recovers(
    own_redis: RedisServer, redis_backed_servers: tuple[LiveServer, LiveServer]
) -> None:
    closed, fail_open = redis_backed_servers
    username = f"outage-{uuid.uuid4().hex[:8]}"
    async with (
        client_from(closed) as strict,
        client_from(fail_open) as lenient,
    ):
        await register(strict, username)
        await register(lenient, username)  # each server has its own database
        tokens: dict[str, str] = {}
        for name, client in (("closed", strict), ("open", lenient)):
            tokens[name] = (await login(client, username))["access_token"]
            response = await client.get(LIMITED_ROUTE)
            assert response.status_code == 200, response.text
            assert policy_of(response)[0] == "default"
            assert (await client.get("/health/ready")).status_code == 200
            me = await client.get("/auth/me", headers=bearer(tokens[name]))
            assert me.status_code == 200, me.text

        kill_redis(own_redis)
        try:
            for client in (strict, lenient):
                # Login is refused whatever the setting: counting it is the protection.
                token = await client.post("/auth/token", data=password_form(username))
                assert_unavailable(token, PASSWORD, own_redis.url)
                # Readiness alone names the dependency that is down, for the operator.
                ready = await client.get("/health/ready")
                assert_problem(ready, 503, own_redis.url)
                assert ready.json()["checks"] == {"database": "ok", "redis": "unavailable"}
                live = await client.get("/health/live")
                assert live.status_code == 200, live.text
                assert_not_limited(live)

            # Fail closed (the default): a limited route is refused, not served uncounted.
            assert_unavailable(await strict.get(LIMITED_ROUTE), own_redis.url)
            # Fail open: served (uncounted).
            for _ in range(3):
                response = await lenient.get(LIMITED_ROUTE)
                assert response.status_code == 200, response.text
            # Failing open is about quotas only: revocation checks still fail closed.
            assert_unavailable(await lenient.get("/auth/me", headers=bearer(tokens["open"])))
        finally:
            own_redis.start()  # same port, empty

        await _recovered(strict, username)
        await _recovered(lenient, username)
        for client in (strict, lenient):
            response = await client.get(LIMITED_ROUTE)
            assert response.status_code == 200, response.text
            assert policy_of(response)[0] == "default"

    # The fail-open server warned that it let requests through uncounted.
    def warned(records: list[dict[str, Any]]) -> bool:
        return any(
            logger_of(r) == "bastion.ratelimits" and r.get("level") == "warning" for r in records
        )

    assert warned(fail_open.wait_for_records(warned)), fail_open.log_tail()
    assert not warned(closed.log_records())
    for server in (closed, fail_open):
        assert own_redis.url not in server.log_text()
        assert not [r for r in server.log_records() if r.get("status") == 500]
