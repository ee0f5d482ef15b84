"""TLS in the real server: `bastion dev-cert`, then `bastion serve --ssl-certfile --ssl-keyfile`.

Clients trust the dev certificate as their only CA. Handshakes are pinned to one protocol
version (or one suite) so that each test says exactly what the server accepts. The
request-head limit is tried here too: it is the same server, reached the way a client on the
network would reach it.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from bastion.devcert import CERT_FILE_NAME, KEY_FILE_NAME
from bastion.middleware.secure_headers import HSTS
from bastion.server import MAX_REQUEST_HEAD_BYTES
from tests.e2e.conftest import (
    LiveServer,
    assert_secure_headers,
    raw_exchange,
    run_bastion,
    running,
    serve_command,
    service_env,
)
from tests.servers.redis import RedisServer
from tests.test_server import CBC_SUITE, client_context

# Its own Redis database: other tests flush database 0 of the session's Redis.
REDIS_DATABASE = 15
SIMPLE_REQUEST = b"GET /health/live HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"


@dataclass
class TLSServer:
    live: LiveServer
    certfile: Path

    @property
    def port(self) -> int:
        return self.live.port

    def url(self, host: str = "localhost") -> str:
        return f"https://{host}:{self.port}"

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.certfile))


def _dev_cert(root: Path, env: Mapping[str, str]) -> tuple[Path, Path]:
    result = run_bastion("dev-cert", env=env, cwd=root)
    if result.returncode != 0:
        pytest.fail(f"`bastion dev-cert` exited {result.returncode}:\n{result.stderr}")
    data_dir = Path(env["BASTION_DATA_DIR"])
    return data_dir / CERT_FILE_NAME, data_dir / KEY_FILE_NAME


@contextlib.contextmanager
def https_service(root: Path, *options: str, **variables: str) -> Iterator[TLSServer]:
    """``bastion serve`` on SQLite with a fresh dev certificate, like conftest's ``service``
    but ready once it answers over HTTPS (a plain-HTTP probe cannot reach a TLS port)."""
    root.mkdir(parents=True, exist_ok=True)
    env = service_env(root / "data", **variables)
    certfile, keyfile = _dev_cert(root, env)
    tls = ["--ssl-certfile", str(certfile), "--ssl-keyfile", str(keyfile)]

    def command(port: int) -> list[str]:
        return [*serve_command(port), *tls, *options]

    with running(command, root=root, env=env, backend="sqlite", certfile=certfile) as server:
        yield TLSServer(server, certfile)


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TLSServer]:
    with https_service(tmp_path_factory.mktemp("tls")) as server:
        yield server


def pinned(server: TLSServer, version: ssl.TLSVersion) -> ssl.SSLContext:
    context = server.context()
    context.minimum_version = version
    context.maximum_version = version
    return context


def exchange(port: int, context: ssl.SSLContext, request: bytes | None = None) -> tuple[str, bytes]:
    """Handshake (``ssl.SSLError`` if refused), send ``request``, and read the whole reply."""
    request = request or SIMPLE_REQUEST
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        version = tls.version()
        assert version is not None
        tls.sendall(request)
        reply = b""
        with contextlib.suppress(ConnectionResetError, ssl.SSLEOFError):
            while chunk := tls.recv(65536):
                reply += chunk
        return version, reply


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
def test_https_verified_against_the_dev_certificate(tls_server: TLSServer, host: str) -> None:
    with httpx.Client(verify=tls_server.context(), timeout=10.0) as client:
        response = client.get(f"{tls_server.url(host)}/health/live")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert_secure_headers(response)


def test_https_responses_carry_hsts(tls_server: TLSServer) -> None:
    with httpx.Client(verify=tls_server.context(), timeout=10.0) as client:
        for path in ("/health/live", "/no-such-route"):
            response = client.get(f"{tls_server.url()}{path}")
            assert response.headers.get("strict-transport-security") == HSTS, path


def test_a_client_that_does_not_trust_the_certificate_is_refused(tls_server: TLSServer) -> None:
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{tls_server.url()}/health/live", verify=ssl.create_default_context())


@pytest.mark.parametrize(
    ("version", "name"),
    [(ssl.TLSVersion.TLSv1_2, "TLSv1.2"), (ssl.TLSVersion.TLSv1_3, "TLSv1.3")],
)
def test_tls_12_and_13_handshakes(
    tls_server: TLSServer, version: ssl.TLSVersion, name: str
) -> None:
    negotiated, reply = exchange(tls_server.port, pinned(tls_server, version))
    assert negotiated == name
    assert reply.startswith(b"HTTP/1.1 200 "), reply[:100]


def test_a_client_capped_at_tls_11_is_refused(tls_server: TLSServer) -> None:
    # The same client gets through a permissive server: see tests/test_server.py.
    context = client_context(tls_server.certfile, maximum=ssl.TLSVersion.TLSv1_1)
    with pytest.raises(ssl.SSLError):
        exchange(tls_server.port, context)


def test_a_tls_12_suite_without_aead_is_refused(tls_server: TLSServer) -> None:
    context = client_context(tls_server.certfile, maximum=ssl.TLSVersion.TLSv1_2, ciphers=CBC_SUITE)
    with pytest.raises(ssl.SSLError):
        exchange(tls_server.port, context)


def test_plain_http_to_the_tls_port_fails(tls_server: TLSServer) -> None:
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{tls_server.port}/health/live", timeout=10.0)
    plain = b"GET /health/live HTTP/1.1\r\nHost: localhost\r\n\r\n"
    reply = raw_exchange(tls_server.port, plain)
    assert b"HTTP/" not in reply
    assert b"status" not in reply


def test_an_oversized_request_head_is_refused(tls_server: TLSServer) -> None:
    context = tls_server.context()
    fits = b"x" * (MAX_REQUEST_HEAD_BYTES // 2)
    _, reply = exchange(
        tls_server.port,
        context,
        b"GET /health/live HTTP/1.1\r\nHost: localhost\r\nX-Fill: " + fits + b"\r\n"
        b"Connection: close\r\n\r\n",
    )
    assert reply.startswith(b"HTTP/1.1 200 "), reply[:100]

    # Never finished, as a hostile client would: the server must stop buffering. (Sent in one
    # go and then nothing more, so the server has read it all when it closes: unread data would
    # turn the close into a reset that can swallow the answer.)
    with (
        socket.create_connection(("127.0.0.1", tls_server.port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        lines = [
            b"X-Fill-%d: %s\r\n" % (n, b"x" * 1000)
            for n in range(MAX_REQUEST_HEAD_BYTES // 1000 + 2)
        ]
        tls.sendall(b"GET /health/live HTTP/1.1\r\nHost: localhost\r\n" + b"".join(lines))
        reply = b""
        with contextlib.suppress(ConnectionResetError, ssl.SSLError):
            while chunk := tls.recv(65536):
                reply += chunk
    assert reply.startswith(b"HTTP/1.1 431 "), reply[:100]


def test_several_workers_serve_tls_with_the_same_hardening(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """``--workers`` takes another path through uvicorn (a supervisor, spawned processes)."""
    redis_url = redis_server.url.rsplit("/", 1)[0] + f"/{REDIS_DATABASE}"
    with https_service(tmp_path, "--workers", "2", redis_url=redis_url) as server:
        for _ in range(4):  # connections land on either worker
            negotiated, reply = exchange(server.port, pinned(server, ssl.TLSVersion.TLSv1_2))
            assert (negotiated, reply[:13]) == ("TLSv1.2", b"HTTP/1.1 200 ")
            tls11 = client_context(server.certfile, maximum=ssl.TLSVersion.TLSv1_1)
            with pytest.raises(ssl.SSLError):
                exchange(server.port, tls11)
        response = httpx.get(f"{server.url()}/health/live", verify=server.context(), timeout=10)
        assert response.headers.get("strict-transport-security") == HSTS
