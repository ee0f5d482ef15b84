"""A PostgreSQL outage under the real server: readiness says 503 quickly, then recovers alone.

The PostgreSQL server here is this test's own (the session one is shared and must not stop).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import (
    LiveServer,
    assert_problem,
    running,
    serve_command,
)
from tests.e2e.outages import RECOVER_WITHIN_SECONDS, migrated_env, own_postgres_server
from tests.e2e.outages import ready_again as _ready_again
from tests.faults.checks import assert_answer, assert_readiness, logged
from tests.faults.table import expected
from tests.servers.freeze import frozen
from tests.servers.freeze import postgres_processes as _postgres_processes
from tests.servers.freeze import signal_all as _signal_all
from tests.servers.postgres import PostgresServer

# The helpers' old names, for whoever imports them from here.
__all__ = ["RECOVER_WITHIN_SECONDS", "_postgres_processes", "_signal_all"]

DATABASE_TIMEOUT_SECONDS = 2
ANSWER_WITHIN_SECONDS = 10.0


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    with own_postgres_server() as server:
        yield server


def _migrated_env(own_postgres: PostgresServer, tmp_path: Path) -> dict[str, str]:
    """The service's environment on a fresh, migrated database of ``own_postgres``."""
    return migrated_env(
        own_postgres, tmp_path, database_timeout=str(DATABASE_TIMEOUT_SECONDS)
    )


@pytest.fixture
def server_on_own_postgres(own_postgres: PostgresServer, tmp_path: Path) -> Iterator[LiveServer]:
    env = _migrated_env(own_postgres, tmp_path)
    with running(serve_command, root=tmp_path, env=env, backend="postgresql") as server:
        yield server


def _ready(client: httpx.Client) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = client.get("/health/ready")
    return response, time.monotonic() - started


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


def test_a_frozen_database_gives_503_within_the_timeout_not_a_hang(
    own_postgres: PostgresServer, server_on_own_postgres: LiveServer
) -> None:
    """A database that accepts connections but never answers is the case a timeout is for."""
    with server_on_own_postgres.client(timeout=ANSWER_WITHIN_SECONDS) as client:
        response, _ = _ready(client)
        assert response.status_code == 200, response.text

        with frozen(own_postgres):
            for _ in range(2):
                response, elapsed = _ready(client)
                assert_problem(response, 503)
                assert elapsed < DATABASE_TIMEOUT_SECONDS + 3, elapsed
            assert client.get("/health/live").status_code == 200

        response = _ready_again(client)


def test_serve_starts_while_the_database_is_down_and_finishes_starting_when_it_returns(
    own_postgres: PostgresServer, tmp_path: Path
) -> None:
    """``bastion serve`` used to exit (code 3) when PostgreSQL was down at start: its start-up
    work needs the database. Now it serves: live, not ready, and every token request a 503
    (the revocations are not restored yet), until the database answers. What operators see
    is the fault table's row ``postgres-down-at-start`` (docs/operations.md)."""
    row = expected("postgres-down-at-start")
    env = _migrated_env(own_postgres, tmp_path)
    own_postgres.stop()
    with running(serve_command, root=tmp_path, env=env, backend="postgresql") as server:
        with server.client(timeout=ANSWER_WITHIN_SECONDS) as client:
            live = client.get("/health/live")
            assert live.status_code == 200
            assert_answer(row, live)
            ready = client.get("/health/ready")
            assert_problem(ready, 503)
            assert_readiness(row, ready)
            login = client.post(
                "/auth/token",
                data={"grant_type": "password", "username": "nobody", "password": "x" * 20},
            )
            assert_problem(login, 503, own_postgres.url(""))
            me = client.get("/auth/me", headers={"Authorization": "Bearer a.b.c"})
            assert_problem(me, 503)
            for refused in (login, me):
                assert_answer(row, refused)

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
        records = server.log_records()
        logged(row, records)
        # The recovery the row promises, by the event it names.
        assert "`start_completed`" in row.recovery, row.recovery
        assert "start_completed" in [record.get("event") for record in records]
