"""Two hosts behind nginx across a signing-key rotation: no valid token is ever refused.

Two ``bastion serve`` processes (one worker each, ports of their own: the "hosts") share one
PostgreSQL database and one Redis, behind an nginx of the test's own that spreads requests
over both (round robin). bastion believes nginx's ``X-Forwarded-For``
(``BASTION_TRUSTED_PROXIES=127.0.0.1``), as in docs/deployment.md. A steady stream of clients
logs in and calls ``/auth/me`` through nginx, with each new token and with older ones, while
``bastion keys rotate`` runs. A rotated key is published at once and signs only
``SIGNING_DELAY_SECONDS`` (15 s) later, so that every host knows it before any token it
signed arrives.

- Reduced (``make test``): one rotation; both hosts publish the new key in their JWKS well
  before it signs, every token issued meanwhile is still the old key's, and nothing is
  refused. About 5 s of stream, not the whole delay.
- Full (``BASTION_FAULTS=full``): two rotations, each followed past its signing moment: the
  tokens of every key, old and new, are accepted by both hosts, at any time.

What the test checks is the row ``key-rotation-two-hosts`` of docs/operations.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import re
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from bastion.storage.signing_keys import RELOAD_INTERVAL_SECONDS, SIGNING_DELAY_SECONDS
from tests.e2e.api import FAST_HASHING_ENV
from tests.e2e.conftest import (
    LiveServer,
    logger_of,
    migrate,
    run_bastion,
    serve_command,
    service_env,
    start_server,
    stop_server,
)
from tests.faults.checks import assert_answer, assert_readiness
from tests.faults.load import ROOMY_LIMITS_ENV
from tests.faults.table import FaultRow, expected
from tests.identity.helpers import account_form, bearer, password_form
from tests.servers.nginx import NginxServer
from tests.servers.postgres import PostgresServer
from tests.servers.redis import RedisServer

# The stream's clients, from an address of their own: the hosts must log it, not nginx's.
CLIENT_ADDRESS = "127.0.0.7"
CLIENTS = 4
USES_PER_TOKEN = 4  # /auth/me calls with each new token, spread by nginx over both hosts
PAUSE_SECONDS = 0.01
CLIENT_TIMEOUT = 10.0
ROTATED = re.compile(r"new signing key (?P<kid>\S+) \((?P<alg>[A-Za-z0-9]+)\), signing from "
                     r"(?P<signs_from>\S+)")
# After a key's signing moment, the stream runs on until new tokens of it were used this long.
PAST_SIGNING_SECONDS = 3.0
PUBLISHED_WITHIN_SECONDS = RELOAD_INTERVAL_SECONDS + 3.0


@dataclass
class Hosts:
    env: dict[str, str]
    root: Path
    hosts: list[LiveServer]
    nginx: NginxServer

    def rotate(self) -> tuple[str, datetime]:
        """``bastion keys rotate``, as an operator runs it: the new kid and when it signs."""
        result = run_bastion("keys", "rotate", env=self.env, cwd=self.root)
        assert result.returncode == 0, result.stdout + result.stderr
        match = ROTATED.search(result.stdout)
        assert match, result.stdout
        return match["kid"], datetime.fromisoformat(match["signs_from"])


@pytest.fixture
def two_hosts(
    tmp_path: Path, postgres_server: PostgresServer, own_redis: RedisServer
) -> Iterator[Hosts]:
    name = asyncio.run(postgres_server.create_database())
    env = service_env(
        tmp_path / "data",
        database_url=postgres_server.url(name),
        redis_url=own_redis.url,
        trusted_proxies="127.0.0.1",
        **FAST_HASHING_ENV,
        **ROOMY_LIMITS_ENV,
    )
    started: list[LiveServer] = []
    nginx: NginxServer | None = None
    try:
        migrate(env, tmp_path)

        def start(host: str) -> LiveServer:
            root = tmp_path / host
            host_env = {**env, "BASTION_DATA_DIR": str(root / "data")}
            server = start_server(serve_command, root=root, env=host_env, backend="postgresql")
            started.append(server)
            return server

        with ThreadPoolExecutor(max_workers=2) as pool:
            hosts = list(pool.map(start, ("host-a", "host-b")))
        nginx = NginxServer([host.port for host in hosts]).start()
        yield Hosts(env, tmp_path, hosts, nginx)
    finally:
        if nginx is not None:
            nginx.destroy()
        for server in started:
            stop_server(server)
        asyncio.run(postgres_server.drop_database(name))


def kid_of(token: str) -> str:
    kid = jwt.get_unverified_header(token)["kid"]
    assert isinstance(kid, str), kid
    return kid


@dataclass(frozen=True)
class Call:
    route: str
    request_id: str
    status: int
    kid: str  # of the token issued (a login) or sent (/auth/me)
    at: float  # time.monotonic() of the answer
    response: httpx.Response = field(compare=False, repr=False)


class Stream:
    """Clients logging in through nginx and calling /auth/me with each new token a few
    times (nginx spreads the calls over both hosts) and with an older token now and then."""

    def __init__(self, base_url: str, accounts: list[str]) -> None:
        self.accounts = accounts
        self.calls: list[Call] = []
        self.tokens: list[str] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.failures: list[BaseException] = []
        self.ids = itertools.count(1)
        transport = httpx.HTTPTransport(local_address=CLIENT_ADDRESS)
        self.http = httpx.Client(base_url=base_url, timeout=CLIENT_TIMEOUT, transport=transport)
        self.threads = [
            threading.Thread(target=self.run, args=(n,), daemon=True) for n in range(CLIENTS)
        ]

    def call(self, route: str, kid: str, **options: Any) -> httpx.Response:
        request_id = f"rotation-{next(self.ids)}-{uuid.uuid4().hex[:6]}"
        method = "POST" if route == "/auth/token" else "GET"
        response = self.http.request(
            method, route, headers={"X-Request-ID": request_id, **options.pop("headers", {})},
            **options,
        )
        if route == "/auth/token" and response.status_code == 200:
            kid = kid_of(response.json()["access_token"])
        with self.lock:
            self.calls.append(Call(route, request_id, response.status_code, kid,
                                   time.monotonic(), response))
        time.sleep(PAUSE_SECONDS)
        return response

    def run(self, number: int) -> None:
        chooser = random.Random(number)  # which older token to send: nothing secret
        username = self.accounts[number % len(self.accounts)]
        try:
            while not self.stopping.is_set():
                login = self.call("/auth/token", "", data=password_form(username))
                if login.status_code != 200:
                    continue
                token = login.json()["access_token"]
                with self.lock:
                    self.tokens.append(token)
                    older = chooser.choice(self.tokens)
                for sent in [token] * USES_PER_TOKEN + [older]:
                    self.call("/auth/me", kid_of(sent), headers=bearer(sent))
        except BaseException as error:  # a thread's failure must fail the test
            self.failures.append(error)

    def __enter__(self) -> Stream:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(30)
        self.http.close()
        assert not self.failures, repr(self.failures[0])

    def kids_issued(self, since: float = 0.0) -> set[str]:
        with self.lock:
            return {c.kid for c in self.calls if c.route == "/auth/token" and c.at >= since
                    and c.status == 200}

    def wait_until(self, moment: datetime) -> None:
        """Streams on until the wall clock passes ``moment``, then until new tokens issued
        after it have been used for ``PAST_SIGNING_SECONDS``."""
        time.sleep(max((moment - datetime.now(UTC)).total_seconds(), 0))
        time.sleep(PAST_SIGNING_SECONDS)


def register(http: httpx.Client, count: int) -> list[str]:
    names = [f"rotation-{n}-{uuid.uuid4().hex[:6]}" for n in range(count)]
    for name in names:
        response = http.post("/auth/register", json=account_form(name))
        assert response.status_code == 201, response.text
    return names


def published(server_url: str, kid: str) -> bool:
    jwks = httpx.get(f"{server_url}/.well-known/jwks.json", timeout=CLIENT_TIMEOUT)
    assert jwks.status_code == 200, jwks.text
    return kid in {key["kid"] for key in jwks.json()["keys"]}


def wait_for_publication(hosts: Hosts, kid: str, signs_from: datetime) -> float:
    """Polls each host's own JWKS (and nginx's) until all publish ``kid``; fails unless that
    happens within the reload interval and well before the key signs. Returns the seconds
    that were left before it signs."""
    deadline = time.monotonic() + PUBLISHED_WITHIN_SECONDS
    urls = [*(host.base_url for host in hosts.hosts), hosts.nginx.base_url]
    waiting = set(urls)
    while waiting:
        waiting = {url for url in waiting if not published(url, kid)}
        assert time.monotonic() < deadline, f"{kid} not published by {waiting}"
        time.sleep(0.1)
    left = (signs_from - datetime.now(UTC)).total_seconds()
    assert left > SIGNING_DELAY_SECONDS - PUBLISHED_WITHIN_SECONDS, left
    return left


def host_of_request(hosts: Hosts) -> dict[str, tuple[int, dict[str, Any]]]:
    """Which host (its index) answered each request id, and its access line."""
    answered: dict[str, tuple[int, dict[str, Any]]] = {}
    for index, host in enumerate(hosts.hosts):
        for record in host.log_records():
            if logger_of(record) == "bastion.access" and record.get("request_id"):
                answered[str(record["request_id"])] = (index, record)
    return answered


def assert_as_documented(row: FaultRow, hosts: Hosts, stream: Stream) -> dict[int, set[str]]:
    """Every call answered 200 (no valid token refused); each host answered some, and logged
    the client's own address (nginx's ``X-Forwarded-For``, believed from a trusted proxy);
    nothing worth a warning was logged. Returns the kids each host accepted on /auth/me."""
    refused = [c for c in stream.calls if c.status != 200]
    assert not refused, f"{len(refused)} of {len(stream.calls)} calls refused: {refused[:5]}"
    for call in stream.calls:
        assert_answer(row, call.response)
    answered = host_of_request(hosts)
    # An access line is written just after its answer: wait for the last ones.
    missing = [c.request_id for c in stream.calls if c.request_id not in answered]
    deadline = time.monotonic() + 5
    while missing and time.monotonic() < deadline:
        time.sleep(0.1)
        answered = host_of_request(hosts)
        missing = [m for m in missing if m not in answered]
    assert not missing, f"{len(missing)} calls in no host's access log: {missing[:5]}"
    accepted: dict[int, set[str]] = defaultdict(set)
    for call in stream.calls:
        index, line = answered[call.request_id]
        assert line["status"] == 200, line
        assert line["client_ip"] == CLIENT_ADDRESS, line
        if call.route == "/auth/me":
            accepted[index].add(call.kid)
    by_host = Counter(answered[c.request_id][0] for c in stream.calls)
    assert set(by_host) == {0, 1}, f"nginx sent everything to one host: {by_host}"
    assert row.log_event is None, row
    for host in hosts.hosts:
        worrying = [r for r in host.log_records() if r.get("level") in ("warning", "error")]
        assert not worrying, worrying[:5]
    return accepted


def assert_ready(row: FaultRow, hosts: Hosts) -> None:
    for url in (*(host.base_url for host in hosts.hosts), hosts.nginx.base_url):
        assert_readiness(row, httpx.get(f"{url}/health/ready", timeout=CLIENT_TIMEOUT))


@contextlib.contextmanager
def streaming(hosts: Hosts) -> Iterator[Stream]:
    with httpx.Client(base_url=hosts.nginx.base_url, timeout=CLIENT_TIMEOUT) as http:
        accounts = register(http, CLIENTS)
    with Stream(hosts.nginx.base_url, accounts) as stream:
        deadline = time.monotonic() + 10
        while len(stream.calls) < 4 * CLIENTS:  # under way before the rotation
            assert time.monotonic() < deadline, "the stream does not start"
            time.sleep(0.05)
        yield stream


def test_a_rotated_key_is_published_on_both_hosts_before_it_signs(two_hosts: Hosts) -> None:
    row = expected("key-rotation-two-hosts")
    with streaming(two_hosts) as stream:
        (old_kid,) = stream.kids_issued()
        kid, signs_from = two_hosts.rotate()
        assert kid != old_kid
        rotated_at = time.monotonic()
        wait_for_publication(two_hosts, kid, signs_from)
        time.sleep(1.0)  # tokens issued once both hosts know the new key: still the old one's
        assert stream.kids_issued(since=rotated_at) == {old_kid}
        assert_ready(row, two_hosts)
    accepted = assert_as_documented(row, two_hosts, stream)
    assert accepted == {0: {old_kid}, 1: {old_kid}}, accepted


@pytest.mark.full_faults
@pytest.mark.timeout(180)
def test_two_rotations_refuse_no_valid_token_on_either_host(two_hosts: Hosts) -> None:
    row = expected("key-rotation-two-hosts")
    with streaming(two_hosts) as stream:
        kids = [*stream.kids_issued()]
        assert len(kids) == 1, kids
        for _ in range(2):
            kid, signs_from = two_hosts.rotate()
            wait_for_publication(two_hosts, kid, signs_from)
            stream.wait_until(signs_from)
            signing = time.monotonic() - PAST_SIGNING_SECONDS + 1.0
            assert stream.kids_issued(since=signing) == {kid}, "the new key does not sign"
            kids.append(kid)
        assert_ready(row, two_hosts)
    accepted = assert_as_documented(row, two_hosts, stream)
    # Both hosts accepted tokens of every key: the first, and each rotated one.
    assert accepted == {0: set(kids), 1: set(kids)}, (kids, accepted)
