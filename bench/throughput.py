"""Requests per second through uvicorn (one worker each), measured with wrk.

A bare FastAPI route (alone, and behind bastion's route table) against the same route behind
bastion (every middleware, a require()-guarded bearer token, the access log to /dev/null).
Needs Debian's ``wrk``; wrk and the server share the machine's cores.
Run: ``.venv/bin/python bench/throughput.py``. Not part of the test run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

DURATION = "8s"
CONNECTIONS = "32"
ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _serve(factory: str, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    program = (
        "from bastion.server import run_server; from bastion.config import Settings; "
        f"run_server(Settings(), app_factory={factory!r}, port={port})"
    )
    return subprocess.Popen(
        [sys.executable, "-c", program],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _wait(port: int) -> None:
    for _ in range(100):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/bench", timeout=1)
        except urllib.error.HTTPError:
            return  # answering (401 without a token is fine)
        except OSError:
            time.sleep(0.1)
        else:
            return
    raise RuntimeError("server did not start")


def _wrk(port: int, token: str | None) -> tuple[float, int]:
    """Requests per second and the number of requests wrk completed."""
    command = ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{DURATION}", f"http://127.0.0.1:{port}/bench"]
    if token:
        command[1:1] = ["-H", f"Authorization: Bearer {token}"]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    count = re.search(r"(\d+) requests in", output)
    assert rate and count, output
    return float(rate.group(1)), int(count.group(1))


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _token(port: int) -> str:
    body = json.dumps(
        {"username": "runner", "email": "runner@example.com", "password": "a long benchmark phrase",
         "age": 30}
    ).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/auth/register", body, {"content-type": "application/json"}
    )
    urllib.request.urlopen(request, timeout=10)
    form = b"grant_type=password&username=runner&password=a+long+benchmark+phrase"
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/auth/token", form, timeout=10) as reply:
        token: str = json.load(reply)["access_token"]
        return token


def main() -> None:
    if shutil.which("wrk") is None:
        sys.exit("wrk not found: apt-get install wrk")
    data_dir = tempfile.mkdtemp()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    env.update({"BASTION_DATA_DIR": data_dir, "PYTHONPATH": str(ROOT)})
    # Limits stay on (every request is counted) but high enough that wrk measures the
    # counting, not a stream of 429s.
    env.update(
        {
            "BASTION_RATE_LIMIT_DEFAULT": "1000000000/minute",
            "BASTION_RATE_LIMIT_LOGIN": "1000/minute",
        }
    )
    results: dict[str, float] = {}
    cpu: dict[str, float] = {}
    apps = (
        ("bare", "bench.apps:bare"),
        ("table", "bench.apps:bare_with_bastions_routes"),
        ("bastion", "bench.apps:guarded"),
    )
    for name, factory in apps:
        if name == "bastion":
            subprocess.run(
                [str(Path(sys.executable).parent / "bastion"), "migrate"],
                env=env, cwd=data_dir, check=True, capture_output=True,
            )
        port = _free_port()
        server = _serve(factory, port, env)
        try:
            _wait(port)
            token = _token(port) if name == "bastion" else None
            _wrk(port, token)  # warm-up
            cpu_before = _cpu_seconds(server.pid)
            results[name], count = _wrk(port, token)
            # The server's own CPU per request: steadier than req/s on a shared machine,
            # where wrk and neighbours take cores from the server unevenly.
            cpu[name] = (_cpu_seconds(server.pid) - cpu_before) / count * 1e6
        finally:
            server.terminate()
            server.wait(timeout=20)
    shutil.rmtree(data_dir, ignore_errors=True)
    labels = {
        "bare": "bare FastAPI route, alone:        ",
        "table": "bare route, bastion's route table:",
        "bastion": "bastion, require() + bearer:      ",
    }
    for name, label in labels.items():
        print(f"{label} {results[name]:8.0f} req/s, {cpu[name]:6.1f} us of server CPU a request")
    print(
        f"bastion against the same table: {results['bastion'] / results['table']:.2f}x by req/s, "
        f"{cpu['table'] / cpu['bastion']:.2f}x by server CPU"
    )


if __name__ == "__main__":
    main()
