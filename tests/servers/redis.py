"""A throw-away Redis server from the installed binary, on loopback, with no persistence.

``stop()`` and ``start()`` again keep the port, so a test can take Redis away from a live
client and give it back. Running as root is fine for Redis.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.servers.postgres import free_port
from tests.servers.process import wait_or_kill

MISSING = (
    "redis-server not found: install the Debian package 'redis-server' "
    "(`make test` does this itself when run as root)"
)
START_ATTEMPTS = 3


def _binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    if Path("/usr/bin/redis-server").exists():
        return "/usr/bin/redis-server"
    raise RuntimeError(MISSING)


def _answers_ping(port: int) -> bool:
    with (
        contextlib.suppress(OSError),
        socket.create_connection(("127.0.0.1", port), timeout=0.5) as connection,
    ):
        connection.sendall(b"PING\r\n")
        return connection.recv(64).startswith(b"+PONG")
    return False


class RedisServer:
    def __init__(self) -> None:
        self.binary = _binary()
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="bastion-redis-"))
        self.process: subprocess.Popen[bytes] | None = None
        self._started_once = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        # The first start may lose the port to another process between free_port() and bind
        # (parallel workers); later starts must keep it, since clients already point there.
        for _ in range(1 if self._started_once else START_ATTEMPTS):
            if self._launch():
                self._started_once = True
                return self
            if self._started_once:
                break
            self.port = free_port()
        raise RuntimeError(f"redis-server did not start:\n{self._log_tail()}")

    def _launch(self, timeout: float = 10.0) -> bool:
        with open(self.root / "server.log", "ab") as log:
            self.process = subprocess.Popen(
                [
                    self.binary,
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(self.root),
                    "--protected-mode",
                    "no",
                    "--daemonize",
                    "no",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.process = None
                return False
            if _answers_ping(self.port):
                return True
            time.sleep(0.02)
        self.stop()
        return False

    def _log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return (self.root / "server.log").read_text(errors="replace")[-2000:]
        return ""

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        wait_or_kill(self.process, timeout=10)
        self.process = None

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
