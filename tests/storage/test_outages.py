"""Which backing-service failures are a 503, and what the log says of them: the dependency,
the driver's error class and its code, never the statement or its parameters."""

from __future__ import annotations

import errno
import sqlite3
import uuid
from collections.abc import MutableMapping, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from structlog.testing import capture_logs

from bastion.app import create_app
from bastion.dependencies import DbSession
from bastion.services import services_of
from bastion.storage import StorageUnavailable
from bastion.storage.migrate import upgrade_to_head
from bastion.storage.outages import Outage, OutageReports, is_unavailable, outage_of
from tests.conftest import FAST_HASHING, make_settings
from tests.servers.postgres import PostgresServer

STATEMENT = "SELECT secret_column FROM users WHERE password_hash = $1"
PARAMETERS = ("$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA",)


class _DriverError(Exception):
    """A driver exception as SQLAlchemy's asyncpg adapter presents it."""

    def __init__(self, sqlstate: str, message: str = "details the log must not carry") -> None:
        super().__init__(message)
        self.pgcode = self.sqlstate = sqlstate


class CannotConnectNowError(_DriverError):
    pass


def _postgres_error(sqlstate: str, kind: type[Exception] = _DriverError) -> DBAPIError:
    return DBAPIError(STATEMENT, PARAMETERS, kind(sqlstate))


@pytest.mark.parametrize(
    "sqlstate",
    ["57P01", "57P02", "57P03", "08006", "08001", "53300", "53100", "58030", "57014", "25006"],
)
def test_a_server_that_cannot_serve_now_is_unavailable(sqlstate: str) -> None:
    assert is_unavailable(_postgres_error(sqlstate))


@pytest.mark.parametrize("sqlstate", ["23505", "22P05", "42P01", "40001"])
def test_a_bad_statement_or_a_conflict_is_not_an_outage(sqlstate: str) -> None:
    """A unique violation, bad data, a missing table or a serialization failure are the
    request's or the code's, not the server's: they must not hide as 503s."""
    assert not is_unavailable(_postgres_error(sqlstate))
    assert not is_unavailable(IntegrityError(STATEMENT, PARAMETERS, _DriverError("23505")))


def test_the_outage_names_the_driver_error_and_its_code_only() -> None:
    outage = outage_of(_postgres_error("57P03", CannotConnectNowError))
    assert outage == Outage("database", "CannotConnectNowError", "57P03")


def test_a_sqlite_outage_names_its_result_code() -> None:
    full = sqlite3.OperationalError("database or disk is full")
    full.sqlite_errorcode = sqlite3.SQLITE_FULL
    full.sqlite_errorname = "SQLITE_FULL"
    error = OperationalError("INSERT INTO notes VALUES (?)", ("a private note",), full)
    assert outage_of(error) == Outage("database", "OperationalError", "SQLITE_FULL")


def test_a_redis_outage_names_its_errno() -> None:
    try:
        try:
            raise ConnectionRefusedError(errno.ECONNREFUSED, "refused")
        except OSError as refused:
            raise RedisConnectionError("Error 111 connecting to 127.0.0.1:6379.") from refused
    except RedisConnectionError as error:
        assert outage_of(error) == Outage("redis", "ConnectionError", "ECONNREFUSED")


def test_storage_unavailable_carries_its_cause() -> None:
    try:
        try:
            raise _postgres_error("53300")
        except DBAPIError as error:
            raise StorageUnavailable from error
    except StorageUnavailable as unavailable:
        assert unavailable.outage == Outage("database", "_DriverError", "53300")
    explicit = StorageUnavailable(outage=Outage("redis", "ReadinessProbeFailed"))
    assert explicit.outage.dependency == "redis"


def _warnings(events: Sequence[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [event for event in events if event.get("event") == "storage_unavailable"]


def test_each_cause_is_reported_once_per_interval_with_the_count_between() -> None:
    every_time = OutageReports(interval=0.0)
    hourly = OutageReports(interval=3600.0)
    refused = Outage("database", "ConnectionRefusedError", "ECONNREFUSED")
    with capture_logs() as events:
        for _ in range(5):
            hourly.report(refused, request_id="r")
        hourly.report(Outage("redis", "TimeoutError"), request_id="r")
        every_time.report(refused, request_id="r")
        every_time.report(refused, request_id="r")
    lines = _warnings(events)
    assert [(line["dependency"], line["error"]) for line in lines] == [
        ("database", "ConnectionRefusedError"),
        ("redis", "TimeoutError"),
        ("database", "ConnectionRefusedError"),
        ("database", "ConnectionRefusedError"),
    ]
    assert lines[0]["code"] == "ECONNREFUSED"
    assert lines[0]["log_level"] == "warning"
    assert lines[0]["answered_503_since_last_report"] == 0


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_a_connection_the_server_terminates_is_a_503_with_its_cause_logged(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """PostgreSQL ends the connection mid-transaction (57P01, as in a restart or a
    failover): a 503 with Retry-After, not a 500, and one warning naming the SQLSTATE and
    nothing of the statement."""

    @app.post("/probe/terminated")
    async def terminated(session: DbSession) -> None:
        await session.execute(
            text("SELECT pg_terminate_backend(pg_backend_pid()), :secret"),
            {"secret": "a-parameter-the-log-must-not-carry"},
        )

    with capture_logs() as events:
        response = await client.post("/probe/terminated")
    assert response.status_code == 503
    assert response.headers["retry-after"]
    output = repr(events)
    (warning,) = _warnings(events)
    assert warning["dependency"] == "database"
    # 57P01 as the server says it, or 08003 once the driver has seen the connection go.
    assert warning["code"] in {"57P01", "08003", "08006"}
    assert warning["request_id"] == response.json()["request_id"]
    assert "pg_terminate_backend" not in output
    assert "a-parameter-the-log-must-not-carry" not in output
    assert (await client.get("/health/ready")).status_code == 200  # the pool recovers


async def test_too_many_connections_is_a_503_not_a_500(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    """PostgreSQL refuses a new connection with SQLSTATE 53300 (as it answers 57P03 while
    starting up): a plain DBAPIError, no OperationalError, which used to end as a 500."""
    role = f"limited_{uuid.uuid4().hex[:12]}"
    name = await postgres_server.create_database()
    admin = await asyncpg.connect(
        host="127.0.0.1", port=postgres_server.port, user="postgres", database=name
    )
    await admin.execute(f'CREATE ROLE "{role}" LOGIN CONNECTION LIMIT 1')
    await admin.execute(f'ALTER DATABASE "{name}" OWNER TO "{role}"')
    await admin.execute(f'ALTER SCHEMA public OWNER TO "{role}"')
    url = f"postgresql+asyncpg://{role}@127.0.0.1:{postgres_server.port}/{name}"
    app = create_app(make_settings(tmp_path / "data", database_url=url, **FAST_HASHING))
    database = services_of(app).database
    await upgrade_to_head(database.engine)
    holder = None
    try:
        async with app.router.lifespan_context(app):
            # The one connection the role may hold is the request's: not the mail sender's.
            await services_of(app).mail.stop()
            await database.engine.dispose()  # the next request must connect anew
            holder = await asyncpg.connect(
                host="127.0.0.1", port=postgres_server.port, user=role, database=name
            )
            transport = httpx.ASGITransport(app=app)
            client = httpx.AsyncClient(transport=transport, base_url="http://testserver")
            async with client:
                with capture_logs() as events:
                    response = await client.get("/health/ready")
                    registered = await client.post(
                        "/auth/register",
                        json={"username": "ann", "email": "ann@example.com", "age": 30,
                              "password": "a long enough passphrase 7"},
                    )
        assert response.status_code == 503
        assert registered.status_code == 503
        assert registered.headers["retry-after"]
        codes = {event.get("code") for event in _warnings(events)}
        assert "53300" in codes
        assert ("TooManyConnectionsError", "53300") in {
            (event.get("error"), event.get("code")) for event in _warnings(events)
        }
    finally:
        if holder is not None:
            await holder.close()
        await database.dispose()
        await admin.close()
        await postgres_server.drop_database(name)
        cleanup = await asyncpg.connect(
            host="127.0.0.1", port=postgres_server.port, user="postgres", database="postgres"
        )
        await cleanup.execute(f'DROP ROLE IF EXISTS "{role}"')
        await cleanup.close()
