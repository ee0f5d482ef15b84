"""One transaction per unit of work, migrations, and an unreachable database, on every backend."""

from __future__ import annotations

import asyncio
import stat
import threading
import time
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import Column, Integer, MetaData, String, Table, func, insert, select

from bastion.app import create_app
from bastion.config import Settings
from bastion.dependencies import DbReader, DbSession
from bastion.errors import Conflict
from bastion.storage.migrate import current_revision, head_revision
from tests.conftest import make_settings
from tests.servers.postgres import free_port

scratch = MetaData()
entries = Table(
    "scratch_entries",
    scratch,
    Column("id", Integer, primary_key=True),
    Column("name", String(50), nullable=False),
)


def _add_write_routes(app: FastAPI) -> None:
    @app.post("/probe/entries", status_code=201)
    async def write_one(session: DbSession) -> dict[str, str]:
        await session.execute(insert(entries).values(name="kept"))
        return {"status": "written"}

    @app.get("/probe/entries")
    async def read_all(session: DbReader) -> dict[str, int]:
        return {"count": len((await session.execute(select(entries))).all())}

    @app.post("/probe/entries/half")
    async def write_then_fail(session: DbSession) -> None:
        await session.execute(insert(entries).values(name="first"))
        await session.execute(insert(entries).values(name="second"))
        raise Conflict


async def _count(app: FastAPI) -> int:
    async with app.state.bastion.database.transaction() as session:
        return int((await session.execute(select(func.count()).select_from(entries))).scalar_one())


async def test_migrations_reach_head(app: FastAPI) -> None:
    assert await current_revision(app.state.bastion.database.engine) == head_revision()


async def test_a_write_commits_when_the_route_succeeds(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    async with app.state.bastion.database.engine.begin() as connection:
        await connection.run_sync(scratch.create_all)
    _add_write_routes(app)
    response = await client.post("/probe/entries")
    assert response.status_code == 201
    assert await _count(app) == 1


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_a_value_the_database_refuses_is_a_400_and_its_statement_is_never_logged(
    app: FastAPI, client: httpx.AsyncClient, capsys: pytest.CaptureFixture[str]
) -> None:
    """PostgreSQL refuses NUL in text (SQLSTATE 22021). The edge refuses control characters
    first; under it, a DataError is the client's input, not a 500 whose log holds the
    statement and its parameters."""
    async with app.state.bastion.database.engine.begin() as connection:
        await connection.run_sync(scratch.create_all)

    @app.post("/probe/entries/nul", status_code=201)
    async def write_nul(session: DbSession) -> dict[str, str]:
        await session.execute(insert(entries).values(name="secret\x00value"))
        return {"status": "written"}

    response = await client.post("/probe/entries/nul")
    assert response.status_code == 400, response.text
    assert response.json()["detail"] == "The request holds a value that cannot be stored."
    assert await _count(app) == 0
    output = capsys.readouterr()
    logged = output.out + output.err
    assert "database_refused_value" in logged and "22021" in logged
    assert "INSERT" not in logged and "secret" not in logged


async def test_nothing_is_stored_half_way_when_the_route_fails(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    async with app.state.bastion.database.engine.begin() as connection:
        await connection.run_sync(scratch.create_all)
    _add_write_routes(app)
    response = await client.post("/probe/entries/half")
    assert response.status_code == 409
    assert await _count(app) == 0


def _unreachable(tmp_path: Path, backend: str) -> Settings:
    if backend == "postgresql":
        url = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/nothing"
    else:
        url = f"sqlite+aiosqlite:///{tmp_path}/no/such/dir/db.sqlite3"
    return make_settings(tmp_path / "data", database_url=url, database_timeout=2)


async def _let_aiosqlite_threads_finish() -> None:
    """After a failed connect aiosqlite stops its worker thread without awaiting it; if the
    test's event loop closed first, the thread's late callback would fail in the next test."""
    for thread in threading.enumerate():
        if thread.name.endswith("(_connection_worker_thread)"):
            await asyncio.to_thread(thread.join, 5)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_an_unreachable_database_gives_503_problems_not_hangs(
    tmp_path: Path, backend: str
) -> None:
    app = create_app(_unreachable(tmp_path, backend))
    _add_write_routes(app)
    transport = httpx.ASGITransport(app=app)
    started = time.monotonic()
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        ready = await client.get("/health/ready")
        write = await client.post("/probe/entries")
        read = await client.get("/probe/entries")
        live = await client.get("/health/live")
    await app.state.bastion.database.dispose()
    await _let_aiosqlite_threads_finish()
    assert time.monotonic() - started < 10
    assert ready.json()["checks"] == {"database": "unavailable"}
    for response in (ready, write, read):
        assert response.status_code == 503
        assert response.headers["content-type"] == "application/problem+json"
        assert "retry-after" in response.headers
        assert "127.0.0.1" not in response.text
        assert "no/such/dir" not in response.text
    assert live.status_code == 200


def test_the_data_dir_is_private(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    create_app(settings)
    assert stat.S_IMODE(settings.data_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(settings.sqlite_path.stat().st_mode) == 0o600


def test_a_readable_data_dir_is_narrowed(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o755)
    data_dir.chmod(0o755)
    (data_dir / "bastion.sqlite3").touch(mode=0o644)
    (data_dir / "bastion.sqlite3").chmod(0o644)
    settings = make_settings(data_dir)
    create_app(settings)
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(settings.sqlite_path.stat().st_mode) == 0o600
