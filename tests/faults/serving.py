"""The fault suite's servers: ``bastion serve`` on a backend, with 1 or 2 workers, killed
and started again on the same data.

A server here is the e2e suite's (``tests.e2e.conftest.running``) with the environment a
load needs (cheap hashing, roomy limits); a restart runs in a directory of its own, so that
its log holds only its own lines, on the same data dir or database.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.api import FAST_HASHING_ENV
from tests.e2e.conftest import (
    Command,
    LiveServer,
    children_of,
    run_bastion,
    running,
    serve_command,
    service_env,
)
from tests.e2e.outages import migrated_env
from tests.e2e.test_rate_limits import WORKERS, wait_for_workers, workers_command
from tests.faults.load import ROOMY_LIMITS_ENV
from tests.servers.freeze import signal_all
from tests.servers.postgres import PostgresServer
from tests.servers.redis import RedisServer

GONE_WITHIN_SECONDS = 10.0


@dataclass(frozen=True)
class Setup:
    """What a fault test runs: a backend and a number of workers (2 need Redis)."""

    backend: str
    workers: int = 1

    @property
    def id(self) -> str:
        return f"{self.backend}-{self.workers}-worker{'s' if self.workers > 1 else ''}"

    def command(self) -> Command:
        return serve_command if self.workers == 1 else workers_command(self.workers)


def setups(reduced: Setup, *full: Setup) -> list[object]:
    """``pytest.mark.parametrize`` values: ``reduced`` in every run, ``full`` only in the
    full one (``make faults``)."""
    return [
        pytest.param(reduced, id=reduced.id),
        *(pytest.param(setup, id=setup.id, marks=pytest.mark.full_faults) for setup in full),
    ]


def fault_env(
    root: Path, setup: Setup, request: pytest.FixtureRequest, **variables: str
) -> dict[str, str]:
    """The service's environment for ``setup`` under ``root``: its own SQLite data dir, or a
    fresh migrated database of the session's PostgreSQL; a Redis of the test's own for 2
    workers; cheap hashing and roomy limits for a load; ``variables`` as ``BASTION_*``."""
    values = {**FAST_HASHING_ENV, **ROOMY_LIMITS_ENV, **variables}
    if setup.workers > 1:
        redis: RedisServer = request.getfixturevalue("own_redis")
        values["redis_url"] = redis.url
    if setup.backend == "postgresql":
        postgres: PostgresServer = request.getfixturevalue("postgres_server")
        return migrated_env(postgres, root, **values)
    return service_env(root / "data", **values)


@contextlib.contextmanager
def serving(root: Path, setup: Setup, env: dict[str, str]) -> Iterator[LiveServer]:
    """``setup``'s server on ``env``, every worker serving; stopped at the end (if alive)."""
    assert setup.workers in (1, WORKERS), setup
    with running(setup.command(), root=root, env=env, backend=setup.backend) as server:
        if setup.workers > 1:
            wait_for_workers(server)
        yield server


def kill_hard(server: LiveServer) -> None:
    """SIGKILL to the server and every worker at once, as the OOM killer or a lost host:
    nothing gets to finish, flush or clean up."""
    pids = [server.process.pid, *children_of(server.process.pid)]
    signal_all(pids, signal.SIGKILL)
    server.process.wait(timeout=GONE_WITHIN_SECONDS)
    deadline = time.monotonic() + GONE_WITHIN_SECONDS
    while any(_alive(pid) for pid in pids):
        assert time.monotonic() < deadline, f"not all of {pids} died"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting to be reaped does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def audit_verifies(env: dict[str, str], root: Path) -> None:
    """``bastion audit verify`` on the server's database exits 0: the chain is whole."""
    result = run_bastion("audit", "verify", env=env, cwd=root)
    assert result.returncode == 0, f"audit verify: {result.stdout}\n{result.stderr}"
