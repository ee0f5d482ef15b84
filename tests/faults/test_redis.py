"""Redis taken away from two workers under load: killed, or restarted without its data.

``bastion serve --workers 2`` on a Redis of the test's own (revocations and rate limits),
with a load of clients registering, logging in and writing notes (``tests.faults.load``):

- ``redis-killed``: SIGKILL, no shutdown. Bearer requests, logins and revocations answer 503
  with ``Retry-After`` (the checks fail closed), readiness 503, ``/health/live`` 200, the log
  says ``storage_unavailable`` for ``redis``. Redis comes back with its data (its last
  snapshot, taken just before the kill, as with RDB persistence) on the same port, and the
  same workers serve again by themselves; a token revoked before the snapshot stays refused,
  and so does one revoked after it (which the snapshot lacks), by every worker: the first
  check finds a Redis with another ``run_id`` than its restore marker names, restores the
  revocations from the database, and the log says so.
- ``redis-restarted-empty``: Redis stopped and started again without its data. A token
  revoked (logout) before the loss stays refused, 401, by every worker (fresh connections
  until both have answered), while a valid token is still accepted; the first check that
  finds Redis empty restores the revocations from the database, and the log says so.

Each test checks its row of docs/operations.md (``expected``). The reduced runs use SQLite,
the full ones (``BASTION_FAULTS=full``) PostgreSQL, longer outages and more clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
import redis

from tests.e2e.api import FAST_HASHING_ENV
from tests.e2e.conftest import (
    LiveServer,
    assert_problem,
    children_of,
    logger_of,
    migrate,
    running,
    service_env,
)
from tests.e2e.test_rate_limits import (
    WORKERS,
    burst,
    kill_redis,
    wait_for_workers,
    workers_command,
)
from tests.faults.checks import (
    assert_answer,
    assert_no_statement_logged,
    assert_readiness,
    logged,
)
from tests.faults.load import ROOMY_LIMITS_ENV, Ledger, Load, verify
from tests.faults.probe import Prober, prober
from tests.faults.table import FaultRow, expected
from tests.identity.helpers import PASSWORD, bearer
from tests.servers.postgres import PostgresServer
from tests.servers.redis import RedisServer

# Redis answers or fails within 2 s (connect and read timeouts, bastion.storage.redis_client);
# a retry of a dropped connection may add one more attempt.
BOUND_SECONDS = 5.0
RECOVER_WITHIN_SECONDS = 15.0
POLL_SECONDS = 0.2
NOTES_BEFORE_THE_FAULT = 10
NOTES_AFTER_RECOVERY = 10
# The revocation store's keys (bastion.storage.redis_revocations).
REVOCATIONS_PREFIX = "bastion:revoked:"
# Where redis-server keeps its snapshot (its --dir, the default file name).
SNAPSHOT = "dump.rdb"
# Bursts of fresh connections until both workers have answered; see test_rate_limits.
BURST = 20
MAX_BURSTS = 10


@dataclass
class Deployment:
    server: LiveServer
    redis: RedisServer
    workers: set[int]


@pytest.fixture(params=[pytest.param("sqlite"), pytest.param("postgresql",
                                                                marks=pytest.mark.full_faults)])
def deployment(
    request: pytest.FixtureRequest, tmp_path: Path, own_redis: RedisServer
) -> Iterator[Deployment]:
    """Two workers on ``own_redis``: on SQLite (the reduced run) or on a fresh database of
    the session's PostgreSQL server (the full run; that server is not the one at fault)."""
    env = service_env(
        tmp_path / "data", redis_url=own_redis.url, **FAST_HASHING_ENV, **ROOMY_LIMITS_ENV
    )
    with contextlib.ExitStack() as cleanup:
        if request.param == "postgresql":
            postgres: PostgresServer = request.getfixturevalue("postgres_server")
            name = asyncio.run(postgres.create_database())
            cleanup.callback(lambda: asyncio.run(postgres.drop_database(name)))
            env["BASTION_DATABASE_URL"] = postgres.url(name)
            migrate(env, tmp_path)
        server = cleanup.enter_context(
            running(workers_command(WORKERS), root=tmp_path, env=env, backend=request.param)
        )
        wait_for_workers(server)
        yield Deployment(server, own_redis, set(children_of(server.process.pid)))


def assert_same_processes(deployment: Deployment) -> None:
    """Recovered by itself: neither the server nor any worker was restarted."""
    server = deployment.server
    assert server.process.poll() is None, server.log_tail()
    assert set(children_of(server.process.pid)) == deployment.workers, server.log_tail()


def recovered(probe: Prober) -> float:
    """Polls until readiness is 200 and a login works again; when that was."""
    deadline = time.monotonic() + RECOVER_WITHIN_SECONDS
    seen: list[tuple[int, int]] = []
    while time.monotonic() < deadline:
        ready = probe.ready().status_code
        login = probe.login().status_code
        seen.append((ready, login))
        if (ready, login) == (200, 200):
            return time.monotonic()
        assert {ready, login} <= {200, 503}, seen
        time.sleep(POLL_SECONDS)
    raise AssertionError(f"not recovered within {RECOVER_WITHIN_SECONDS} s: {seen}")


def assert_load_as_documented(ledger: Ledger) -> None:
    """No 5xx but 503, each 503 with ``Retry-After``, never a hang."""
    ledger.assert_no_server_error()
    assert not ledger.transport_errors(), (ledger.summary(), ledger.transport_errors()[:5])
    for answer in ledger.unavailable():
        assert (answer.retry_after or "").isdigit(), answer


def refused_by_every_worker(
    server: LiveServer, token: str, row: FaultRow, first_address: int,
    headers: dict[str, str] | None = None,
) -> Counter[int]:
    """Fresh connections with ``token`` (or ``headers``: a session cookie) until both
    workers have answered; each answer as the row says for a revoked token (401, no
    ``Retry-After``). Each burst comes from an address of its own, so no per-address count
    runs out."""
    answered_by: Counter[int] = Counter()
    for number in range(MAX_BURSTS):
        responses, held = asyncio.run(
            burst(server, BURST, "GET", "/auth/me",
                  address=f"127.0.{first_address}.{number + 1}",
                  headers=headers or bearer(token))
        )
        for response in responses:
            assert_problem(response, 401, token)
            assert_answer(row, response)
        answered_by += held
        if len(answered_by) == WORKERS:
            return answered_by
    raise AssertionError(f"one worker took every connection: {answered_by}")


def session_revoked_in(server: RedisServer, token: str) -> bool:
    """Whether Redis holds the revocation of ``token``'s session (the store's key for it)."""
    sid = jwt.decode(token, options={"verify_signature": False})["sid"]
    with redis.Redis.from_url(server.url) as client:
        return bool(client.exists(f"{REVOCATIONS_PREFIX}sid:{sid}"))


def snapshot(server: RedisServer) -> None:
    """What a Redis with RDB persistence would come back with: its data as of now."""
    with redis.Redis.from_url(server.url) as client:
        assert client.save()


# -- redis-killed -------------------------------------------------------------------------


def kill_under_load(deployment: Deployment, *, clients: int, outage_seconds: float) -> None:
    row = expected("redis-killed")
    server, own_redis = deployment.server, deployment.redis
    with prober(server, BOUND_SECONDS) as probe, Load(
        server.base_url, clients=clients, reads=True, timeout=BOUND_SECONDS
    ) as load:
        revoked, valid = probe.token(), probe.token()
        logout = probe.request("POST", "/auth/logout", headers=bearer(revoked))
        assert logout.status_code == 204, logout.text
        load.wait_for_notes(NOTES_BEFORE_THE_FAULT)

        snapshot(own_redis)
        # Revoked after the snapshot (SAVE has returned): a Redis back from it has the restore
        # marker but not this logout. (Not asserted after the start: the load's first check
        # may restore it at once.)
        late = probe.token()
        late_logout = probe.request("POST", "/auth/logout", headers=bearer(late))
        assert late_logout.status_code == 204, late_logout.text
        kill_redis(own_redis)
        outage_ends = time.monotonic() + outage_seconds
        revoke = probe.request("POST", "/auth/revoke", data={"token": valid})
        for response in (probe.login(), probe.me(valid), probe.write(valid), revoke):
            assert_problem(response, 503, PASSWORD, valid, own_redis.url)
            assert_answer(row, response)
        assert_readiness(row, probe.ready())
        live = probe.live()
        assert live.status_code == 200
        assert_answer(row, live)
        time.sleep(max(outage_ends - time.monotonic(), 0))

        assert (own_redis.root / SNAPSHOT).exists(), "no snapshot to come back with"
        own_redis.start()  # same port, same directory: it loads the snapshot
        recovered(probe)
        # A revoked token answers as after any loss of Redis's data (the empty restart's row).
        refused_by_every_worker(server, late, expected("redis-restarted-empty"), first_address=3)
        assert session_revoked_in(own_redis, late), "the late logout was not restored"
        load.wait_for_notes(len(load.ledger.notes) + NOTES_AFTER_RECOVERY)
        after = [probe.me(token) for token in (valid, revoked, late)]
    ledger = load.ledger

    assert after[0].status_code == 200, after[0].text
    assert_problem(after[1], 401, revoked)
    assert_problem(after[2], 401, late)
    assert_same_processes(deployment)
    assert_load_as_documented(ledger)
    assert ledger.unavailable(), f"the load never met the outage: {ledger.summary()}"
    records = server.log_records()
    reports = logged(row, records)
    assert {report.get("dependency") for report in reports} == {"redis"}, reports
    # Back with its snapshot, which may lack revocations: they were restored.
    assert restores(records), "no restore logged after the restart from the snapshot"
    for restore in restores(records):
        assert logger_of(restore) == "bastion.storage.revocations", restore
        assert restore.get("level") == "warning", restore
    assert_no_statement_logged(server.log_text(), ledger, own_redis.url, valid, revoked, late)
    verify(server.base_url, ledger)


def restores(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    event = expected("redis-restarted-empty").log_event
    return [record for record in records if record.get("event") == event]


def test_redis_killed_under_load_fails_closed_and_recovers_with_its_data(
    deployment: Deployment,
) -> None:
    kill_under_load(deployment, clients=4, outage_seconds=2.0)


# -- redis-restarted-empty ------------------------------------------------------------------


def restart_empty(deployment: Deployment, *, clients: int) -> None:
    row = expected("redis-restarted-empty")
    server, own_redis = deployment.server, deployment.redis
    with prober(server, BOUND_SECONDS) as probe, Load(
        server.base_url, clients=clients, timeout=BOUND_SECONDS
    ) as load:
        revoked, valid = probe.token(), probe.token()
        cookie = {"Cookie": probe.session_cookie(), "Sec-Fetch-Site": "same-origin"}
        # Both workers accept the token and the cookie first (and may remember them).
        asyncio.run(burst(server, BURST, "GET", "/auth/me", headers=bearer(revoked)))
        asyncio.run(burst(server, BURST, "GET", "/auth/me", headers=cookie))
        logout = probe.request("POST", "/auth/logout", headers=bearer(revoked))
        assert logout.status_code == 204, logout.text
        signed_out = probe.request("POST", "/auth/logout", headers=cookie)
        assert signed_out.status_code == 403, signed_out.text  # no CSRF token: refused
        listed = probe.request("GET", "/auth/sessions", headers=cookie).json()["items"]
        [cookie_session] = [item["id"] for item in listed if item["current"]]
        ended = probe.request(
            "DELETE", f"/auth/sessions/{cookie_session}", headers=bearer(valid)
        )
        assert ended.status_code == 204, ended.text
        load.wait_for_notes(NOTES_BEFORE_THE_FAULT)

        own_redis.stop()  # no persistence: what it held is gone
        assert not (own_redis.root / SNAPSHOT).exists(), "Redis would come back with data"
        own_redis.start()

        # The first checks after the loss: the revoked token refused everywhere, the other
        # accepted, readiness fine.
        refused_by_every_worker(server, revoked, row, first_address=2)
        refused_by_every_worker(server, revoked, row, first_address=3, headers=cookie)
        me = probe.me(valid)
        assert me.status_code == 200, me.text
        assert_answer(row, me)
        assert_readiness(row, probe.ready())
        assert session_revoked_in(own_redis, revoked), "the logout was not restored into Redis"
        load.wait_for_notes(len(load.ledger.notes) + NOTES_AFTER_RECOVERY)
    ledger = load.ledger

    assert_same_processes(deployment)
    assert_load_as_documented(ledger)
    records = server.log_records()
    for restore in logged(row, records):
        assert logger_of(restore) == "bastion.storage.revocations", restore
        assert restore.get("level") == "warning", restore
    verify(server.base_url, ledger)


def test_redis_restarted_empty_keeps_revoked_tokens_refused_by_every_worker(
    deployment: Deployment,
) -> None:
    restart_empty(deployment, clients=2)


@pytest.mark.full_faults
def test_redis_killed_for_longer_under_a_heavier_load(deployment: Deployment) -> None:
    kill_under_load(deployment, clients=8, outage_seconds=6.0)
