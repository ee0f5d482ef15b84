"""A throw-away nginx in front of live servers: round robin over them, on a free loopback port.

Its own prefix, config, pid file, logs and temp dirs in a temp dir; never the system's
config nor a system service (``-g 'daemon off;'``: the process is the test's child). The
proxy lines are those of docs/deployment.md, so the services behind it see what they would
see behind a production nginx: ``X-Forwarded-For``, ``X-Forwarded-Proto``, the client's
``Host``. A missing binary fails the run (install the Debian package 'nginx').
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from tests.servers.postgres import free_port
from tests.servers.process import wait_or_kill

MISSING = (
    "nginx not found: install the Debian package 'nginx' (`make test` does this itself "
    "when run as root, through scripts/system-deps.sh)"
)
START_ATTEMPTS = 3

CONFIG = """\
{user}
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 512; }}
http {{
    access_log {root}/access.log;
    client_body_temp_path {root}/client_body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    upstream bastion {{
{servers}
        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{port};
        server_tokens off;
        location / {{
            proxy_pass http://bastion;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            # Every answer is the answer of the host nginx chose first: no silent retry on
            # the other one hides a refusal.
            proxy_next_upstream off;
            proxy_read_timeout 30s;
        }}
    }}
}}
"""


def _binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists()
                                      else None)
    if found is None:
        raise RuntimeError(MISSING)
    return found


def _accepts(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
        return True
    return False


class NginxServer:
    def __init__(self, upstream_ports: Sequence[int]) -> None:
        self.binary = _binary()
        self.upstream_ports = list(upstream_ports)
        self.root = Path(tempfile.mkdtemp(prefix="bastion-nginx-"))
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _config(self, port: int) -> Path:
        servers = "\n".join(f"        server 127.0.0.1:{p};" for p in self.upstream_ports)
        # As root, nginx's workers would run as nobody, who cannot reach a root-only temp dir.
        user = "user root;" if os.geteuid() == 0 else ""
        path = self.root / "nginx.conf"
        path.write_text(CONFIG.format(user=user, root=self.root, servers=servers, port=port))
        return path

    def start(self, timeout: float = 10.0) -> NginxServer:
        for _ in range(START_ATTEMPTS):  # the free port may be taken before nginx binds it
            port = free_port()
            config = self._config(port)
            with open(self.root / "server.log", "ab") as log:
                self.process = subprocess.Popen(
                    [self.binary, "-p", str(self.root), "-c", str(config),
                     "-e", str(self.root / "error.log"), "-g", "daemon off;"],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.process.poll() is None:
                if _accepts(port):
                    self.port = port
                    return self
                time.sleep(0.05)
            self.stop()
        raise RuntimeError(f"nginx did not start:\n{self.log_tail()}")

    def log_tail(self) -> str:
        texts = []
        for name in ("server.log", "error.log"):
            with contextlib.suppress(OSError):
                texts.append((self.root / name).read_text(errors="replace")[-2000:])
        return "\n".join(texts)

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()  # SIGTERM: nginx's fast shutdown
        wait_or_kill(self.process, timeout=10)
        self.process = None

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
