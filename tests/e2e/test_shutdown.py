"""SIGTERM with several workers: new connections are refused at once, the requests in flight
are finished (issue 11, finding 4)."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from tests.e2e.api import FAST_HASHING_ENV
from tests.e2e.conftest import running, service_env
from tests.e2e.test_rate_limits import WORKERS, wait_for_workers, workers_command
from tests.servers.redis import RedisServer

REFUSED_WITHIN_SECONDS = 3.0
BODY = (
    b'{"username": "late", "email": "late@example.com", "age": 30,'
    b' "password": "a long enough passphrase 7"}'
)


def connection_refused(port: int) -> bool:
    """Whether a new connection is refused, rather than accepted and left unanswered."""
    try:
        probe = socket.create_connection(("127.0.0.1", port), timeout=1)
    except ConnectionRefusedError:
        return True
    probe.close()
    return False


def wait_until_refused(port: int, within: float = REFUSED_WITHIN_SECONDS) -> float:
    """Seconds until a new connection to ``port`` is refused; fails past ``within``."""
    started = time.monotonic()
    while not connection_refused(port):
        assert time.monotonic() - started < within, "new connections still accepted"
        time.sleep(0.1)
    return time.monotonic() - started


def half_sent_request(port: int) -> socket.socket:
    """A request in flight: its head is in, half its body is not, so a worker waits on it
    (a registration: ``finish`` expects its 201)."""
    in_flight = socket.create_connection(("127.0.0.1", port), timeout=10)
    in_flight.sendall(
        b"POST /auth/register HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\n"
        + f"Content-Length: {len(BODY)}\r\n\r\n".encode()
        + BODY[:20]
    )
    return in_flight


def finish(in_flight: socket.socket) -> bytes:
    """The rest of ``half_sent_request``'s body, then the start of its answer."""
    in_flight.sendall(BODY[20:])
    reply = in_flight.recv(4096)
    in_flight.close()
    return reply


def test_a_stopping_server_refuses_new_connections_and_finishes_those_in_flight(
    tmp_path: Path, own_redis: RedisServer
) -> None:
    env = service_env(tmp_path / "data", redis_url=own_redis.url, **FAST_HASHING_ENV)
    with running(workers_command(WORKERS), root=tmp_path, env=env, backend="sqlite") as server:
        wait_for_workers(server)
        in_flight = half_sent_request(server.port)
        time.sleep(0.5)
        server.process.terminate()  # SIGTERM to the supervisor, as systemd or docker stop do
        wait_until_refused(server.port)
        reply = finish(in_flight)
        assert reply.startswith(b"HTTP/1.1 201 "), reply[:200]
