"""``make profile``: where a worker's time goes under ``/auth/me`` and ``/health/live`` load.

Starts bastion (one uvicorn worker on core 0, SQLite), loads one route at a time with wrk
on core 1, and samples the worker with ``py-spy record --format speedscope``. Writes
bench/out/profile-<route>.speedscope.json (open it at speedscope.app or any speedscope
viewer) and prints a summary read from it: the share of samples by package (where the
leaf frame is) and the functions with the largest inclusive share.
Run: ``.venv/bin/python -m bench.profile`` (needs py-spy from bench/requirements.txt and
ptrace rights over the worker: root, or kernel.yama.ptrace_scope=0).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from bench import servers, wrk

OUT = Path(__file__).resolve().parent / "out"
SECONDS = 8
TOP = 15
# Where a file belongs, checked in order: the first marker found in its path names it.
PACKAGES = (
    ("/bastion/", "bastion"), ("/fastapi/", "fastapi"), ("/starlette/", "starlette"),
    ("/uvicorn/", "uvicorn"), ("/pydantic", "pydantic"), ("/sqlalchemy/", "sqlalchemy"),
    ("/aiosqlite/", "aiosqlite"), ("/jwt/", "pyjwt"), ("/cryptography/", "cryptography"),
    ("/structlog/", "structlog"), ("/limits/", "limits"), ("/orjson", "orjson"),
    ("/asyncio/", "asyncio"), ("/logging/", "logging"), ("/anyio/", "anyio"),
)


def _package(file: str) -> str:
    for marker, name in PACKAGES:
        if marker in file:
            return name
    return "other (stdlib, C)" if file else "unknown"


def summarise(speedscope: Path) -> str:
    """Self time by package and the top inclusive functions, over every thread's samples."""
    document = json.loads(speedscope.read_text())
    frames = document["shared"]["frames"]
    by_package: Counter[str] = Counter()
    inclusive: Counter[int] = Counter()
    total = 0.0
    for profile in document["profiles"]:
        for stack, weight in zip(profile["samples"], profile["weights"], strict=True):
            if not stack:
                continue
            total += weight
            by_package[_package(frames[stack[-1]].get("file", ""))] += weight
            for index in set(stack):
                inclusive[index] += weight
    if not total:
        return "no samples\n"
    lines = ["self time by package (leaf frame):"]
    lines += [f"  {share / total:6.1%}  {name}" for name, share in by_package.most_common()]
    lines.append(f"top {TOP} functions by inclusive time:")
    for index, share in inclusive.most_common(TOP):
        frame = frames[index]
        where = f"{Path(frame.get('file', '?')).name}:{frame.get('line', '?')}"
        lines.append(f"  {share / total:6.1%}  {frame['name']}  ({where})")
    return "\n".join(lines) + "\n"


def record(pid: int, port: int, load: wrk.Load, name: str) -> Path:
    output = OUT / f"profile-{name}.speedscope.json"
    generator = wrk.start(port, load, core=servers.LOAD_CORE, seconds=SECONDS + 3)
    try:
        time.sleep(1)
        subprocess.run(
            [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(pid),
             "--duration", str(SECONDS), "--rate", "250", "--format", "speedscope",
             "--output", str(output)],
            check=True, capture_output=True, timeout=SECONDS + 60,
        )
    finally:
        result = wrk.finish(generator)
    print(f"{name}: {result.rate:,.0f} req/s while sampled", file=sys.stderr)
    return output


def main() -> None:
    if shutil.which("py-spy", path=str(Path(sys.executable).parent)) is None:
        sys.exit("py-spy not found in the venv: pip install -r bench/requirements.txt")
    OUT.mkdir(exist_ok=True)
    data_dir = Path(tempfile.mkdtemp(prefix="bastion-profile-"))
    try:
        env = servers.bastion_env(data_dir)
        servers.migrate(env)
        server = servers.Server("bastion", "bastion.app:app_from_environment", env)
        with servers.running([server]):
            _, token = servers.account(server.port, "bench_profile")
            loads = {
                "auth-me": wrk.Load("/auth/me", (f"Authorization: Bearer {token}",)),
                "health-live": wrk.Load("/health/live"),
            }
            for name, load in loads.items():
                wrk.run(server.port, load, core=servers.LOAD_CORE, seconds=1)  # warm-up
                path = record(server.pid, server.port, load, name)
                summary = summarise(path)
                (OUT / f"profile-{name}.txt").write_text(summary)
                print(f"== {load.path} ({path.relative_to(OUT.parent.parent)})\n{summary}")
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
