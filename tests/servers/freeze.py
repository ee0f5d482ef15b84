"""Freezing a test's own PostgreSQL server: SIGSTOP to the postmaster and every backend.

A frozen server still accepts TCP connections (the kernel completes the handshake) but never
answers: the case a timeout is for, unlike a stopped server, which refuses at once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

from tests.e2e.conftest import children_of
from tests.servers.postgres import PostgresServer


def postmaster_of(server: PostgresServer) -> int:
    return int((server.data_dir / "postmaster.pid").read_text().splitlines()[0])


def postgres_processes(server: PostgresServer) -> list[int]:
    """The postmaster and its children (backends, checkpointer, ...)."""
    postmaster = postmaster_of(server)
    return [postmaster, *children_of(postmaster)]


def signal_all(pids: list[int], signal_number: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal_number)


def _state(pid: int) -> str:
    """The process's state letter in /proc (``T``: stopped); empty once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


@contextlib.contextmanager
def frozen(server: PostgresServer, timeout: float = 5.0) -> Iterator[list[int]]:
    """The server stopped in its tracks for the block; continued afterwards, whatever the
    block raised. Yields the stopped processes.

    The postmaster is stopped first, and its children are listed only once it is: a
    backend it forked meanwhile (a new connection) would otherwise be missed, and answer."""
    postmaster = postmaster_of(server)
    stopped = [postmaster]
    try:
        signal_all(stopped, signal.SIGSTOP)
        deadline = time.monotonic() + timeout
        while _state(postmaster) not in ("T", ""):
            assert time.monotonic() < deadline, "the postmaster did not stop"
            time.sleep(0.01)
        stopped += children_of(postmaster)
        signal_all(stopped, signal.SIGSTOP)
        yield stopped
    finally:
        # Under root the server runs via runuser, which stops itself when its child stops
        # (job control) and must be continued too, or it never reaps the postmaster.
        wrapper = [server.process.pid] if server.process is not None else []
        signal_all([*stopped, *wrapper], signal.SIGCONT)
