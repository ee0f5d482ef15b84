"""The uvicorn options ``bastion serve`` runs with: the Config that ``build_config`` makes, loaded
as uvicorn loads it; TLS handshakes against its context, in memory; and the request-head
bounds, through a uvicorn server in this process."""

from __future__ import annotations

import asyncio
import os
import pickle
import re
import ssl
import time
import warnings
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path

import pytest
import uvicorn
from cryptography.hazmat.primitives import serialization
from pydantic import SecretStr
from starlette.applications import Starlette
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from bastion.config import Settings
from bastion.devcert import DevCertificate, write_dev_certificate
from bastion.server import (
    BACKLOG,
    CONNECTION_CAP_ATTRIBUTE,
    GRACEFUL_SHUTDOWN_SECONDS,
    KEEP_ALIVE_SECONDS,
    MAX_CONCURRENCY,
    MAX_REQUEST_HEAD_BYTES,
    UVICORN_HARDENING,
    WORKER_HEALTHCHECK_SECONDS,
    BoundedHttpToolsProtocol,
    ServerConfigError,
    build_config,
    check_tls_files,
    hardened_tls_context,
)
from tests.conftest import make_settings
from tests.servers.postgres import free_port
from tests.test_cli import run_bastion

TINY_APP = "tests.test_server:tiny_app"
# A TLS 1.2 suite without AEAD (CBC with HMAC), which Python's defaults still allow.
CBC_SUITE = "ECDHE-ECDSA-AES128-SHA256"


def tiny_app() -> Starlette:
    return Starlette()


@pytest.fixture
def dev_cert(tmp_path: Path) -> DevCertificate:
    return write_dev_certificate(tmp_path / "data")


def loaded(config: uvicorn.Config) -> uvicorn.Config:
    config.load()
    return config


def client_context(
    cafile: Path,
    *,
    maximum: ssl.TLSVersion = ssl.TLSVersion.MAXIMUM_SUPPORTED,
    ciphers: str | None = None,
) -> ssl.SSLContext:
    """A client trusting ``cafile``, capped at ``maximum``. Below TLS 1.2 it is made willing
    to speak TLS 1.0/1.1 (OpenSSL 3 refuses them unless at security level 0), so that only
    the server can make such a handshake fail."""
    context = ssl.create_default_context(cafile=str(cafile))
    if maximum < ssl.TLSVersion.TLSv1_2:
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.0/1.1 are deprecated
            context.minimum_version = ssl.TLSVersion.TLSv1
            context.maximum_version = maximum
    else:
        context.maximum_version = maximum
        if ciphers is not None:
            context.set_ciphers(ciphers)
    return context


def permissive_server_context(pair: DevCertificate) -> Callable[[], ssl.SSLContext]:
    """A stand-in for uvicorn's default context as an older Python or a weaker OpenSSL
    configuration would make it: TLS 1.0 and every suite allowed."""

    def factory() -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(pair.certfile, pair.keyfile)
        context.set_ciphers("ALL:@SECLEVEL=0")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            context.minimum_version = ssl.TLSVersion.TLSv1
        return context

    return factory


def handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> str:
    """The protocol version two contexts agree on, over memory buffers; ``ssl.SSLError`` if
    they do not."""
    server_in, server_out, client_in, client_out = (ssl.MemoryBIO() for _ in range(4))
    server_side = server.wrap_bio(server_in, server_out, server_side=True)
    client_side = client.wrap_bio(client_in, client_out, server_hostname="localhost")
    for _ in range(10):
        finished = 0
        for side, outgoing, peer_incoming in (
            (client_side, client_out, server_in),
            (server_side, server_out, client_in),
        ):
            try:
                side.do_handshake()
                finished += 1
            except ssl.SSLWantReadError:
                pass
            peer_incoming.write(outgoing.read())
        if finished == 2:
            version = client_side.version()
            assert version is not None
            return version
    raise AssertionError("the handshake made no progress")


def test_uvicorn_leaves_client_address_and_scheme_alone() -> None:
    config = loaded(build_config(make_settings(Path("unused")), app_factory=TINY_APP))
    assert config.proxy_headers is False
    # uvicorn would wrap the app in its own ProxyHeadersMiddleware; bastion's decides instead.
    assert not isinstance(config.loaded_app, ProxyHeadersMiddleware)
    assert isinstance(config.loaded_app, Starlette)


def test_no_server_header_and_no_uvicorn_access_log() -> None:
    config = loaded(build_config(make_settings(Path("unused")), app_factory=TINY_APP))
    assert config.server_header is False
    assert b"server" not in dict(config.encoded_headers)
    assert config.access_log is False
    assert config.log_config is None


def test_limits_and_timeouts() -> None:
    config = build_config(make_settings(Path("unused")), app_factory=TINY_APP)
    assert config.limit_concurrency == MAX_CONCURRENCY
    assert config.backlog == BACKLOG
    assert config.timeout_keep_alive == KEEP_ALIVE_SECONDS
    assert config.timeout_graceful_shutdown == GRACEFUL_SHUTDOWN_SECONDS
    # A worker gets longer than uvicorn's 5 s to import bastion before it counts as hung.
    assert config.timeout_worker_healthcheck == WORKER_HEALTHCHECK_SECONDS >= 30
    assert 0 < MAX_CONCURRENCY < 1024  # 503 before a default open-files limit is reached


def test_the_parser_bounds_the_request_head() -> None:
    config = loaded(build_config(make_settings(Path("unused")), app_factory=TINY_APP))
    assert config.http_protocol_class is BoundedHttpToolsProtocol
    assert config.ws_protocol_class is None


def test_the_hardening_is_what_uvicorn_holds() -> None:
    """Also what a gunicorn worker class takes (docs/deployment.md): every key a Config field."""
    config = build_config(make_settings(Path("unused")), app_factory=TINY_APP)
    for name, value in UVICORN_HARDENING.items():
        assert getattr(config, name) == value, name


def test_plain_http_without_tls_files() -> None:
    config = loaded(build_config(make_settings(Path("unused")), app_factory=TINY_APP))
    assert config.is_ssl is False
    assert config.ssl is None


def test_tls_context_is_hardened_after_load(dev_cert: DevCertificate) -> None:
    config = loaded(
        build_config(
            make_settings(Path("unused")),
            app_factory=TINY_APP,
            ssl_certfile=str(dev_cert.certfile),
            ssl_keyfile=str(dev_cert.keyfile),
        )
    )
    assert config.ssl is not None
    assert config.ssl.minimum_version == ssl.TLSVersion.TLSv1_2
    assert config.ssl.options & ssl.OP_NO_RENEGOTIATION
    tls12_suites = [c for c in config.ssl.get_ciphers() if c["protocol"] == "TLSv1.2"]
    assert tls12_suites
    assert all(c["aead"] and c["kea"] == "kx-ecdhe" for c in tls12_suites), tls12_suites
    client = client_context(dev_cert.certfile)
    assert handshake(config.ssl, client) == "TLSv1.3"


def test_the_hardening_refuses_what_a_permissive_context_accepts(
    dev_cert: DevCertificate,
) -> None:
    """Python's own defaults already refuse TLS 1.1; bastion must not depend on them."""
    permissive = permissive_server_context(dev_cert)
    unused_config = build_config(make_settings(Path("unused")), app_factory=TINY_APP)
    hardened = hardened_tls_context(unused_config, permissive)
    tls11 = client_context(dev_cert.certfile, maximum=ssl.TLSVersion.TLSv1_1)
    cbc_only = client_context(dev_cert.certfile, maximum=ssl.TLSVersion.TLSv1_2, ciphers=CBC_SUITE)

    # The clients can get through a permissive server (so their failure below means something)
    assert handshake(permissive(), tls11) == "TLSv1.1"
    assert handshake(permissive(), cbc_only) == "TLSv1.2"
    with pytest.raises(ssl.SSLError):
        handshake(hardened, tls11)
    with pytest.raises(ssl.SSLError):
        handshake(hardened, cbc_only)
    for version, name in ((ssl.TLSVersion.TLSv1_2, "TLSv1.2"), (ssl.TLSVersion.TLSv1_3, "TLSv1.3")):
        assert handshake(hardened, client_context(dev_cert.certfile, maximum=version)) == name


def test_a_tls_config_for_several_workers_can_be_pickled(dev_cert: DevCertificate) -> None:
    """``--workers`` sends the config to spawned processes: the context factory must pickle."""
    settings = make_settings(Path("unused"), redis_url=SecretStr("redis://127.0.0.1:1/0"))
    config = build_config(
        settings,
        app_factory=TINY_APP,
        workers=2,
        ssl_certfile=str(dev_cert.certfile),
        ssl_keyfile=str(dev_cert.keyfile),
    )
    copy = loaded(pickle.loads(pickle.dumps(config)))  # noqa: S301 (our own bytes)
    assert copy.ssl is not None
    assert copy.ssl.minimum_version == ssl.TLSVersion.TLSv1_2


def test_several_workers_need_redis() -> None:
    with pytest.raises(ServerConfigError, match="BASTION_REDIS_URL"):
        build_config(make_settings(Path("unused")), app_factory=TINY_APP, workers=2)


@pytest.mark.parametrize(("certfile", "keyfile"), [("cert.pem", None), (None, "key.pem")])
def test_tls_files_go_together(certfile: str | None, keyfile: str | None) -> None:
    with pytest.raises(ServerConfigError, match="go together"):
        build_config(
            make_settings(Path("unused")),
            app_factory=TINY_APP,
            ssl_certfile=certfile,
            ssl_keyfile=keyfile,
        )


def test_check_tls_files_accepts_a_pair(dev_cert: DevCertificate) -> None:
    check_tls_files(str(dev_cert.certfile), str(dev_cert.keyfile))


def test_check_tls_files_refusals(tmp_path: Path, dev_cert: DevCertificate) -> None:
    cert, key = str(dev_cert.certfile), str(dev_cert.keyfile)
    other = write_dev_certificate(tmp_path / "other")
    encrypted = tmp_path / "encrypted.pem"
    private_key = serialization.load_pem_private_key(dev_cert.keyfile.read_bytes(), None)
    encrypted.write_bytes(
        private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"a passphrase"),
        )
    )
    missing = str(tmp_path / "missing.pem")
    unreadable = tmp_path / "unreadable.pem"
    unreadable.write_bytes(dev_cert.keyfile.read_bytes())
    unreadable.chmod(0)
    cases = {
        (missing, key): f"--ssl-certfile {missing}: no such file",
        (cert, missing): f"--ssl-keyfile {missing}: no such file",
        (str(tmp_path), key): f"--ssl-certfile {tmp_path}: is a directory",
        (cert, cert): "not a PEM certificate chain and its private key",
        (cert, str(other.keyfile)): "not a PEM certificate chain and its private key",
        (cert, str(encrypted)): f"{encrypted} is encrypted",
    }
    if os.geteuid() != 0:  # root reads any file
        cases[(cert, str(unreadable))] = f"--ssl-keyfile {unreadable}: not readable by this user"
    for (certfile, keyfile), message in cases.items():
        with pytest.raises(ServerConfigError, match=re.escape(message)):
            check_tls_files(certfile, keyfile)


def test_serve_refuses_unusable_tls_files_legibly(tmp_path: Path) -> None:
    pair = write_dev_certificate(tmp_path / "data")
    result = run_bastion(
        "serve", "--port", "1",
        "--ssl-certfile", str(pair.certfile), "--ssl-keyfile", str(tmp_path / "nothing.pem"),
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2
    assert f"--ssl-keyfile {tmp_path / 'nothing.pem'}: no such file" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / ".bastion").exists()  # refused before migrating anything


def test_build_config_keeps_settings_out_of_uvicorn(tmp_path: Path) -> None:
    """Trusted proxies are bastion's business: listing some must not turn uvicorn's on."""
    settings = make_settings(tmp_path, trusted_proxies=["127.0.0.1"])
    config = loaded(build_config(settings, app_factory=TINY_APP))
    assert config.proxy_headers is False
    assert not isinstance(config.loaded_app, ProxyHeadersMiddleware)


# The request head's bounds, through a uvicorn server in this process (so the timeout can be
# shortened): what a client sees on the socket.
SHORT_HEAD_TIMEOUT = 0.3
REQUEST_LINE = b"GET /anything HTTP/1.1\r\nHost: 127.0.0.1\r\n"


@asynccontextmanager
async def serving(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[int]:
    monkeypatch.setattr(BoundedHttpToolsProtocol, "head_timeout", SHORT_HEAD_TIMEOUT)
    async with serving_with(make_settings(Path("unused"))) as port:
        yield port


@asynccontextmanager
async def serving_with(settings: Settings) -> AsyncIterator[int]:
    """A uvicorn server in this process, configured by ``build_config``: its port."""
    config = build_config(settings, app_factory=TINY_APP, port=free_port())
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 10
    while not server.started:
        assert not task.done(), "the server stopped at start"
        assert time.monotonic() < deadline, "the server did not start"
        await asyncio.sleep(0.01)
    try:
        yield config.port
    finally:
        server.should_exit = True
        await task


async def converse(port: int, *pieces: bytes, pause: float = 0.0) -> tuple[bytes, float]:
    """Sends ``pieces`` (``pause`` s apart) and reads until the server closes; the reply and
    how long the connection lasted."""
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        with suppress(ConnectionError):
            for piece in pieces:
                writer.write(piece)
                await writer.drain()
                await asyncio.sleep(pause)
        reply = b""
        with suppress(ConnectionError):  # a reset ends the reply too
            reply = await asyncio.wait_for(reader.read(), timeout=10)
        return reply, time.monotonic() - started
    finally:
        writer.close()
        with suppress(ConnectionError):
            await writer.wait_closed()


def header_lines(total_bytes: int) -> list[bytes]:
    return [b"X-Fill-%04d: %s\r\n" % (n, b"x" * 1000) for n in range(total_bytes // 1014 + 1)]


async def test_a_head_growing_past_the_limit_gets_431(monkeypatch: pytest.MonkeyPatch) -> None:
    async with serving(monkeypatch) as port:
        # Never finished: without the bound the server would keep buffering. (Sent in one
        # write and then nothing more, so that the server has read all of it when it closes:
        # unread data would turn its close into a reset that can swallow the answer.)
        head = b"".join([REQUEST_LINE, *header_lines(MAX_REQUEST_HEAD_BYTES + 2048)])
        reply, _ = await converse(port, head)
    assert reply.startswith(b"HTTP/1.1 431 "), reply[:100]


async def test_a_whole_head_past_the_limit_in_one_read_gets_431(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The per-read count skips the read that completes a head (its body part is not head):
    100 KB of header sent in one write, complete, was served with 200 (issue 12)."""
    async with serving(monkeypatch) as port:
        one_big_header = [b"X-Big: %s\r\n" % (b"x" * 100_000)]
        for fill in (header_lines(MAX_REQUEST_HEAD_BYTES + 2048), one_big_header):
            head = b"".join([REQUEST_LINE, *fill, b"Connection: close\r\n\r\n"])
            reply, _ = await converse(port, head)
            assert reply.startswith(b"HTTP/1.1 431 "), reply[:100]
        url = b"GET /%s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n" % (
            b"a" * (MAX_REQUEST_HEAD_BYTES + 10)
        )
        reply, _ = await converse(port, url)
        assert reply.startswith(b"HTTP/1.1 431 "), reply[:100]


async def test_heads_and_bodies_within_the_limit_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    async with serving(monkeypatch) as port:
        # A head just under the limit, sent in pieces.
        head = [
            REQUEST_LINE,
            *header_lines(MAX_REQUEST_HEAD_BYTES - 2048),
            b"Connection: close\r\n\r\n",
        ]
        reply, _ = await converse(port, *head, pause=0.01)
        assert reply.startswith(b"HTTP/1.1 404 "), reply[:100]
        # A small head and a large body in one read: the body is not head.
        body = b"x" * (4 * MAX_REQUEST_HEAD_BYTES)
        post = b"POST /anything HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        reply, _ = await converse(port, post + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        assert reply.startswith(b"HTTP/1.1 404 "), reply[:100]


async def test_a_silent_connection_is_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    async with serving(monkeypatch) as port:
        reply, lasted = await converse(port)
    assert reply == b""
    assert lasted < SHORT_HEAD_TIMEOUT + 2


async def test_a_head_sent_slowly_is_cut_off(monkeypatch: pytest.MonkeyPatch) -> None:
    async with serving(monkeypatch) as port:
        trickle = [b"X-Slow-%d: y\r\n" % n for n in range(30)]  # 3 s of it, never finished
        reply, lasted = await converse(port, REQUEST_LINE, *trickle, pause=0.1)
    assert reply == b""
    assert lasted < 3 + 2  # closed during the trickle, not at the end of it
    assert lasted >= SHORT_HEAD_TIMEOUT


async def test_a_kept_alive_connection_may_idle_between_requests(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The head deadline ends with the head: idling after a response is keep-alive's business."""
    async with serving(monkeypatch) as port:
        first = REQUEST_LINE + b"\r\n"
        second = REQUEST_LINE + b"Connection: close\r\n\r\n"
        reply, _ = await converse(port, first, second, pause=3 * SHORT_HEAD_TIMEOUT)
    assert reply.count(b"HTTP/1.1 404 ") == 2, reply


# One address cannot take every connection slot (BASTION_MAX_CONNECTIONS_PER_ADDRESS).
ADDRESS_CAP = 3


async def answers(port: int, source: str) -> bool:
    """Whether a connection from ``source`` gets an HTTP answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    try:
        writer.write(REQUEST_LINE + b"\r\n")
        await writer.drain()
        with suppress(ConnectionError):
            line = await asyncio.wait_for(reader.readline(), timeout=5)
            return line.startswith(b"HTTP/1.1 ")
        return False
    finally:
        writer.close()
        with suppress(ConnectionError):
            await writer.wait_closed()


async def test_one_address_cannot_take_every_connection(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, max_connections_per_address=ADDRESS_CAP)
    async with serving_with(settings) as port:
        idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(ADDRESS_CAP)]
        try:
            assert not await answers(port, "127.0.0.1")  # past the cap: closed at once
            assert await answers(port, "127.0.0.2")  # everyone else is served
            _, writer = idle.pop()
            writer.close()
            await writer.wait_closed()
            await asyncio.sleep(0.1)
            assert await answers(port, "127.0.0.1")  # a freed place is given again
        finally:
            for _, writer in idle:
                writer.close()


async def test_a_trusted_proxy_is_not_capped(tmp_path: Path) -> None:
    """Behind a proxy every client's connection comes from the proxy's address."""
    settings = make_settings(
        tmp_path, max_connections_per_address=ADDRESS_CAP, trusted_proxies=["127.0.0.1"]
    )
    async with serving_with(settings) as port:
        idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(ADDRESS_CAP)]
        try:
            assert await answers(port, "127.0.0.1")
        finally:
            for _, writer in idle:
                writer.close()


def test_the_cap_travels_to_worker_processes(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, max_connections_per_address=7, redis_url="redis://x")
    config = build_config(settings, app_factory=TINY_APP, workers=2)
    copy = pickle.loads(pickle.dumps(config))  # noqa: S301 (our own bytes)
    cap = getattr(copy, CONNECTION_CAP_ATTRIBUTE)
    assert cap.limit == 7
    assert all(cap.admit("10.0.0.1") for _ in range(7))
    assert not cap.admit("10.0.0.1")
