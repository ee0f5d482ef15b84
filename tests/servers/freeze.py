"""Freezing a test's own PostgreSQL server: SIGSTOP to the postmaster and every backend.

A frozen server still accepts TCP connections (the kernel completes the handshake) but never
answers: the case a timeout is for, unlike a stopped server, which refuses at once.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator

from tests.e2e.conftest import children_of
from tests.servers.postgres import PostgresServer


def postgres_processes(server: PostgresServer) -> list[int]:
    """The postmaster and its children (backends, checkpointer, ...)."""
    postmaster = int((server.data_dir / "postmaster.pid").read_text().splitlines()[0])
    return [postmaster, *children_of(postmaster)]


def signal_all(pids: list[int], signal_number: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal_number)


@contextlib.contextmanager
def frozen(server: PostgresServer) -> Iterator[list[int]]:
    """The server stopped in its tracks for the block; continued afterwards, whatever the
    block raised. Yields the stopped processes."""
    stopped = postgres_processes(server)
    signal_all(stopped, signal.SIGSTOP)
    try:
        yield stopped
    finally:
        # Under root the server runs via runuser, which stops itself when its child stops
        # (job control) and must be continued too, or it never reaps the postmaster.
        wrapper = [server.process.pid] if server.process is not None else []
        signal_all([*stopped, *wrapper], signal.SIGCONT)
