"""Running wrk pinned to the load generator's core and reading its figures.

Every run uses a Lua script built on ``lua/report.lua``, which prints one JSON line
(latencies in microseconds, 5xx answers counted apart from other non-2xx ones): wrk's own
text output rounds latencies and does not tell a 503 from a 404.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

LUA_DIR = Path(__file__).resolve().parent / "lua"
REPORT_LUA = LUA_DIR / "report.lua"
MARKER = "BENCH "


@dataclass(frozen=True, slots=True)
class WrkResult:
    """One wrk run: throughput and latency percentiles (milliseconds)."""

    requests: int
    rate: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    non_2xx_3xx: int
    server_errors: int
    socket_errors: int


@dataclass(frozen=True, slots=True)
class Load:
    """What one wrk run sends: a path with headers, or a Lua script that makes requests."""

    path: str = "/"
    headers: tuple[str, ...] = ()
    script: Path = REPORT_LUA
    env: tuple[tuple[str, str], ...] = ()
    connections: int = 32


def command(port: int, load: Load, *, core: int, seconds: float) -> list[str]:
    """wrk on one thread, pinned to ``core`` so that it never takes the server's."""
    args = ["taskset", "-c", str(core), "wrk", "-t1", f"-c{load.connections}",
            f"-d{max(1, round(seconds))}s", "--timeout", "10s", "-s", str(load.script)]
    for header in load.headers:
        args += ["-H", header]
    return [*args, f"http://127.0.0.1:{port}{load.path}"]


def start(port: int, load: Load, *, core: int, seconds: float) -> subprocess.Popen[str]:
    """A wrk run in the background (for a load that runs beside a measured one)."""
    env = {**os.environ, "BENCH_LUA_DIR": str(LUA_DIR), **dict(load.env)}
    return subprocess.Popen(
        command(port, load, core=core, seconds=seconds), env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


def finish(process: subprocess.Popen[str]) -> WrkResult:
    stdout, stderr = process.communicate(timeout=120)
    if process.returncode != 0:
        raise RuntimeError(f"wrk failed ({process.returncode}): {stderr.strip()}")
    return parse(stdout)


def run(port: int, load: Load, *, core: int, seconds: float) -> WrkResult:
    return finish(start(port, load, core=core, seconds=seconds))


def parse(output: str) -> WrkResult:
    line = next((line for line in output.splitlines() if line.startswith(MARKER)), None)
    if line is None:
        raise RuntimeError(f"wrk printed no figures:\n{output}")
    figures = json.loads(line[len(MARKER):])
    seconds = figures["duration_us"] / 1e6
    return WrkResult(
        requests=figures["requests"],
        rate=figures["requests"] / seconds if seconds else 0.0,
        p50_ms=figures["p50"] / 1000,
        p99_ms=figures["p99"] / 1000,
        max_ms=figures["max"] / 1000,
        non_2xx_3xx=figures["non_2xx_3xx"],
        server_errors=figures["server_errors"],
        socket_errors=figures["socket_errors"],
    )
