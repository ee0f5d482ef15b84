"""Stopping a server process the tests started."""

from __future__ import annotations

import subprocess


def wait_or_kill(process: subprocess.Popen[bytes], timeout: float) -> None:
    """Waits for a process asked to stop; kills it if it takes longer than ``timeout``."""
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
