"""``slow-connections``: one address opens far more connections than
``BASTION_MAX_CONNECTIONS_PER_ADDRESS`` and holds them: idle ones that never send a byte,
slow-loris ones that send a head a line at a time and never finish it, and kept-alive ones
idle after an answer. Meanwhile clients of other addresses (127.0.0.2 writing and reading
notes, 127.0.0.3 asking ``/health/live`` and ``/health/ready``) are served as usual.

The connections past the cap are closed at once; those within it are closed by the server
itself once their head is late (``REQUEST_HEAD_TIMEOUT_SECONDS``, counted from the start, a
trickle of header lines does not extend it) or their keep-alive has run out, after which the
address is served again. The reduced run closes its connections itself instead of waiting.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bastion.server import KEEP_ALIVE_SECONDS, REQUEST_HEAD_TIMEOUT_SECONDS
from tests.e2e.conftest import LiveServer
from tests.faults.checks import assert_answer, assert_readiness
from tests.faults.load import Load, verify
from tests.faults.serving import Setup, fault_env, serving
from tests.faults.table import FaultRow, expected

FAULT = "slow-connections"
CAP = 20
KEPT_ALIVE = 5
SLOW_LORIS = 10
GREEDY = "127.0.0.1"  # the tests' usual address: the one that holds too many connections
WRITER = "127.0.0.2"
PROBE = "127.0.0.3"
# The connections past the cap are closed as fast as the server accepts them: on a busy
# host hundreds of them take it a few seconds. Less than the head timeout, after which the
# ones within the cap go too.
CLOSED_WITHIN_SECONDS = REQUEST_HEAD_TIMEOUT_SECONDS - 2.0
# The server closes what is left of them by itself: the head timeout, plus a margin.
TIMED_OUT_WITHIN_SECONDS = REQUEST_HEAD_TIMEOUT_SECONDS + 3.0
PROBES = 5


def _left_open(connections: list[socket.socket], deadline: float) -> list[socket.socket]:
    """The connections the server has not closed, once they are down to the cap (or at the
    deadline)."""
    while True:
        open_ones = [c for c in connections if not _closed_by_server(c)]
        if len(open_ones) <= CAP or time.monotonic() > deadline:
            return open_ones
        time.sleep(0.1)


def _answer(connection: socket.socket) -> bytes:
    """One whole answer (head and ``Content-Length`` body) read from ``connection``."""
    received = b""
    while b"\r\n\r\n" not in received:
        received += connection.recv(4096)
    head, _, body = received.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += connection.recv(4096)
    return received


def _closed_by_server(connection: socket.socket) -> bool:
    """Whether the server has closed ``connection`` (end of stream or reset), unread data
    aside; never blocks."""
    connection.settimeout(0.0)
    try:
        return connection.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


def _connect(port: int) -> socket.socket:
    connection = socket.create_connection(("127.0.0.1", port), timeout=5,
                                          source_address=(GREEDY, 0))
    return connection


@contextlib.contextmanager
def greedy_connections(
    server: LiveServer, idle: int
) -> Iterator[tuple[list[socket.socket], list[socket.socket]]]:
    """From ``GREEDY``: ``KEPT_ALIVE`` connections that had one answer and stay open, then
    ``SLOW_LORIS`` that sent part of a head, then ``idle`` that sent nothing; all closed
    at the end. Yields them all, and the slow-loris ones."""
    connections: list[socket.socket] = []
    slow_ones: list[socket.socket] = []
    try:
        for _ in range(KEPT_ALIVE):
            kept = _connect(server.port)
            connections.append(kept)
            kept.sendall(b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert _answer(kept).startswith(b"HTTP/1.1 200 ")
        for number in range(SLOW_LORIS):
            slow = _connect(server.port)
            slow.sendall(f"GET /notes?slow={number} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode())
            slow_ones.append(slow)
        connections.extend(slow_ones)
        connections.extend(_connect(server.port) for _ in range(idle))
        yield connections, slow_ones
    finally:
        for connection in connections:
            connection.close()


def _probe(row: FaultRow, client: httpx.Client) -> None:
    """Another address is answered: live, and ready as the row says."""
    live = client.get("/health/live")
    assert_answer(row, live)
    assert live.status_code == 200, live.text
    assert_readiness(row, client.get("/health/ready"))


def _greedy_served(server: LiveServer) -> bool:
    with contextlib.suppress(httpx.TransportError), httpx.Client(
        base_url=server.base_url, timeout=3, transport=httpx.HTTPTransport(local_address=GREEDY)
    ) as client:
        return client.get("/health/live").status_code == 200
    return False


@pytest.mark.parametrize(
    "idle, wait_for_the_server",
    [
        pytest.param(3 * CAP, False, id="closed-by-the-client"),
        pytest.param(5 * CAP, True, id="timed-out-by-the-server", marks=pytest.mark.full_faults),
    ],
)
def test_one_address_holding_connections_does_not_starve_the_others(
    idle: int, wait_for_the_server: bool, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    row = expected(FAULT)
    setup = Setup("sqlite")
    env = fault_env(tmp_path, setup, request, max_connections_per_address=str(CAP))
    probe = httpx.Client(timeout=5, transport=httpx.HTTPTransport(local_address=PROBE))
    with serving(tmp_path / "server", setup, env) as server, probe:
        probe.base_url = httpx.URL(server.base_url)
        load = Load(server.base_url, clients=3, reads=True, local_address=WRITER).start()
        try:
            load.wait_for_notes(10, every_client=True)
            with greedy_connections(server, idle) as (held, slow_ones):
                opened = time.monotonic()
                open_ones = _left_open(held, opened + CLOSED_WITHIN_SECONDS)
                # Per worker (one here): the cap's worth stay, every one past it is closed.
                assert len(open_ones) == CAP, (len(open_ones), len(held))
                assert not _greedy_served(server), "a connection past the cap was served"
                for _ in range(PROBES):
                    _probe(row, probe)
                during = load.ledger.sent_between(opened)
                if wait_for_the_server:
                    trickle_until_closed(open_ones, slow_ones)
                    assert time.monotonic() - opened < TIMED_OUT_WITHIN_SECONDS
            assert _greedy_served(server), "the address is not served again"
        finally:
            ledger = load.stop()
        found = verify(server.base_url, ledger)
        records = server.log_records()

    ledger.assert_no_server_error()
    assert during and all(a.response is not None for a in during), ledger.summary()
    for answer in during:
        assert answer.response is not None
        assert answer.status in (200, 201), answer
        assert "retry-after" not in answer.response.headers, answer
    assert found.unacknowledged == [], found
    assert row.log_event is None, row
    noisy = [r for r in records if str(r.get("level")) in ("warning", "error", "critical")]
    assert not noisy, noisy[:5]


def trickle_until_closed(connections: list[socket.socket], slow_ones: list[socket.socket]
                         ) -> None:
    """One more header line a second on each of ``slow_ones`` until the server has closed
    all ``connections`` (head timeout, keep-alive timeout) or ``TIMED_OUT_WITHIN_SECONDS``
    is over."""
    deadline = time.monotonic() + TIMED_OUT_WITHIN_SECONDS
    assert KEEP_ALIVE_SECONDS < REQUEST_HEAD_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        alive = [c for c in connections if not _closed_by_server(c)]
        if not alive:
            return
        for connection in (c for c in alive if c in slow_ones):
            with contextlib.suppress(OSError):
                connection.send(b"X-Slow: still here\r\n")
        time.sleep(1.0)
    raise AssertionError(f"{len(alive)} slow connections still open")
