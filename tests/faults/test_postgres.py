"""PostgreSQL taken away from a live server under load: stopped and restarted, or frozen.

One worker, on a PostgreSQL server of the test's own, with a load of clients registering,
logging in and writing notes (``tests.faults.load``) while the fault strikes:

- ``postgres-stopped``: a fast stop (SIGINT to the postmaster) mid-load, and a start on the
  same port. Every answer is a 2xx/4xx or a 503 with ``Retry-After``, never a 500 and never
  a hang (the clients' timeout is the bound); readiness is 503 during the outage; the log
  says ``storage_unavailable`` with the driver's error class and code, never a statement or
  its parameters; the same process serves again by itself, and every write it acknowledged
  is there afterwards.
- ``postgres-frozen``: SIGSTOP to the postmaster and every backend (connections are
  accepted by the kernel, nothing answers). A login, a note write and ``/auth/me`` each
  answer 503 with ``Retry-After`` within ``BASTION_DATABASE_TIMEOUT`` plus the row's slack
  (1 s), measured at the client; ``/health/live`` stays 200; SIGCONT and it recovers.

What the tests check is each fault's row of docs/operations.md (``expected``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.api import FAST_HASHING_ENV
from tests.e2e.conftest import LiveServer, assert_problem, running, serve_command
from tests.e2e.outages import migrated_env, own_postgres_server, ready_again
from tests.faults.checks import (
    assert_answer,
    assert_no_statement_logged,
    assert_readiness,
    logged,
    row_names,
)
from tests.faults.load import ROOMY_LIMITS_ENV, Ledger, Load, verify
from tests.faults.probe import prober
from tests.faults.table import FaultRow, expected
from tests.identity.helpers import PASSWORD
from tests.servers.freeze import frozen
from tests.servers.postgres import PostgresServer

DATABASE_TIMEOUT_SECONDS = 2.0
# The row's slack: an answer within BASTION_DATABASE_TIMEOUT (+1 s) of the first storage step.
SLACK_SECONDS = 1.0
BOUND_SECONDS = DATABASE_TIMEOUT_SECONDS + SLACK_SECONDS
RecordProperty = Callable[[str, object], None]
REFUSED_WHEN_FROZEN = ("login", "write", "me", "ready")
NOTES_BEFORE_THE_FAULT = 10
NOTES_AFTER_RECOVERY = 10
# After readiness is 200 again, answers still in flight may be 503s for this long.
SETTLE_SECONDS = BOUND_SECONDS


@dataclass
class Deployment:
    postgres: PostgresServer
    server: LiveServer


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    with own_postgres_server() as postgres:
        env = migrated_env(
            postgres,
            tmp_path,
            database_timeout=str(DATABASE_TIMEOUT_SECONDS),
            **FAST_HASHING_ENV,
            **ROOMY_LIMITS_ENV,
        )
        with running(serve_command, root=tmp_path, env=env, backend="postgresql") as server:
            yield Deployment(postgres, server)


def seconds(response: httpx.Response) -> float:
    return round(response.elapsed.total_seconds(), 2)


def assert_refused_in_time(row: FaultRow, response: httpx.Response) -> None:
    """A 503 problem as the row says (``Retry-After``), within the bound."""
    assert_problem(response, 503, PASSWORD)
    assert_answer(row, response)
    assert seconds(response) <= BOUND_SECONDS, (response.request.url.path, seconds(response))


def assert_load_as_documented(row: FaultRow, ledger: Ledger, recovered_at: float) -> None:
    """Every answer the load got: a 2xx or 4xx, or a 503 as the row says, never a 500 or a
    hang; the outage was seen (503s), and it was over once readiness said so."""
    summary = ledger.summary()
    ledger.assert_no_server_error()
    assert not ledger.transport_errors(), (summary, ledger.transport_errors()[:5])
    unavailable = ledger.unavailable()
    assert unavailable, f"the load never met the outage: {summary}"
    assert row.status_cell_allows(503), row
    for answer in unavailable:
        assert (answer.retry_after or "").isdigit() == row.retry_after, answer
    settled = recovered_at + SETTLE_SECONDS
    late = [a for a in ledger.answers if a.at >= settled and a.status == 503]
    assert not late, (f"503s after recovery: {late[:5]}", summary)


def assert_outage_logged(row: FaultRow, records: list[dict[str, Any]]) -> None:
    """The row's event, for the database, each naming a cause (the driver's error class, or
    its code where it has one) that the row names."""
    causes: set[tuple[str, str]] = set()
    for report in logged(row, records):
        assert report.get("dependency") == "database", report
        assert isinstance(report.get("error"), str) and report["error"], report
        causes.add((report["error"], str(report.get("code"))))
    undocumented = {cause for cause in causes if not any(row_names(row, c) for c in cause)}
    assert not undocumented, f"causes the row does not name: {undocumented} (of {causes})"


def stop_and_restart_under_load(
    deployment: Deployment, *, clients: int, cycles: int, outage_seconds: float
) -> None:
    row = expected("postgres-stopped")
    postgres, server = deployment.postgres, deployment.server
    pid = server.process.pid
    with prober(server, BOUND_SECONDS) as probe, Load(
        server.base_url, clients=clients, reads=True, timeout=BOUND_SECONDS
    ) as load:
        token = probe.token()
        load.wait_for_notes(NOTES_BEFORE_THE_FAULT)
        for _ in range(cycles):
            postgres.stop()  # fast shutdown: open connections are terminated (57P01)
            outage_ends = time.monotonic() + outage_seconds
            assert_readiness(row, probe.ready())
            assert_refused_in_time(row, probe.login())
            assert_refused_in_time(row, probe.write(token))
            assert_answer(row, probe.live())
            time.sleep(max(outage_ends - time.monotonic(), 0))
            assert_readiness(row, probe.ready())  # still out, however long it takes

            postgres.start()  # same data directory, same port
            ready_again(probe.http)
            recovered_at = time.monotonic()
            probe.assert_serves()
            load.wait_for_notes(len(load.ledger.notes) + NOTES_AFTER_RECOVERY)
    ledger = load.ledger

    assert server.process.poll() is None and server.process.pid == pid, "not the same process"
    assert_load_as_documented(row, ledger, recovered_at)
    assert_outage_logged(row, server.log_records())
    assert_no_statement_logged(server.log_text(), ledger, postgres.url(""))
    verified = verify(server.base_url, ledger)
    assert verified.acknowledged == len(ledger.notes) > NOTES_BEFORE_THE_FAULT


def test_postgres_stopped_mid_load_gives_503s_and_recovers_without_a_restart(
    deployment: Deployment,
) -> None:
    stop_and_restart_under_load(deployment, clients=4, cycles=1, outage_seconds=2.0)


@pytest.mark.full_faults
def test_postgres_stopped_twice_for_longer_under_a_heavier_load(
    deployment: Deployment,
) -> None:
    stop_and_restart_under_load(deployment, clients=8, cycles=2, outage_seconds=6.0)


def freeze_under_load(
    deployment: Deployment, record_property: RecordProperty, *, clients: int, rounds: int
) -> None:
    row = expected("postgres-frozen")
    postgres, server = deployment.postgres, deployment.server
    with prober(server, BOUND_SECONDS) as probe, Load(
        server.base_url, clients=clients, reads=True, timeout=BOUND_SECONDS
    ) as load:
        token = probe.token()
        load.wait_for_notes(NOTES_BEFORE_THE_FAULT)
        timings: dict[str, list[float]] = {}
        with frozen(postgres), ThreadPoolExecutor(max_workers=4) as pool:
            for _ in range(rounds):
                # At once, as clients would: each must be refused within the bound.
                refused = dict(zip(REFUSED_WHEN_FROZEN, pool.map(
                    lambda request: request(),
                    (probe.login, lambda: probe.write(token), lambda: probe.me(token),
                     probe.ready),
                ), strict=True))
                for name, response in refused.items():
                    if name == "ready":
                        assert_readiness(row, response)
                        assert seconds(response) <= BOUND_SECONDS, seconds(response)
                    else:
                        assert_refused_in_time(row, response)
                    timings.setdefault(name, []).append(seconds(response))
                assert_answer(row, probe.live())
        ready_again(probe.http)
        recovered_at = time.monotonic()
        probe.assert_serves()
        load.wait_for_notes(len(load.ledger.notes) + NOTES_AFTER_RECOVERY)
    ledger = load.ledger
    record_property("seconds_to_503", timings)
    record_property("load", ledger.summary())

    assert_load_as_documented(row, ledger, recovered_at)
    assert_outage_logged(row, server.log_records())
    assert_no_statement_logged(server.log_text(), ledger, postgres.url(""))
    verify(server.base_url, ledger)


def test_postgres_frozen_answers_503_within_the_database_timeout(
    deployment: Deployment, record_property: RecordProperty
) -> None:
    freeze_under_load(deployment, record_property, clients=4, rounds=1)


@pytest.mark.full_faults
def test_postgres_frozen_for_several_rounds_under_a_heavier_load(
    deployment: Deployment, record_property: RecordProperty
) -> None:
    freeze_under_load(deployment, record_property, clients=8, rounds=3)
