"""A PostgreSQL outage under the real server: readiness says 503 quickly, then recovers alone.

The PostgreSQL server here is this test's own (the session one is shared and must not stop).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import (
    LiveServer,
    assert_problem,
    children_of,
    migrate,
    running,
    serve_command,
    service_env,
)
from tests.servers.postgres import PostgresServer

DATABASE_TIMEOUT_SECONDS = 2
ANSWER_WITHIN_SECONDS = 10.0
RECOVER_WITHIN_SECONDS = 15.0


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.destroy()


def _migrated_env(own_postgres: PostgresServer, tmp_path: Path) -> dict[str, str]:
    """The service's environment on a fresh, migrated database of ``own_postgres``."""
    name = asyncio.run(own_postgres.create_database())
    env = service_env(
        tmp_path / "data",
        database_url=own_postgres.url(name),
        database_timeout=str(DATABASE_TIMEOUT_SECONDS),
    )
    migrate(env, tmp_path)
    return env


@pytest.fixture
def server_on_own_postgres(own_postgres: PostgresServer, tmp_path: Path) -> Iterator[LiveServer]:
    env = _migrated_env(own_postgres, tmp_path)
    with running(serve_command, root=tmp_path, env=env, backend="postgresql") as server:
        yield server


def _ready(client: httpx.Client) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = client.get("/health/ready")
    return response, time.monotonic() - started


def _ready_again(client: httpx.Client) -> httpx.Response:
    """Polls readiness until it is 200 again (recovery without a restart), or fails."""
    deadline = time.monotonic() + RECOVER_WITHIN_SECONDS
    statuses: list[int] = []
    while time.monotonic() < deadline:
        response, _ = _ready(client)
        statuses.append(response.status_code)
        if response.status_code == 200:
            return response
        time.sleep(0.25)
    raise AssertionError(f"not ready again within {RECOVER_WITHIN_SECONDS} s: {statuses}")


def test_readiness_follows_the_database_and_recovers_on_its_own(
    own_postgres: PostgresServer, server_on_own_postgres: LiveServer
) -> None:
    # The client timeout is the hard bound: a hanging readiness probe fails the test.
    with server_on_own_postgres.client(timeout=ANSWER_WITHIN_SECONDS) as client:
        response, _ = _ready(client)
        assert response.status_code == 200, response.text

        own_postgres.stop()
        for _ in range(3):  # not only the first probe: the pool must not hand out dead links
            response, elapsed = _ready(client)
            assert_problem(response, 503, own_postgres.url(""), "postgres@")
            assert elapsed < ANSWER_WITHIN_SECONDS
            assert response.headers.get("retry-after", "").isdigit()

        # The process itself still serves; only readiness reflects the outage.
        assert client.get("/health/live").status_code == 200

        own_postgres.start()  # same data dir, same port
        response = _ready_again(client)
        assert response.json() == {"status": "ok"}

    # The outage was logged as JSON lines like everything else; no credential-bearing URL.
    records = server_on_own_postgres.log_records()
    assert [r for r in records if r.get("status") == 503]
    assert "postgres@" not in server_on_own_postgres.log_text()


def _postgres_processes(server: PostgresServer) -> list[int]:
    """The postmaster and its children (backends, checkpointer, ...)."""
    postmaster = int((server.data_dir / "postmaster.pid").read_text().splitlines()[0])
    return [postmaster, *children_of(postmaster)]


def _signal_all(pids: list[int], signal_number: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal_number)


def test_a_frozen_database_gives_503_within_the_timeout_not_a_hang(
    own_postgres: PostgresServer, server_on_own_postgres: LiveServer
) -> None:
    """A database that accepts connections but never answers is the case a timeout is for."""
    with server_on_own_postgres.client(timeout=ANSWER_WITHIN_SECONDS) as client:
        response, _ = _ready(client)
        assert response.status_code == 200, response.text

        frozen = _postgres_processes(own_postgres)
        _signal_all(frozen, signal.SIGSTOP)
        try:
            for _ in range(2):
                response, elapsed = _ready(client)
                assert_problem(response, 503)
                assert elapsed < DATABASE_TIMEOUT_SECONDS + 3, elapsed
            assert client.get("/health/live").status_code == 200
        finally:
            # Under root the server runs via runuser, which stops itself when its child stops
            # (job control) and must be continued too, or it never reaps the postmaster.
            wrapper = [own_postgres.process.pid] if own_postgres.process is not None else []
            _signal_all([*frozen, *wrapper], signal.SIGCONT)

        response = _ready_again(client)


def test_serve_starts_while_the_database_is_down_and_finishes_starting_when_it_returns(
    own_postgres: PostgresServer, tmp_path: Path
) -> None:
    """``bastion serve`` used to exit (code 3) when PostgreSQL was down at start: its start-up
    work needs the database. Now it serves: live, not ready, and every token request a 503
    (the revocations are not restored yet), until the database answers."""
    env = _migrated_env(own_postgres, tmp_path)
    own_postgres.stop()
    with running(serve_command, root=tmp_path, env=env, backend="postgresql") as server:
        with server.client(timeout=ANSWER_WITHIN_SECONDS) as client:
            assert client.get("/health/live").status_code == 200
            assert_problem(client.get("/health/ready"), 503)
            login = client.post(
                "/auth/token",
                data={"grant_type": "password", "username": "nobody", "password": "x" * 20},
            )
            assert_problem(login, 503, own_postgres.url(""))
            me = client.get("/auth/me", headers={"Authorization": "Bearer a.b.c"})
            assert_problem(me, 503)

            own_postgres.start()
            assert _ready_again(client).json() == {"status": "ok"}
            registered = client.post(
                "/auth/register",
                json={"username": "ann", "email": "ann@example.com", "age": 30,
                      "password": "a long enough passphrase 7"},
            )
            assert registered.status_code == 201, registered.text
            token = client.post(
                "/auth/token",
                data={"grant_type": "password", "username": "ann",
                      "password": "a long enough passphrase 7"},
            )
            assert token.status_code == 200, token.text
            bearer = {"Authorization": f"Bearer {token.json()['access_token']}"}
            assert client.get("/auth/me", headers=bearer).status_code == 200
        events = [record.get("event") for record in server.log_records()]
        assert "start_deferred_until_the_database_answers" in events
        assert "start_completed" in events
