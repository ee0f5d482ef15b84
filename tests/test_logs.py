"""Logs are JSON lines, and nothing that looks like a credential survives into them."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from fastapi import FastAPI

from bastion.logs import REDACTED, _utc_second, redact, redact_secrets, write_access_line


@pytest.mark.parametrize(
    "name",
    ["password", "new_password", "client_secret", "refresh_token", "Authorization",
     "cookie", "Set-Cookie", "api_key", "X-API-Key", "private_key"],
)
def test_secret_named_fields_are_redacted_at_any_depth(name: str) -> None:
    event = {"event": "x", "outer": {"inner": [{name: "hunter2"}]}, name: "hunter2"}
    cleaned = redact_secrets(None, "info", event)
    assert "hunter2" not in json.dumps(cleaned)
    assert cleaned[name] == REDACTED


def test_header_pairs_are_redacted_by_name() -> None:
    headers = [(b"authorization", b"Bearer abc"), (b"accept", b"*/*"), ("Cookie", "sid=1")]
    assert redact(headers) == [
        (b"authorization", REDACTED),
        [b"accept", b"*/*"],
        ("Cookie", REDACTED),
    ]


@pytest.mark.parametrize(
    ("raw", "kept"),
    [
        ("/login?user=ann&password=hunter2&next=/", ["user=ann", "next=/"]),
        ("access_token=abc.def.ghi&x=1", ["x=1"]),
        ("GET /cb?code=1&client_secret=s3cr3t HTTP/1.1", ["code=1"]),
        ("sent Authorization: Bearer eyJhbGciOi.payload.sig to upstream", ["upstream"]),
    ],
)
def test_secrets_inside_strings_are_masked(raw: str, kept: list[str]) -> None:
    cleaned = redact(raw)
    for secret in ("hunter2", "abc.def.ghi", "s3cr3t", "eyJhbGciOi"):
        assert secret not in cleaned
    for part in kept:
        assert part in cleaned


def test_ordinary_fields_pass_untouched() -> None:
    event = {"event": "request", "status": 200, "route": "/notes/{note_id}", "user_id": 7}
    assert redact_secrets(None, "info", event) == event


async def test_the_access_line_has_the_contract_fields(
    app: FastAPI, client: httpx.AsyncClient, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    await client.get("/health/live?token=abc", headers={"X-Request-ID": "log-1"})
    await client.get("/probe/../etc/passwd?password=hunter2")
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    first, second = (entry for entry in lines if entry.get("event") == "request")
    assert first["logger_name"] == "bastion.access"
    assert first["timestamp"].endswith("+00:00")
    assert first["method"] == "GET"
    assert first["route"] == "/health/live"
    assert first["status"] == 200
    assert first["request_id"] == "log-1"
    assert first["client_ip"] == "127.0.0.1"
    assert first["duration_ms"] >= 0
    assert "user_id" in first
    assert first["path"] is None  # a matched route never logs the raw path or query
    assert second["route"] is None
    assert second["status"] == 404
    assert second["path"].startswith("/")


def test_the_configured_pipeline_writes_json_and_routes_stdlib_loggers() -> None:
    program = """
import logging, structlog
from bastion.logs import configure_logging, get_logger
configure_logging("INFO")
get_logger("bastion.test").info("login", password="hunter2", user="ann")
logging.getLogger("uvicorn.error").info("Started with token=abc123 and %s", "x")
logging.getLogger("uvicorn.access").info("must not appear")
"""
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True, timeout=60
    )
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert lines[0]["event"] == "login"
    assert lines[0]["password"] == REDACTED
    assert lines[0]["user"] == "ann"
    assert lines[1]["logger_name"] == "uvicorn.error"
    assert "abc123" not in result.stdout
    assert "hunter2" not in result.stdout
    assert "must not appear" not in result.stdout
    assert all({"timestamp", "level"} <= line.keys() for line in lines)


@pytest.mark.parametrize("level", ["INFO", "DEBUG"])
def test_database_statements_and_their_values_are_never_logged(
    level: str, tmp_path: Path
) -> None:
    """SQLAlchemy logs statements with parameters at INFO, aiosqlite at DEBUG."""
    program = """
import asyncio, sys
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from bastion.logs import configure_logging
configure_logging(sys.argv[1])
async def main():
    engine = create_async_engine("sqlite+aiosqlite:///" + sys.argv[2])
    async with engine.begin() as connection:
        await connection.execute(text("CREATE TABLE t (secret TEXT)"))
        insert = text("INSERT INTO t VALUES (:value)")
        await connection.execute(insert, {"value": "PRIVATE-KEY-X"})
    await engine.dispose()
asyncio.run(main())
"""
    result = subprocess.run(
        [sys.executable, "-c", program, level, str(tmp_path / "db.sqlite3")],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert "PRIVATE-KEY-X" not in result.stdout + result.stderr
    assert "INSERT" not in result.stdout + result.stderr


class _Stream:
    """Stands in for ``sys.stdout.buffer``: what was written, and how often flushed."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.flushes = 0

    def write(self, data: bytes) -> int:
        self.written.append(data)
        return len(data)

    def flush(self) -> None:
        self.flushes += 1


def test_the_access_timestamp_is_iso_8601_utc_to_the_microsecond() -> None:
    for now in (0.0, 1_700_000_000.5, 1_700_000_000.999999, 1_700_000_001.000001):
        expected = datetime.fromtimestamp(now, UTC)
        text = _utc_second.timestamp(now)
        assert text.endswith("+00:00")
        assert abs(datetime.fromisoformat(text) - expected) <= timedelta(microseconds=1)


async def test_access_lines_are_written_at_once_and_flushed_by_the_end_of_the_loop_turn(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stream = _Stream()
    monkeypatch.setattr(sys, "stdout", SimpleNamespace(buffer=stream))
    write_access_line({"method": "GET", "route": "/a", "path": None, "status": 200})
    write_access_line({"method": "GET", "route": None, "path": "/x?token=abc", "status": 404})
    assert [json.loads(line)["status"] for line in stream.written] == [200, 404]
    assert "abc" not in b"".join(stream.written).decode()
    assert stream.flushes == 0  # the requests of this turn share one flush
    await asyncio.sleep(0)
    assert stream.flushes == 1


def test_outside_an_event_loop_an_access_line_is_flushed_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stream = _Stream()
    monkeypatch.setattr(sys, "stdout", SimpleNamespace(buffer=stream))
    write_access_line({"method": "GET", "route": "/a", "path": None, "status": 200})
    assert stream.flushes == 1
