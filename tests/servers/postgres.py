"""A throw-away PostgreSQL server from the installed binaries (initdb in a temp dir).

PostgreSQL refuses to run as root; CI runs as root, so there the server runs as the
``postgres`` system user that Debian's package creates. Durability settings are off: the
data dies with the test session anyway.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import asyncpg

from tests.servers.process import wait_or_kill

MISSING = (
    "PostgreSQL server binaries (initdb, postgres) not found: install the Debian package "
    "'postgresql' (`make test` does this itself when run as root)"
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _bin_dir() -> Path:
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda path: int(path.parent.parent.name) if path.parent.parent.name.isdigit() else 0,
    )
    if candidates:
        return candidates[-1].parent
    initdb = shutil.which("initdb")
    if initdb and (Path(initdb).resolve().parent / "postgres").exists():
        return Path(initdb).resolve().parent
    raise RuntimeError(MISSING)


class PostgresServer:
    def __init__(self) -> None:
        self.bin_dir = _bin_dir()
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="bastion-pg-"))
        self.data_dir = self.root / "data"
        self.process: subprocess.Popen[bytes] | None = None
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            try:
                account = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError(
                    "running as root needs the 'postgres' system user; install the Debian "
                    "package 'postgresql'"
                ) from None
            os.chown(self.root, account.pw_uid, account.pw_gid)
            self._as_user = ["runuser", "-u", "postgres", "--"]

    def _run(self, command: Sequence[str]) -> None:
        subprocess.run(
            [*self._as_user, *command], check=True, capture_output=True, timeout=120
        )

    def start(self) -> PostgresServer:
        if not self.data_dir.exists():
            self._run(
                [str(self.bin_dir / "initdb"), "-D", str(self.data_dir), "-U", "postgres",
                 "--auth=trust", "-E", "UTF8", "--no-sync", "--locale=C"]
            )
        with open(self.root / "server.log", "ab") as log:
            self.process = subprocess.Popen(
                [*self._as_user, str(self.bin_dir / "postgres"), "-D", str(self.data_dir),
                 "-h", "127.0.0.1", "-p", str(self.port), "-k", str(self.root),
                 "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                 "-c", "max_connections=300"],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._wait_until_ready()
        return self

    def _wait_until_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                log = (self.root / "server.log").read_text(errors="replace")
                raise RuntimeError(f"PostgreSQL exited at start:\n{log[-2000:]}")
            with contextlib.suppress(OSError), socket.create_connection(
                ("127.0.0.1", self.port), timeout=0.5
            ):
                try:
                    subprocess.run(
                        [str(self.bin_dir / "pg_isready"), "-h", "127.0.0.1", "-p",
                         str(self.port), "-U", "postgres"],
                        check=True, capture_output=True, timeout=5,
                    )
                except subprocess.CalledProcessError:
                    pass
                else:
                    return
            time.sleep(0.1)
        raise RuntimeError("PostgreSQL did not become ready within 30 s")

    def stop(self) -> None:
        if self.process is None:
            return
        # SIGINT is PostgreSQL's "fast" shutdown (SIGTERM would wait for clients). It goes to
        # the postmaster itself: under runuser, self.process is runuser, not postgres.
        with contextlib.suppress(OSError, ValueError, IndexError):
            postmaster = int((self.data_dir / "postmaster.pid").read_text().splitlines()[0])
            os.kill(postmaster, signal.SIGINT)
        wait_or_kill(self.process, timeout=20)
        self.process = None

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    async def create_database(self) -> str:
        name = f"test_{uuid.uuid4().hex}"
        connection = await asyncpg.connect(
            host="127.0.0.1", port=self.port, user="postgres", database="postgres"
        )
        try:
            await connection.execute(f'CREATE DATABASE "{name}"')
        finally:
            await connection.close()
        return name

    async def drop_database(self, name: str) -> None:
        connection = await asyncpg.connect(
            host="127.0.0.1", port=self.port, user="postgres", database="postgres"
        )
        try:
            await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await connection.close()
