"""Memory under a burst of large bodies: 100 requests at once, each as large as the route
takes (a note body of ``NOTE_BODY_BYTES`` that parses but is too long for the field), sent to
a served bastion worker. Reports the worker's resident memory before, at its peak during the
burst (``VmHWM``, reset first through ``/proc/<pid>/clear_refs``) and 2 s after, in MB.

Run: ``.venv/bin/python -m bench.bursts`` (``make bench`` runs it beside target 5).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bastion.notes.schemas import NOTE_BODY_BYTES
from bench import servers

BURST = 100


def _status_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


def _large_note() -> bytes:
    """A JSON body of exactly ``NOTE_BODY_BYTES``: valid JSON, a body far over 64 KiB (422)."""
    head, tail = b'{"title": "burst", "body": "', b'"}'
    return head + b"x" * (NOTE_BODY_BYTES - len(head) - len(tail)) + tail


async def _post(port: int, token: str, body: bytes) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (
        f"POST /notes HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    writer.write(head + body)
    await writer.drain()
    status_line = await reader.readline()
    writer.close()
    return int(status_line.split()[1])


async def _burst(port: int, token: str) -> list[int]:
    body = _large_note()
    return await asyncio.gather(*(_post(port, token, body) for _ in range(BURST)))


def measure() -> dict[str, float]:
    data_dir = Path(tempfile.mkdtemp(prefix="bastion-burst-"))
    try:
        server = servers.Server("bastion", "bastion.app:app_from_environment",
                                servers.bastion_env(data_dir))
        servers.migrate(server.env)
        with servers.running([server]):
            assert server.process is not None
            _, token = servers.account(server.port, "bench_burst")
            pid = server.process.pid  # taskset execs the worker: the same process
            before = _status_mb(pid, "VmRSS")  # after start-up and a few small requests
            Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM to VmRSS
            statuses = asyncio.run(_burst(server.port, token))
            peak = _status_mb(pid, "VmHWM")
            time.sleep(2)
            after = _status_mb(pid, "VmRSS")
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    return {"burst": BURST, "body_bytes": NOTE_BODY_BYTES, "before_mb": before,
            "peak_growth_mb": peak - before, "after_growth_mb": after - before,
            "not_422": sum(status != 422 for status in statuses)}


if __name__ == "__main__":
    sys.stdout.write(json.dumps(measure()) + "\n")
