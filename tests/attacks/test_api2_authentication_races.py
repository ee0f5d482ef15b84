"""Races on the real ``bastion serve``: what a decision on a stale user row lets through.

The password grant and the password change read the user row, spend tens of milliseconds in
Argon2id, then act. An attacker who times requests to overlap a change of that row (a lock
being set, a password change, a demotion) must not profit from the copy the slow step was
computed on. Each scenario fires such races (``asyncio.gather`` over clients bound to
different loopback source addresses, 127.0.3.x and 127.0.4.x, so the per-address login quota,
left at its default, is not what stops them), with offsets that vary from race to race, and
judges the outcome by invariants that hold whatever the timing:

1. no ``login_success`` and no second ``lockout`` inside a lock period; every attempt in one
   is refused (400 ``invalid_grant``), audited as ``login_failure`` with reason ``locked``
   and not counted (once the lock ends, wrong guesses up to one short of the threshold leave
   the account open to its password);
2. after ``POST /auth/password`` answered 204, no token of a login made with the old password
   works (``/auth/me`` 401, refresh ``invalid_grant``), the old password never logs in again
   and the new one does;
3. the same while a rehash is pending (the server restarted with other Argon2 parameters):
   the racing login's rehash of the old password must not undo the change;
4. after a demotion answered 200, no login that committed after it carries the removed
   permissions (read from the JWT's ``scope``), every token that carries them is refused by
   ``/admin/users``, and the user cannot give the role back to themselves;
5. concurrent refreshes of one refresh token leave at most one live successor.

Every request carries its own ``X-Request-ID``, so its audit event (and with it the order in
which the races committed) is found in ``GET /admin/audit``, read as an admin made by
``bastion create-admin``. A test runs all its races, then fails once, listing every broken
race with its audit trail, and the races that found nothing.

API2:2023 Broken Authentication (docs/security-testing.md); the demotion races (4) attack
API5, Broken Function Level Authorization, too: admin routes must close at the demotion.

Settings are the defaults but for the lock period (3 s instead of 60, so that a lock ends
within the test). One server per backend serves the whole module; each race makes its own
accounts.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import jwt
import pytest

from tests.e2e.conftest import LiveServer, migrate, service_env, start_server, stop_server
from tests.servers.postgres import PostgresServer

BASTION = Path(sys.executable).parent / "bastion"
CLI_TIMEOUT = 60

PASSWORD = "violet staircase under the harbour 7"
NEW_PASSWORD = "a quite different passphrase for 2026"
WRONG_PASSWORD = "surely not what this account was given"
ROOT = "raceroot"
ROOT_EMAIL = "raceroot@example.com"
ROOT_PASSWORD = "the operator's own long passphrase"

# Small enough that a burst locks the account and the lock ends within the test, so that
# what the attempts during it did to the failure count can be seen afterwards.
THRESHOLD = 5
LOCK_SECONDS = 3
# The Argon2 parameters the server had when the rehash scenario's accounts registered; it
# serves the module with its defaults (OWASP's), so their hashes are due for a rehash.
OLD_HASHING = {"password_hash_memory_kib": "8192", "password_hash_time_cost": "1"}

WRONG_GUESSES = 9
# When the right password follows the burst of wrong guesses (the attacker's 20-40 ms);
# one burst each.
RIGHT_PASSWORD_OFFSETS = (0.020, 0.027, 0.034, 0.040)
# Old-password logins follow the start of a password change at these offsets, for as long as
# the change is in flight. A login is stale when it reads the row before the change commits
# and writes after it: when it reaches the hasher after the change's last hash started (the
# hasher runs its jobs first come, first served) and before the change commits. How long a
# change takes varies tenfold with the machine's load, so the gaps grow geometrically: some
# login lands in that window whatever the scale. The first offset varies per race (0-20 ms).
CHANGE_FIRST_LOGIN_OFFSETS = (0.0, 0.004, 0.008, 0.012, 0.016, 0.020)
CHANGE_FIRST_GAP = 0.006
CHANGE_GAP_GROWTH = 1.5
CHANGE_MAX_LOGINS = 12
# The admin's logins, relative to their demotion, one demotion each: they must read the row
# before the demotion commits (it hashes nothing, they hash once) and finish after it.
DEMOTION_LOGIN_OFFSETS = (-0.030, -0.020, -0.010, 0.0)
DEMOTION_BASE_OFFSETS = (0.0, 0.010, 0.005, 0.015)
# Every other demotion is sent this far into a wall-clock second: the cut-off is the next
# whole second, so a stale login that finishes after it gets an ``iat`` it does not cover.
DEMOTION_SECOND_FRACTIONS = (0.965, 0.980)
REFRESH_RACES = 4
CONCURRENT_REFRESHES = 3

# The source addresses the attacker spreads over: at most about 450 login-quota requests per
# backend over 480 addresses stay far below the default 10 a minute for each.
ADDRESSES = tuple(f"127.0.{net}.{n}" for net in (3, 4) for n in range(10, 250))
SETUP_ADDRESSES = tuple(f"127.0.2.{n}" for n in range(10, 250))
# A fired request starts this long after the burst is planned, so every task is waiting.
LEAD_SECONDS = 0.02
# Server-side clocks of two events in one transaction differ by a few ms; inside a lock means
# before its end by more than this.
CLOCK_SLACK = timedelta(milliseconds=50)
MAX_LOCK_WAIT = 20.0

INVALID_GRANT = {
    "error": "invalid_grant",
    "error_description": "The credentials or the grant are not valid.",
}
USER_PERMISSIONS = frozenset({"notes:read", "notes:write"})
ADMIN_PERMISSIONS = frozenset({"users:read", "users:write", "notes:read_all", "audit:read"})
REFUSED = (401, 403)

Event = dict[str, Any]
Send = Callable[[], Coroutine[Any, Any, httpx.Response]]


# -- the server ------------------------------------------------------------------------------


@dataclass
class Account:
    id: str
    username: str
    password: str = PASSWORD
    # Only for the rehash scenario: a token from before the restart, so that changing the
    # password needs no login that would rehash first.
    access_token: str = ""


@dataclass
class RaceServer:
    server: LiveServer
    root_token: str
    # Registered under OLD_HASHING: each one's first password check will rehash.
    pending: list[Account]
    addresses: Iterator[str] = field(default_factory=lambda: itertools.cycle(ADDRESSES))


def serve(port: int) -> list[str]:
    return [str(BASTION), "serve", "--port", str(port)]


def start_create_admin(env: Mapping[str, str], cwd: Path) -> subprocess.Popen[str]:
    """``bastion create-admin``, started in the background: it loads while the server
    starts, then waits for its password on stdin (``finish_create_admin``)."""
    process = subprocess.Popen(
        [str(BASTION), "create-admin", "--username", ROOT, "--email", ROOT_EMAIL],
        env=dict(env),
        cwd=cwd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return process


def finish_create_admin(process: subprocess.Popen[str]) -> None:
    try:
        output, _ = process.communicate(ROOT_PASSWORD + "\n", timeout=CLI_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
    assert process.returncode == 0, f"`bastion create-admin` failed:\n{output}"


def sync_client(server: LiveServer, address: str) -> httpx.Client:
    transport = httpx.HTTPTransport(local_address=address)
    return httpx.Client(base_url=server.base_url, transport=transport, timeout=30.0)


def register_pending(server: LiveServer, count: int) -> list[Account]:
    """Accounts made while the server hashes with OLD_HASHING, each with an access token."""
    accounts: list[Account] = []
    addresses = iter(SETUP_ADDRESSES)
    for _ in range(count):
        username = f"rehash-{uuid.uuid4().hex[:12]}"
        with sync_client(server, next(addresses)) as client:
            created = client.post("/auth/register", json=registration(username))
            assert created.status_code == 201, created.text
            tokens = client.post("/auth/token", data=password_form(username, PASSWORD))
            assert tokens.status_code == 200, tokens.text
        accounts.append(
            Account(created.json()["id"], username, access_token=tokens.json()["access_token"])
        )
    return accounts


def root_login(server: LiveServer) -> str:
    with sync_client(server, SETUP_ADDRESSES[-1]) as client:
        response = client.post("/auth/token", data=password_form(ROOT, ROOT_PASSWORD))
    assert response.status_code == 200, response.text
    assert ADMIN_PERMISSIONS <= set(response.json()["scope"].split()), response.text
    token: str = response.json()["access_token"]
    return token


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def race_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RaceServer]:
    """``bastion serve`` on each backend, started first with OLD_HASHING to register the
    rehash scenario's accounts, then restarted with the default Argon2 parameters for the
    whole module (and ``bastion create-admin`` run against its database meanwhile)."""
    backend: str = request.param
    root = tmp_path_factory.mktemp(f"races-{backend}")
    settings = {"lockout_threshold": str(THRESHOLD), "lockout_base_seconds": str(LOCK_SECONDS)}
    postgres: PostgresServer | None = None
    database_name: str | None = None
    if backend == "postgresql":
        postgres = request.getfixturevalue("postgres_server")
        database_name = asyncio.run(postgres.create_database())
        settings["database_url"] = postgres.url(database_name)
    try:
        env = service_env(root / "data", **settings)
        old_env = service_env(root / "data", **settings, **OLD_HASHING)
        if postgres is not None:
            migrate(env, root)
        first = start_server(serve, root=root, env=old_env, backend=backend)
        try:
            pending = register_pending(first, len(CHANGE_FIRST_LOGIN_OFFSETS))
        finally:
            stop_server(first)
        admin = start_create_admin(env, root)
        try:
            server = start_server(serve, root=root, env=env, backend=backend)
        except BaseException:
            admin.kill()
            admin.wait()
            raise
        try:
            finish_create_admin(admin)
            yield RaceServer(server, root_login(server), pending)
        finally:
            stop_server(server)
    finally:
        if postgres is not None and database_name is not None:
            asyncio.run(postgres.drop_database(database_name))


# -- the attacker ----------------------------------------------------------------------------


def registration(username: str) -> dict[str, Any]:
    return {
        "username": username,
        "email": f"{username}@example.com",
        "password": PASSWORD,
        "age": 30,
    }


def password_form(username: str, password: str) -> dict[str, str]:
    return {"grant_type": "password", "username": username, "password": password}


def request_id(response: httpx.Response) -> str:
    return response.request.headers["X-Request-ID"]


def scope_of(access_token: str) -> frozenset[str]:
    """The token's ``scope`` as the server wrote it (read, not verified: what it claims)."""
    claims: dict[str, Any] = jwt.decode(access_token, options={"verify_signature": False})
    return frozenset(str(claims.get("scope", "")).split())


def later(send: Callable[..., Coroutine[Any, Any, httpx.Response]], *args: Any) -> Send:
    """``send(*args)`` as a request to fire later; each call makes a new request."""
    return lambda: send(*args)


@dataclass(frozen=True)
class Shot:
    """One request of a burst, sent ``offset`` seconds after the burst's start."""

    offset: float
    send: Send


class Attacker:
    """Async clients bound to distinct loopback source addresses, taken in turn, and the
    admin's view of the audit log. Every request gets its own ``X-Request-ID``."""

    def __init__(self, race: RaceServer) -> None:
        self.race = race
        self.clients: dict[str, httpx.AsyncClient] = {}

    async def __aenter__(self) -> Attacker:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await asyncio.gather(*(client.aclose() for client in self.clients.values()))

    def _client(self) -> httpx.AsyncClient:
        address = next(self.race.addresses)
        if address not in self.clients:
            self.clients[address] = httpx.AsyncClient(
                base_url=self.race.server.base_url,
                transport=httpx.AsyncHTTPTransport(local_address=address),
                timeout=60.0,
            )
        return self.clients[address]

    async def request(
        self, method: str, path: str, *, token: str | None = None, **options: Any
    ) -> httpx.Response:
        headers = {"X-Request-ID": f"race-{uuid.uuid4().hex[:24]}"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        response = await self._client().request(method, path, headers=headers, **options)
        # The per-address quota is not under test; a 429 would make a race look refused.
        assert response.status_code != 429, f"rate limited, use more ADDRESSES: {path}"
        return response

    async def password_grant(self, username: str, password: str) -> httpx.Response:
        return await self.request("POST", "/auth/token", data=password_form(username, password))

    async def refresh(self, refresh_token: str) -> httpx.Response:
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        return await self.request("POST", "/auth/token", data=form)

    async def me(self, access_token: str) -> httpx.Response:
        return await self.request("GET", "/auth/me", token=access_token)

    async def register(self, prefix: str) -> Account:
        username = f"{prefix}-{uuid.uuid4().hex[:12]}"
        response = await self.request("POST", "/auth/register", json=registration(username))
        assert response.status_code == 201, response.text
        return Account(response.json()["id"], username)

    async def login(self, account: Account) -> dict[str, Any]:
        response = await self.password_grant(account.username, account.password)
        assert response.status_code == 200, response.text
        tokens: dict[str, Any] = response.json()
        return tokens

    async def change_password(self, access_token: str, body: dict[str, str]) -> httpx.Response:
        return await self.request("POST", "/auth/password", token=access_token, json=body)

    async def set_roles(self, account: Account, roles: list[str]) -> httpx.Response:
        return await self.request(
            "PATCH", f"/admin/users/{account.id}", token=self.race.root_token,
            json={"roles": roles},
        )

    async def audit(self, user_id: str) -> list[Event]:
        """Every audit event naming ``user_id``, oldest first (all pages)."""
        events: list[Event] = []
        cursor: str | None = None
        for _ in range(100):
            params = {"user_id": user_id, "limit": "100"} | ({"cursor": cursor} if cursor else {})
            response = await self.request(
                "GET", "/admin/audit", token=self.race.root_token, params=params
            )
            assert response.status_code == 200, response.text
            page = response.json()
            events.extend(page["items"])
            cursor = page["next_cursor"]
            if cursor is None:
                return sorted(events, key=lambda event: int(event["seq"]))
        pytest.fail("the audit log's cursor walk does not end")


async def fire(shots: Sequence[Shot]) -> list[httpx.Response]:
    """Sends every shot at its offset (the earliest at once), concurrently."""
    loop = asyncio.get_running_loop()
    earliest = min(shot.offset for shot in shots)
    start = loop.time() + LEAD_SECONDS

    async def one(shot: Shot) -> httpx.Response:
        await asyncio.sleep(max(0.0, start + shot.offset - earliest - loop.time()))
        return await shot.send()

    return list(await asyncio.gather(*(one(shot) for shot in shots)))


async def until_second_fraction(after: float, fraction: float) -> None:
    """Waits until the wall clock (the server's too: same host) is ``fraction`` into a
    second that begins after the time ``after``."""
    target = math.floor(after) + 1 + fraction
    await asyncio.sleep(max(target - time.time(), 0.0))


def occurred(event: Event) -> datetime:
    return datetime.fromisoformat(str(event["occurred_at"]))


def describe(event: Event) -> str:
    """``#seq type`` (and the failure's reason): short enough to read a burst in one line."""
    reason = event["details"].get("reason")
    return f"#{event['seq']} {event['type']}{f'({reason})' if reason else ''}"


class Report:
    """What went wrong, per race: the test fails once, listing every broken race with its
    audit trail and every race that found nothing, so one run shows how often it is won."""

    def __init__(self, what: str, backend: str, repetitions: int) -> None:
        self.what = what
        self.repetitions = repetitions
        self.backend = backend
        self.problems: dict[str, list[str]] = {}
        self.trails: dict[str, str] = {}
        self.races: list[str] = []

    def add(self, label: str, *problems: str) -> None:
        if problems:
            self.problems.setdefault(label, []).extend(problems)

    def race(self, label: str) -> str:
        """Records that a race ran (the report lists those that found nothing, too)."""
        self.races.append(label)
        return label

    def trail(self, label: str, events: Sequence[Event]) -> None:
        self.trails[label] = " ".join(describe(event) for event in events)

    @property
    def broken(self) -> int:
        return len(self.problems)

    def __str__(self) -> str:
        lines = [f"{self.broken} of {self.repetitions} races {self.what} on {self.backend}:"]
        for label, problems in self.problems.items():
            lines.append(f"{label}:")
            lines.extend(f"  - {problem}" for problem in problems)
            if label in self.trails:
                lines.append(f"  audit: {self.trails[label]}")
        lines.extend(f"{label}: nothing" for label in self.races if label not in self.problems)
        return "\n".join(lines)


# -- 1. the lockout --------------------------------------------------------------------------


@dataclass
class Lock:
    event: Event
    end: datetime

    def covers(self, event: Event) -> bool:
        """Whether ``event`` committed after the lock was set and before it ended, in another
        request than the failure that set it (which is audited right after the lockout)."""
        after = int(event["seq"]) > int(self.event["seq"])
        other = event["request_id"] != self.event["request_id"]
        return after and other and occurred(event) < self.end - CLOCK_SLACK


def locks_in(events: Sequence[Event]) -> list[Lock]:
    locks = []
    for event in events:
        if event["type"] == "lockout":
            seconds = int(event["details"].get("seconds", LOCK_SECONDS))
            locks.append(Lock(event, occurred(event) + timedelta(seconds=seconds)))
    return locks


def lockout_problems(
    events: Sequence[Event], attempts: Sequence[tuple[str, httpx.Response]]
) -> list[str]:
    """What the audit log and the answers show that a lock must not allow."""
    problems: list[str] = []
    locks = locks_in(events)
    if not locks:
        problems.append(f"{WRONG_GUESSES} wrong guesses set no lock")
    inside = [event for event in events if any(lock.covers(event) for lock in locks)]
    successes = [describe(e) for e in inside if e["type"] == "login_success"]
    if successes:
        problems.append(f"login_success inside a lock: {successes}")
    relocks = [describe(e) for e in inside if e["type"] == "lockout"]
    if relocks:
        problems.append(f"a second lockout inside a lock: {relocks}")
    checked = [
        describe(e)
        for e in inside
        if e["type"] == "login_failure" and e["details"].get("reason") != "locked"
    ]
    if checked:
        problems.append(
            f"{len(checked)} attempts during a lock were checked and counted instead of "
            f"refused as 'locked': {checked}"
        )
    by_request = {event["request_id"]: event for event in events if event["request_id"]}
    for what, response in attempts:
        audited = by_request.get(request_id(response))
        if audited is None:
            problems.append(f"the {what} ({response.status_code}) was not audited")
        elif audited in inside and (
            response.status_code != 400 or response.json() != INVALID_GRANT
        ):
            problems.append(
                f"the {what} during the lock was answered {response.status_code}, not 400 "
                f"invalid_grant ({describe(audited)})"
            )
    return problems


@dataclass
class Burst:
    label: str
    account: Account
    events: list[Event]


def counted_since_last_reset(events: Sequence[Event]) -> int:
    """Wrong guesses the account should be holding against it: those after its last lock or
    success that no lock covered (a lock starts the count again from zero)."""
    locks = locks_in(events)
    locking = {lock.event["request_id"] for lock in locks}
    count = 0
    for event in events:
        if event["type"] in ("lockout", "login_success"):
            count = 0
        elif (
            event["type"] == "login_failure"
            and event["details"].get("reason") == "wrong_password"
            and event["request_id"] not in locking
            and not any(lock.covers(event) for lock in locks)
        ):
            count += 1
    return count


async def test_a_burst_of_guesses_never_logs_in_during_the_lock_it_sets(
    race_server: RaceServer,
) -> None:
    """Finding 1: nine wrong guesses at once, then the right password 20-40 ms later."""
    report = Report("broke the lockout", race_server.server.backend, len(RIGHT_PASSWORD_OFFSETS))
    bursts: list[Burst] = []
    async with Attacker(race_server) as attacker:
        for number, offset in enumerate(RIGHT_PASSWORD_OFFSETS, start=1):
            account = await attacker.register("lock")
            label = report.race(f"burst {number} (right password at +{offset * 1000:.0f} ms)")
            wrong = later(attacker.password_grant, account.username, WRONG_PASSWORD)
            shots = [Shot(0.0, wrong) for _ in range(WRONG_GUESSES)]
            right = later(attacker.password_grant, account.username, account.password)
            shots.append(Shot(offset, right))
            responses = await fire(shots)
            # The right password again once the burst is over: still inside the lock.
            probe = await attacker.password_grant(account.username, account.password)
            attempts = [("wrong guess", response) for response in responses[:-1]]
            attempts += [("right password", responses[-1]), ("right password after it", probe)]
            events = await attacker.audit(account.id)
            report.add(label, *lockout_problems(events, attempts))
            report.trail(label, events)
            bursts.append(Burst(label, account, events))

        # Attempts during a lock are not counted: once it ends, wrong guesses up to one short
        # of the threshold (with those counted before) leave the account open to its password.
        async def after_the_lock(burst: Burst) -> None:
            locks = locks_in(burst.events)
            if not locks:
                return
            end = max(lock.end for lock in locks)
            wait = (end - datetime.now(end.tzinfo)).total_seconds()
            if wait > MAX_LOCK_WAIT:
                report.add(burst.label, f"still locked for {wait:.0f} s")
                return
            await asyncio.sleep(max(wait, 0.0) + 0.3)
            guesses = max(THRESHOLD - 1 - counted_since_last_reset(burst.events), 0)
            for _ in range(guesses):
                await attacker.password_grant(burst.account.username, WRONG_PASSWORD)
            response = await attacker.password_grant(
                burst.account.username, burst.account.password
            )
            if response.status_code != 200:
                report.add(
                    burst.label,
                    f"after the lock ended, {guesses} wrong guesses locked the account again: "
                    "attempts made during the lock were counted",
                )
                report.trail(burst.label, await attacker.audit(burst.account.id))

        await asyncio.gather(*(after_the_lock(burst) for burst in bursts))
    assert report.broken == 0, str(report)


# -- 2 and 3. the password change ------------------------------------------------------------


def login_offsets(first: float) -> list[float]:
    """``first``, then gaps growing from CHANGE_FIRST_GAP by CHANGE_GAP_GROWTH each."""
    offsets = [first]
    gap = CHANGE_FIRST_GAP
    while len(offsets) < CHANGE_MAX_LOGINS:
        offsets.append(offsets[-1] + gap)
        gap *= CHANGE_GAP_GROWTH
    return offsets


async def while_in_flight(
    leader: Send, follower: Send, offsets: Sequence[float]
) -> tuple[httpx.Response, list[httpx.Response]]:
    """Sends ``leader``, then ``follower`` at each offset (seconds after the leader) until
    the leader's answer is in."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    lead = asyncio.create_task(leader())
    followers: list[asyncio.Task[httpx.Response]] = []
    for offset in offsets:
        await asyncio.wait([lead], timeout=max(start + offset - loop.time(), 0.0))
        if lead.done():
            break
        followers.append(asyncio.create_task(follower()))
    return await lead, list(await asyncio.gather(*followers))


async def race_a_password_change(
    attacker: Attacker,
    report: Report,
    label: str,
    account: Account,
    access_token: str,
    first: float,
) -> bool:
    """Changes the password while logins with the old one are in flight; then checks that
    nothing of the old password works and the new one does. False when the service refused
    the change (allowed, if it then leaves the old password in place)."""
    body = {"current_password": account.password, "new_password": NEW_PASSWORD}
    changed, answers = await while_in_flight(
        later(attacker.change_password, access_token, body),
        later(attacker.password_grant, account.username, account.password),
        login_offsets(first),
    )
    took = changed.elapsed.total_seconds()
    label = report.race(
        f"{label}; {len(answers)} logins, the change answered {changed.status_code} "
        f"after {took * 1000:.0f} ms)"
    )
    assert changed.status_code < 500, (label, changed.text)
    # Logins that read the new hash with the old password were wrong guesses; however many
    # there were, the account's lock is not what is judged here.
    unlocked = await attacker.request(
        "POST", f"/admin/users/{account.id}/unlock", token=attacker.race.root_token
    )
    assert unlocked.status_code == 204, unlocked.text
    if changed.status_code != 204:
        new = await attacker.password_grant(account.username, NEW_PASSWORD)
        if new.status_code != 400:
            report.add(label, f"a refused change set the new password ({new.status_code})")
        return False
    for answer in answers:
        if answer.status_code != 200:
            continue
        tokens = answer.json()
        me = await attacker.me(tokens["access_token"])
        if me.status_code != 401:
            report.add(
                label,
                f"an old-password login's access token still reads /auth/me ({me.status_code}) "
                "after the change's 204",
            )
        refreshed = await attacker.refresh(tokens["refresh_token"])
        if refreshed.status_code != 400 or refreshed.json() != INVALID_GRANT:
            report.add(
                label,
                f"an old-password login's refresh token still refreshes "
                f"({refreshed.status_code}) after the change's 204",
            )
    new = await attacker.password_grant(account.username, NEW_PASSWORD)
    old = await attacker.password_grant(account.username, account.password)
    if new.status_code != 200:
        report.add(label, f"the new password fails ({new.status_code}) after the change's 204")
    if old.status_code != 400:
        report.add(label, f"the old password logs in ({old.status_code}) after the change's 204")
    if label in report.problems:
        report.trail(label, await attacker.audit(account.id))
    return True


async def race_password_changes(
    attacker: Attacker, report: Report, accounts: Sequence[tuple[Account, str]]
) -> None:
    """One race per (account, its access token); at least one change must go through."""
    changes = 0
    for number, ((account, access_token), first) in enumerate(
        zip(accounts, CHANGE_FIRST_LOGIN_OFFSETS, strict=True), start=1
    ):
        label = f"change {number} (old-password logins from +{first * 1000:.0f} ms"
        changes += await race_a_password_change(
            attacker, report, label, account, access_token, first
        )
    assert changes, f"every password change was refused, so nothing was tested:\n{report}"


async def test_no_session_of_the_old_password_survives_a_password_change(
    race_server: RaceServer,
) -> None:
    """Finding 2: logins with the old password in flight while the owner changes it."""
    report = Report(
        "let the old password outlive its change",
        race_server.server.backend,
        len(CHANGE_FIRST_LOGIN_OFFSETS),
    )
    async with Attacker(race_server) as attacker:
        accounts: list[tuple[Account, str]] = []
        for _ in CHANGE_FIRST_LOGIN_OFFSETS:
            account = await attacker.register("change")
            tokens = await attacker.login(account)
            accounts.append((account, tokens["access_token"]))
        await race_password_changes(attacker, report, accounts)
    assert report.broken == 0, str(report)


async def test_a_pending_rehash_never_undoes_a_password_change(race_server: RaceServer) -> None:
    """Finding 3: the racing login's rehash of the old password must not overwrite the new
    hash (the accounts' hashes use OLD_HASHING; the server now hashes with its defaults)."""
    report = Report(
        "let a rehash undo or outlive a password change",
        race_server.server.backend,
        len(race_server.pending),
    )
    async with Attacker(race_server) as attacker:
        accounts = [(account, account.access_token) for account in race_server.pending]
        await race_password_changes(attacker, report, accounts)
    assert report.broken == 0, str(report)


# -- 4. the demotion -------------------------------------------------------------------------


async def admin_doors(
    attacker: Attacker, report: Report, label: str, account: Account, access_token: str
) -> None:
    """A token that carries admin permissions after the demotion must open no admin door."""
    listed = await attacker.request("GET", "/admin/users", token=access_token)
    if listed.status_code not in REFUSED:
        report.add(
            label,
            f"the demoted user read /admin/users ({listed.status_code}) with a token that "
            "carries admin permissions",
        )
    restored = await attacker.request(
        "PATCH", f"/admin/users/{account.id}", token=access_token,
        json={"roles": ["admin", "user"]},
    )
    if restored.status_code not in REFUSED:
        report.add(
            label,
            f"the demoted user gave themselves the admin role back ({restored.status_code})",
        )
        await attacker.set_roles(account, ["user"])


async def test_a_demoted_admin_keeps_no_admin_token(race_server: RaceServer) -> None:
    """Finding 4: the admin's own logins in flight across ``PATCH {"roles": ["user"]}``.

    Every other race sends the demotion just before a whole second: the cut-off is the next
    second, so a stale login that finishes after it is not even covered by it."""
    report = Report(
        "left a demoted admin with admin rights",
        race_server.server.backend,
        len(DEMOTION_BASE_OFFSETS),
    )
    async with Attacker(race_server) as attacker:
        for number, base in enumerate(DEMOTION_BASE_OFFSETS, start=1):
            account = await attacker.register("demoted")
            promoted = await attacker.set_roles(account, ["admin", "user"])
            assert promoted.status_code == 200, promoted.text
            promoted_at = time.time()
            earliest = (base + min(DEMOTION_LOGIN_OFFSETS)) * 1000
            label = f"demotion {number} (admin's logins from {earliest:+.0f} ms"
            if number % 2:
                fraction = DEMOTION_SECOND_FRACTIONS[number // 2 % len(DEMOTION_SECOND_FRACTIONS)]
                label += f", demoted at .{fraction * 1000:.0f} s"
                # In a later second than the promotion, whose cut-off is the next second.
                await until_second_fraction(promoted_at, fraction - LEAD_SECONDS)
            label = report.race(label + ")")
            demote = Shot(0.0, later(attacker.set_roles, account, ["user"]))
            login = later(attacker.password_grant, account.username, account.password)
            logins = [Shot(base + offset, login) for offset in DEMOTION_LOGIN_OFFSETS]
            demoted, *answers = await fire([demote, *logins])
            assert demoted.status_code == 200, (label, demoted.status_code, demoted.text)
            assert demoted.json()["roles"] == ["user"], demoted.text
            events = await attacker.audit(account.id)
            by_request = {event["request_id"]: event for event in events}
            demotion = by_request[request_id(demoted)]
            issued = [answer for answer in answers if answer.status_code == 200]
            for answer in issued:
                access_token = answer.json()["access_token"]
                scope = scope_of(access_token) & ADMIN_PERMISSIONS
                if not scope:
                    continue
                success = by_request.get(request_id(answer))
                if success is None or int(success["seq"]) > int(demotion["seq"]):
                    report.add(
                        label,
                        "a login that committed after the demotion "
                        f"({describe(success) if success else 'not audited'}, the demotion "
                        f"{describe(demotion)}) got a token with {sorted(scope)}",
                    )
                await admin_doors(attacker, report, label, account, access_token)
            # Refreshing any of these sessions now yields no admin permission either.
            for answer in issued:
                refreshed = await attacker.refresh(answer.json()["refresh_token"])
                if refreshed.status_code != 200:
                    continue
                scope = scope_of(refreshed.json()["access_token"])
                if scope & ADMIN_PERMISSIONS:
                    report.add(label, f"a refresh after the demotion got {sorted(scope)}")
                    await admin_doors(
                        attacker, report, label, account, refreshed.json()["access_token"]
                    )
            fresh = await attacker.login(account)
            me = await attacker.me(fresh["access_token"])
            if me.status_code != 200 or me.json()["roles"] != ["user"]:
                report.add(label, f"after the race the account is {me.text[:160]!r}")
            if scope_of(fresh["access_token"]) != USER_PERMISSIONS:
                report.add(label, f"a later login got the scope {fresh['scope']!r}")
            if label in report.problems:
                report.trail(label, await attacker.audit(account.id))
    assert report.broken == 0, str(report)


# -- 5. the refresh token --------------------------------------------------------------------


async def test_one_refresh_token_yields_at_most_one_live_successor(
    race_server: RaceServer,
) -> None:
    """Finding 5: the same refresh token presented several times at once."""
    report = Report("let one refresh token fork", race_server.server.backend, REFRESH_RACES)
    async with Attacker(race_server) as attacker:
        for number in range(1, REFRESH_RACES + 1):
            account = await attacker.register("refresh")
            first = await attacker.login(account)
            label = report.race(f"refresh {number}")
            spread = 0.001 * (number % 3)
            shot = later(attacker.refresh, first["refresh_token"])
            answers = await fire([Shot(spread * n, shot) for n in range(CONCURRENT_REFRESHES)])
            statuses = sorted(answer.status_code for answer in answers)
            if any(status not in (200, 400) for status in statuses):
                report.add(label, f"concurrent refreshes were answered {statuses}")
            live = 0
            for answer in answers:
                if answer.status_code != 200:
                    continue
                me = await attacker.me(answer.json()["access_token"])
                again = await attacker.refresh(answer.json()["refresh_token"])
                live += me.status_code == 200 or again.status_code == 200
            if live > 1:
                report.add(label, f"one refresh token yielded {live} live successors")
            if label in report.problems:
                report.trail(label, await attacker.audit(account.id))
    assert report.broken == 0, str(report)
