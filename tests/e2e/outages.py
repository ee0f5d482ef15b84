"""A test's own PostgreSQL server, taken away from a live service and given back.

Shared by the outage tests of ``tests/e2e`` and the fault suite (``tests/faults``): the
server (a test's own: the session one is shared and must not stop or freeze), the service's
environment on a fresh migrated database of it, and waiting for readiness to come back.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.e2e.conftest import migrate, service_env
from tests.servers.postgres import PostgresServer

RECOVER_WITHIN_SECONDS = 15.0
POLL_SECONDS = 0.25


@contextlib.contextmanager
def own_postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.destroy()


def migrated_env(server: PostgresServer, root: Path, **variables: str) -> dict[str, str]:
    """The service's environment (``service_env``'s, data dir under ``root``) on a fresh,
    migrated database of ``server``, with ``variables`` as ``BASTION_*``."""
    name = asyncio.run(server.create_database())
    env = service_env(root / "data", database_url=server.url(name), **variables)
    migrate(env, root)
    return env


def ready_again(
    client: httpx.Client, within: float = RECOVER_WITHIN_SECONDS
) -> httpx.Response:
    """Polls readiness until it is 200 again (recovery without a restart), or fails."""
    deadline = time.monotonic() + within
    statuses: list[int] = []
    while time.monotonic() < deadline:
        response = client.get("/health/ready")
        statuses.append(response.status_code)
        if response.status_code == 200:
            return response
        time.sleep(POLL_SECONDS)
    raise AssertionError(f"not ready again within {within} s: {statuses}")
