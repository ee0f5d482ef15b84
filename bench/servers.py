"""The processes the bench starts: uvicorn workers pinned to the server's core, a
throw-away PostgreSQL pinned to the load generator's, and the accounts and notes they serve.

Servers run through ``bastion.server.run_server`` whatever the app, so every app gets the
same uvicorn (bastion's hardened httptools protocol, one worker) and only the app differs.
The one exception is the fastapi-users peer, which runs from .venv-peers (no bastion there):
bench/peer_fastapi_users.py serves it with the same uvicorn, httptools and uvloop.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVER_CORE = 0
LOAD_CORE = 1
PASSWORD = "a long benchmark phrase"
PEERS_PYTHON = ROOT / ".venv-peers" / "bin" / "python"
PEER_MODULE = "bench.peer_fastapi_users"
PEER_EMAIL = "bench_peer@example.com"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def bastion_env(data_dir: Path, database_url: str | None = None) -> dict[str, str]:
    """The environment of a bench server: the caller's, less any BASTION_ setting, plus
    quotas wrk cannot reach (requests are still counted) and tokens that outlive the run."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    env.update(
        {
            "PYTHONPATH": str(ROOT),
            "BASTION_DATA_DIR": str(data_dir),
            "BASTION_LOG_LEVEL": "INFO",
            "BASTION_RATE_LIMIT_DEFAULT": "1000000000/minute",
            "BASTION_RATE_LIMIT_LOGIN": "1000/minute",
            "BASTION_RATE_LIMIT_REGISTER": "1000/minute",
            "BASTION_ACCESS_TOKEN_TTL": "3600",
            # Every load comes from 127.0.0.1: no per-address connection cap either.
            "BASTION_MAX_CONNECTIONS_PER_ADDRESS": "100000",
            "BENCH_DATABASE_URL": f"sqlite+aiosqlite:///{data_dir / 'bastion.sqlite3'}",
        }
    )
    if database_url:
        env["BASTION_DATABASE_URL"] = database_url
    return env


def migrate(env: Mapping[str, str]) -> None:
    subprocess.run(
        [str(Path(sys.executable).parent / "bastion"), "migrate"],
        env=dict(env), cwd=env["BASTION_DATA_DIR"], check=True, capture_output=True,
    )


def peer_unavailable() -> str | None:
    """Why the fastapi-users peer cannot run (None when it can): .venv-peers missing, or
    fastapi-users not importable from it."""
    where = (PEERS_PYTHON.relative_to(ROOT) if PEERS_PYTHON.is_relative_to(ROOT)
             else PEERS_PYTHON)
    if not PEERS_PYTHON.exists():
        return f"{where} not found (`make bench` installs it from bench/peers-requirements.txt)"
    probe = subprocess.run(
        [str(PEERS_PYTHON), "-c", f"import {PEER_MODULE}"], cwd=ROOT, capture_output=True,
        text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["no message"])[-1]
        return f"{where} cannot import {PEER_MODULE}: {last}"
    return None


def peer_env(data_dir: Path) -> dict[str, str]:
    """The peer's environment: its own SQLite file (aiosqlite) and its one user."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    env.update(
        {
            "PYTHONPATH": str(ROOT),
            "BENCH_PEER_DATABASE_URL": f"sqlite+aiosqlite:///{data_dir / 'peer.sqlite3'}",
            "BENCH_PEER_EMAIL": PEER_EMAIL,
            "BENCH_PEER_PASSWORD": PASSWORD,
        }
    )
    return env


@dataclass
class Server:
    """One uvicorn worker on ``SERVER_CORE``; its access log goes to /dev/null.

    Served by ``bastion.server.run_server(app_factory=factory)``, or, when ``module`` is set,
    by ``python -m module --port N`` (a peer in another venv, ``python``, without bastion)."""

    name: str
    factory: str
    env: Mapping[str, str]
    python: str = sys.executable
    module: str | None = None
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> Server:
        self.port = free_port()
        if self.module is not None:
            arguments = ["-m", self.module, "--port", str(self.port)]
        else:
            program = (
                "from bastion.server import run_server; from bastion.config import Settings; "
                f"run_server(Settings(), app_factory={self.factory!r}, port={self.port})"
            )
            arguments = ["-c", program]
        self.process = subprocess.Popen(
            ["taskset", "-c", str(SERVER_CORE), self.python, *arguments],
            env=dict(self.env), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        return self

    def wait(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=1)
            except urllib.error.HTTPError:
                return  # answering, a 404 included
            except OSError:
                time.sleep(0.1)
            else:
                return
        raise RuntimeError(f"{self.name} did not start within {timeout:.0f} s")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None


@contextlib.contextmanager
def running(servers: list[Server]) -> Iterator[list[Server]]:
    """Starts them all (they idle on one core while another is measured), stops them all."""
    try:
        for server in servers:
            server.start()
        for server in servers:
            server.wait()
        yield servers
    finally:
        for server in servers:
            server.stop()


def pin_tree(pid: int, core: int) -> None:
    """Pins a process, its threads and its current children to ``core``; children forked
    later inherit it (PostgreSQL forks a backend per connection)."""
    pids = [pid]
    with contextlib.suppress(OSError):
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(child) for child in children]
    for each in pids:
        subprocess.run(["taskset", "-a", "-cp", str(core), str(each)], check=False,
                       capture_output=True)


@contextlib.contextmanager
def postgres() -> Iterator[str]:
    """A throw-away PostgreSQL on ``LOAD_CORE``, as tests/servers/postgres.py starts it;
    yields a fresh database's URL."""
    import asyncio

    from tests.servers.postgres import PostgresServer

    server = PostgresServer().start()
    try:
        postmaster = int((server.data_dir / "postmaster.pid").read_text().splitlines()[0])
        pin_tree(postmaster, LOAD_CORE)
        name = asyncio.run(server.create_database())
        yield server.url(name)
    finally:
        server.destroy()


def _call(port: int, method: str, path: str, body: bytes | None = None,
          headers: Mapping[str, str] | None = None) -> object:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", body, dict(headers or {}), method=method
    )
    with urllib.request.urlopen(request, timeout=30) as reply:
        raw = reply.read()
    return json.loads(raw) if raw else None


def account(port: int, username: str) -> tuple[str, str]:
    """Registers ``username`` and signs in: (user id, access token)."""
    body = {"username": username, "email": f"{username}@example.com", "password": PASSWORD,
            "age": 30}
    _call(port, "POST", "/auth/register", json.dumps(body).encode(),
          {"content-type": "application/json"})
    form = f"grant_type=password&username={username}&password={PASSWORD.replace(' ', '+')}"
    reply = _call(port, "POST", "/auth/token", form.encode(),
                  {"content-type": "application/x-www-form-urlencoded"})
    assert isinstance(reply, dict)
    token = str(reply["access_token"])
    me = _call(port, "GET", "/auth/me", headers={"authorization": f"Bearer {token}"})
    assert isinstance(me, dict)
    return str(me["id"]), token


def session_cookie(port: int, username: str) -> str:
    """Signs ``username`` in as a browser (``POST /auth/session``): the session cookie, as a
    ``Cookie`` header value."""
    form = f"username={username}&password={PASSWORD.replace(' ', '+')}"
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/auth/session", form.encode(),
        {"content-type": "application/x-www-form-urlencoded", "sec-fetch-site": "same-origin"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as reply:
        cookies = reply.headers.get_all("set-cookie") or []
    found = [line.split(";", 1)[0] for line in cookies if line.startswith("bastion_session=")]
    return str(found[0])


def peer_token(port: int) -> str:
    """Logs the peer's user in through fastapi-users' ``/auth/jwt/login``; the JWT, checked
    on ``/me``."""
    form = f"username={PEER_EMAIL.replace('@', '%40')}&password={PASSWORD.replace(' ', '+')}"
    reply = _call(port, "POST", "/auth/jwt/login", form.encode(),
                  {"content-type": "application/x-www-form-urlencoded"})
    assert isinstance(reply, dict)
    token = str(reply["access_token"])
    me = _call(port, "GET", "/me", headers={"authorization": f"Bearer {token}"})
    assert isinstance(me, dict)
    assert me["email"] == PEER_EMAIL
    return token


def create_notes(port: int, token: str, count: int, body: str) -> list[str]:
    """``count`` notes owned by the token's user; their ids."""
    ids = []
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
    for number in range(count):
        payload = json.dumps({"title": f"note {number}", "body": body}).encode()
        note = _call(port, "POST", "/notes", payload, headers)
        assert isinstance(note, dict)
        ids.append(str(note["id"]))
    return ids
