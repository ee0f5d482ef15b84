"""Shared fixtures: every storage test runs on SQLite and on a real PostgreSQL server; real
Redis servers, shared per worker or a test's own."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from bastion.app import create_app
from bastion.config import NOT_SETTINGS, Settings
from bastion.storage.migrate import upgrade_to_head
from tests.servers.postgres import PostgresServer
from tests.servers.redis import RedisServer

BACKENDS = ["sqlite", "postgresql"]


# Not a setting of the service: which fault suite runs (tests/faults/conftest.py). It must
# survive the clean-up below, or xdist's workers, started after it, never see it.
FAULT_SUITE_VARIABLE = "BASTION_FAULTS"
# Not a setting either: `make screenshots` asks the console's browser test to update
# docs/images/console.png (tests/e2e/console_browser.py).
SCREENSHOTS_VARIABLE = "BASTION_UPDATE_SCREENSHOTS"
# A fixed BASTION_ENCRYPTION_KEY for tests (32 bytes, base64url): never a deployment's.
TEST_ENCRYPTION_KEY = "dGVzdHMgb25seTogbm90IGEgZGVwbG95bWVudCBrZXk"


def pytest_configure(config: pytest.Config) -> None:
    # A developer's own BASTION_* variables must not leak into the tests.
    for name in [name for name in os.environ if name.startswith("BASTION_")]:
        if name not in NOT_SETTINGS:
            del os.environ[name]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer().start()
    yield server
    server.destroy()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A real redis-server per test session (so per xdist worker)."""
    server = RedisServer().start()
    yield server
    server.destroy()


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of the test's own, for tests that stop, kill or restart it: doing that
    to the worker's shared one would break the other tests."""
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture(params=BACKENDS)
async def database_url(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[str | None]:
    """None means the embedded SQLite file in the data dir; otherwise a fresh PG database."""
    if request.param == "sqlite":
        yield None
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    name = await server.create_database()
    yield server.url(name)
    await server.drop_database(name)


# httpx's ASGI client sends ``Host: testserver``; the allow-list must name it.
TEST_HOSTS = ["testserver", "127.0.0.1", "localhost"]
# Every test client is one address: tests that log in or register many times would hit the
# per-address quotas. The rate-limit tests set their own.
ROOMY_LIMITS = {"rate_limit_login": "10000/minute", "rate_limit_register": "10000/minute"}


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    """Settings from arguments only: no ``.env`` of the developer's, data in ``data_dir``."""
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "allowed_hosts": TEST_HOSTS,
        **ROOMY_LIMITS,
        **overrides,
    }
    return Settings(_env_file=None, **values)


# Argon2id at OWASP's parameters costs ~40 ms a hash here; tests that do not measure
# hashing use the cheapest parameters (the production check refuses them).
FAST_HASHING = {"password_hash_memory_kib": 1024, "password_hash_time_cost": 1}


@pytest.fixture
def settings(tmp_path: Path, database_url: str | None) -> Settings:
    return make_settings(tmp_path / "data", database_url=database_url, **FAST_HASHING)


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    """The app, migrated and started (lifespan: signing key, revocations), then shut down."""
    application = create_app(settings)
    await upgrade_to_head(application.state.bastion.database.engine)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client
