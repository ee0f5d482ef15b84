"""Live servers: the real ``bastion`` process on a free port, its own tmp dir and log file.

Every server is a subprocess with stdout and stderr in ``<tmp>/server.log``, started with a
clean environment (no ``BASTION_*`` of the developer's, no ``.env``: the cwd is the tmp dir)
and considered up once ``GET /health/live`` answers. Fixtures are module-scoped where the
tests only read; a test that changes a server's state starts its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from bastion.config import SQLITE_FILE_NAME
from tests.servers.postgres import PostgresServer, free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
BASTION = Path(sys.executable).parent / "bastion"
STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
LOG_TAIL_CHARS = 4000
PORT_ATTEMPTS = 3
CLI_TIMEOUT = 60
ECHO_APP = "tests.e2e.echo_app:create_echo_app"
# Serves the app an ``app_factory`` (``module:function``) makes, under ``bastion serve``'s uvicorn.
FACTORY_RUNNER = (
    "from bastion.server import run_server; from bastion.config import Settings; "
    "run_server(Settings(), app_factory={app!r}, port={port})"
)

Command = Callable[[int], list[str]]

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_FIELDS = {"type", "title", "status", "detail", "request_id"}
# What must never reach a client: internals of the stack, the database or the file system.
LEAK_MARKERS = ("Traceback", 'File "', "site-packages", "/etc/", "SELECT", "sqlalchemy", "asyncpg")
SANE_GENERATED_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def raw_exchange(port: int, data: bytes) -> bytes:
    """What the server sends back for ``data`` written on a plain TCP connection, read until
    it closes: for requests no HTTP client would send."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(data)
        reply = b""
        with contextlib.suppress(ConnectionError):
            while chunk := connection.recv(65536):
                reply += chunk
    return reply


def logger_of(record: Mapping[str, Any]) -> Any:
    """The logger a JSON log line came from (``logger_name``, or structlog's ``logger``)."""
    return record.get("logger_name", record.get("logger"))


def assert_secure_headers(response: httpx.Response) -> None:
    """CONTRACT.md's security headers, and no ``Server`` header naming the software."""
    headers = response.headers
    where = f"{response.request.method} {response.request.url.path} -> {response.status_code}"
    assert headers.get("x-content-type-options") == "nosniff", where
    assert headers.get("x-frame-options") == "DENY", where
    csp = headers.get("content-security-policy", "")
    directives = {part.strip() for part in csp.split(";")}
    assert "default-src 'none'" in directives, (where, csp)
    assert "frame-ancestors 'none'" in directives, (where, csp)
    assert headers.get("referrer-policy") == "no-referrer", where
    assert headers.get("cross-origin-opener-policy") == "same-origin", where
    assert headers.get("cross-origin-resource-policy") == "same-origin", where
    assert headers.get("permissions-policy"), where
    assert "server" not in headers, (where, headers.get("server"))
    assert headers.get("x-request-id"), where


def assert_problem(response: httpx.Response, status: int, *secrets: str) -> dict[str, Any]:
    """An RFC 9457 body with our request id, and nothing internal or secret in it."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].split(";")[0].strip() == PROBLEM_CONTENT_TYPE
    body = response.json()
    assert isinstance(body, dict)
    assert PROBLEM_FIELDS <= body.keys(), body
    assert body["status"] == status
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]
    assert body["request_id"] == response.headers["x-request-id"]
    for marker in (*LEAK_MARKERS, *secrets):
        assert marker not in response.text, (marker, response.text)
    assert_secure_headers(response)
    return body


@dataclass
class LiveServer:
    """A running server process and what a test needs to talk to it and read its log."""

    backend: str
    port: int
    root: Path
    data_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, **options: Any) -> httpx.Client:
        options.setdefault("timeout", 10.0)
        return httpx.Client(base_url=self.base_url, **options)

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def log_tail(self) -> str:
        return self.log_text()[-LOG_TAIL_CHARS:]

    def log_records(self, *, strict: bool = True) -> list[dict[str, Any]]:
        """Every non-empty log line parsed as JSON; with ``strict`` a non-JSON line fails the
        test, without it such a line is left for the JSON-lines tests to report."""
        records: list[dict[str, Any]] = []
        for number, line in enumerate(self.log_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                if strict:
                    pytest.fail(f"log line {number} is not JSON: {line!r}")
                continue
            if not isinstance(record, dict):
                if strict:
                    pytest.fail(f"log line {number} is not a JSON object: {line!r}")
                continue
            records.append(record)
        return records

    def wait_for_records(
        self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = 5.0
    ) -> list[dict[str, Any]]:
        """The log's JSON records once ``predicate`` holds (access lines follow the response)."""
        deadline = time.monotonic() + timeout
        while True:
            records = self.log_records(strict=False)
            if predicate(records) or time.monotonic() > deadline:
                return records
            time.sleep(0.05)

    def access_records(self, request_id: str) -> list[dict[str, Any]]:
        """The access log lines of one request, waiting briefly for the first to appear."""

        def of_request(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [
                r
                for r in records
                if logger_of(r) == "bastion.access" and r.get("request_id") == request_id
            ]

        return of_request(self.wait_for_records(lambda records: bool(of_request(records))))


def service_env(data_dir: Path, **variables: str) -> dict[str, str]:
    """The test process's environment minus every ``BASTION_*``, plus ``variables``."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("BASTION_")}
    env["BASTION_DATA_DIR"] = str(data_dir)
    env.update({f"BASTION_{name.upper()}": value for name, value in variables.items()})
    return env


def with_tests_importable(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` with the repository on ``PYTHONPATH``, for servers of apps defined in tests."""
    path = os.pathsep.join(part for part in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if part)
    return {**env, "PYTHONPATH": path}


def run_bastion(
    *args: str, env: Mapping[str, str], cwd: Path, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """One ``bastion`` command as an operator runs it: a process of its own, output captured."""
    return subprocess.run(
        [str(BASTION), *args],
        env=dict(env),
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        check=False,
    )


def migrate(env: Mapping[str, str], cwd: Path) -> None:
    result = run_bastion("migrate", env=env, cwd=cwd)
    if result.returncode != 0:
        output = f"{result.stdout}\n{result.stderr}"
        pytest.fail(f"`bastion migrate` exited {result.returncode}:\n{output}")


def serve_command(port: int) -> list[str]:
    return [str(BASTION), "serve", "--port", str(port)]


def factory_command(app: str) -> Command:
    """Serves the app ``app`` (``module:function``) makes; see ``with_tests_importable``."""

    def command(port: int) -> list[str]:
        return [sys.executable, "-c", FACTORY_RUNNER.format(app=app, port=port)]

    return command


echo_command = factory_command(ECHO_APP)


def children_of(pid: int) -> list[int]:
    """The processes whose parent is ``pid``, found through /proc."""
    found: list[int] = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
            if int(stat_file.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat_file.parent.name))
    return found


def _wait_until_live(server: LiveServer, certfile: Path | None) -> bool:
    """True once /health/live answers 200 (over HTTPS verified against ``certfile`` when
    given); False when the process died (e.g. port taken)."""
    url = f"{server.base_url}/health/live"
    verify: ssl.SSLContext | bool = True
    if certfile is not None:
        url = f"https://localhost:{server.port}/health/live"
        verify = ssl.create_default_context(cafile=str(certfile))
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            return False
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(url, verify=verify, timeout=1.0).status_code == 200:
                return True
        time.sleep(0.1)
    stop_server(server)
    pytest.fail(f"no answer on {url} within {STARTUP_TIMEOUT} s:\n{server.log_tail()}")


def start_server(
    command: Command,
    *,
    root: Path,
    env: Mapping[str, str],
    backend: str,
    port: int | None = None,
    certfile: Path | None = None,
) -> LiveServer:
    """Starts ``command(port)`` in ``root`` and waits until it serves (over HTTPS when the
    server's ``certfile`` is given); fails with the log tail."""
    root.mkdir(parents=True, exist_ok=True)
    data_dir = Path(env["BASTION_DATA_DIR"])
    log_path = root / "server.log"
    attempts = 1 if port is not None else PORT_ATTEMPTS
    for _ in range(attempts):
        chosen = port if port is not None else free_port()
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                command(chosen), cwd=root, env=dict(env), stdout=log, stderr=subprocess.STDOUT
            )
        server = LiveServer(backend, chosen, root, data_dir, log_path, process)
        if _wait_until_live(server, certfile):
            return server
        tail = server.log_tail()
        if "address already in use" not in tail.lower():
            break
    pytest.fail(f"server exited with {server.process.returncode} at start:\n{server.log_tail()}")


def stop_server(server: LiveServer) -> None:
    """SIGTERM (uvicorn's graceful shutdown), then SIGKILL if it does not finish in time."""
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(timeout=STOP_TIMEOUT)


@contextlib.contextmanager
def running(
    command: Command,
    *,
    root: Path,
    env: Mapping[str, str],
    backend: str,
    port: int | None = None,
    certfile: Path | None = None,
) -> Iterator[LiveServer]:
    server = start_server(
        command, root=root, env=env, backend=backend, port=port, certfile=certfile
    )
    try:
        yield server
    finally:
        stop_server(server)


@dataclass
class Deployment:
    """A live server plus the environment its operator's commands must run with (the same
    data dir, so the same SQLite file; or the same PostgreSQL URL)."""

    server: LiveServer
    env: dict[str, str]

    @property
    def database(self) -> Path:
        """The SQLite file (on the SQLite backend)."""
        return self.server.data_dir / SQLITE_FILE_NAME

    def bastion(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """``bastion *args`` against this server's database while it serves."""
        return run_bastion(*args, env=self.env, cwd=self.server.root, stdin=stdin)

    def create_admin(self, username: str, password: str) -> None:
        """``bastion create-admin`` with the password piped, as an operator would."""
        result = self.bastion(
            "create-admin",
            "--username",
            username,
            "--email",
            f"{username}@example.com",
            stdin=password + "\n",
        )
        output = result.stdout + result.stderr
        assert result.returncode == 0, output
        assert f"admin {username} created" in result.stdout, output
        assert password not in output


@contextlib.contextmanager
def deployed(
    root: Path, backend: str, postgres: PostgresServer | None = None, **variables: str
) -> Iterator[Deployment]:
    """``bastion serve`` on SQLite (it migrates itself) or on a fresh PostgreSQL database,
    with the environment that reaches the same database."""
    env = service_env(root / "data", **variables)
    if backend == "sqlite":
        with running(serve_command, root=root, env=env, backend=backend) as server:
            yield Deployment(server, env)
        return
    assert postgres is not None
    name = asyncio.run(postgres.create_database())
    try:
        env["BASTION_DATABASE_URL"] = postgres.url(name)
        migrate(env, root)
        with running(serve_command, root=root, env=env, backend=backend) as server:
            yield Deployment(server, env)
    finally:
        asyncio.run(postgres.drop_database(name))


@contextlib.contextmanager
def service(
    root: Path, backend: str, postgres: PostgresServer | None = None, **variables: str
) -> Iterator[LiveServer]:
    """``deployed``'s server alone, for tests that run no ``bastion`` command against it."""
    with deployed(root, backend, postgres, **variables) as deployment:
        yield deployment.server


def postgres_for(request: pytest.FixtureRequest) -> PostgresServer | None:
    """The session's PostgreSQL server when a backend-parametrized fixture runs on it."""
    if request.param == "postgresql":
        server: PostgresServer = request.getfixturevalue("postgres_server")
        return server
    return None


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def live_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """The service as operators run it, on each database backend; for read-only checks."""
    root = tmp_path_factory.mktemp(f"live-{request.param}")
    with service(root, request.param, postgres_for(request)) as server:
        yield server


@pytest.fixture(scope="module")
def sqlite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The service on its embedded SQLite database only."""
    with service(tmp_path_factory.mktemp("live-sqlite"), "sqlite") as server:
        yield server


@pytest.fixture(scope="module")
def echo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The service plus ``POST /echo`` and ``GET /boom``, under the same uvicorn hardening."""
    root = tmp_path_factory.mktemp("echo")
    env = with_tests_importable(service_env(root / "data"))
    migrate(env, root)
    with running(echo_command, root=root, env=env, backend="sqlite") as server:
        yield server
