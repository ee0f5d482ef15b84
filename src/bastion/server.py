"""uvicorn with bastion's hardening, in one place for ``bastion serve``, the tests and the bench.

``build_config`` makes the ``uvicorn.Config``; ``serve`` runs it the way ``uvicorn.run`` does
(one process, or a supervisor over ``workers`` processes sharing one bound socket). The
choices, each explained in docs/operations.md ("Server hardening"):

- No ``Server`` header; uvicorn's access log off (bastion's own line has the request id and
  the route template, never the query string); logging left to bastion's JSON pipeline.
- ``proxy_headers=False``: uvicorn never rewrites the client address or scheme. Bastion's
  proxy-headers middleware, driven by ``BASTION_TRUSTED_PROXIES``, is the one place that
  decides them; a second, differently configured rewrite would make the audit log's client
  address depend on which one ran.
- A bounded request head. uvicorn's httptools parser (llhttp) buffers a request line and
  headers of any size, and uvicorn waits for them forever; h11 has a size cap but costs
  about 100 us of CPU a request (a third of the throughput of a cheap route).
  ``BoundedHttpToolsProtocol`` keeps httptools and adds both bounds: 431 for a head still
  incomplete past ``MAX_REQUEST_HEAD_BYTES``, and the connection closed when a head is not
  complete ``REQUEST_HEAD_TIMEOUT_SECONDS`` after it began (or after the connection opened).
- ``limit_concurrency``: past ``MAX_CONCURRENCY`` open connections or running requests per
  worker, uvicorn answers 503 at once instead of queueing without bound; ``backlog`` bounds
  the kernel's queue of connections not yet accepted. The head timeout keeps silent or slow
  connections from holding those places, and ``BASTION_MAX_CONNECTIONS_PER_ADDRESS`` keeps
  one address from holding them all: its connections past the cap are closed at once
  (trusted proxies, which carry everyone's connections, are not capped).
- No WebSocket protocol (the service has no WebSocket route): less code facing clients.
- Keep-alive 5 s; on SIGTERM open requests get ``GRACEFUL_SHUTDOWN_SECONDS`` to finish.
- TLS (``--ssl-certfile``/``--ssl-keyfile``): TLS 1.2 at least, set on the context
  explicitly rather than left to Python's or OpenSSL's defaults; for TLS 1.2 only ECDHE
  suites with AEAD ciphers (Mozilla's "intermediate" list); no renegotiation. HSTS is sent
  by the secure-headers middleware on every https request.
"""

from __future__ import annotations

import asyncio
import signal
import ssl
import sys
from collections.abc import Callable, Mapping
from types import FrameType, MappingProxyType
from typing import Any, TypedDict, Unpack

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.supervisors import Multiprocess

from bastion.config import Settings
from bastion.middleware.secure_headers import API_HEADERS
from bastion.problems import PROBLEM_CONTENT_TYPE, problem_document, render_problem, status_phrase
from bastion.security.trusted_proxies import TrustedProxies

SERVICE_APP = "bastion.app:app_from_environment"
KEEP_ALIVE_SECONDS = 5
GRACEFUL_SHUTDOWN_SECONDS = 10
# Per worker: open connections (idle keep-alive ones included) and running requests. Beyond
# it a request gets uvicorn's 503 at once. Below the usual 1024 open-files limit, so that the
# service sheds load with a 503 before accept() starts failing.
MAX_CONCURRENCY = 900
# Connections the kernel holds for accept(); bursts only: the 503 above answers overload fast.
# Linux caps it at net.core.somaxconn.
BACKLOG = 1024
# uvicorn's supervisor kills a worker that has not answered its first ping within this; its
# default of 5 s is less than a fresh worker needs to import bastion on a busy two-core host
# (2-3 s idle), which killed healthy workers at start under load.
WORKER_HEALTHCHECK_SECONDS = 30
# Request line plus headers, while incomplete: Node's default total, and h11's. bastion's own
# requests need a few KiB at most (a bearer token is under 1 KiB).
MAX_REQUEST_HEAD_BYTES = 16 * 1024
# From the connection's start (after the TLS handshake), or a kept-alive request's first
# partial read, to the end of its headers. An API client sends a head in one go; nginx's
# client_header_timeout is 60 s.
REQUEST_HEAD_TIMEOUT_SECONDS = 10
MIN_TLS_VERSION = ssl.TLSVersion.TLSv1_2
# Mozilla's "intermediate" TLS 1.2 suites: forward secrecy and AEAD only. (TLS 1.3 suites are
# all of that already; OpenSSL configures them separately.)
TLS12_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    )
)


CONNECTION_CAP_ATTRIBUTE = "bastion_connection_cap"


class ConnectionCap:
    """Open connections per client address, in one worker; ``trusted`` addresses (the
    configured proxies) are never capped. Lives on the ``uvicorn.Config``, which each worker
    process receives a copy of: the counts are per worker, like ``limit_concurrency``."""

    def __init__(self, limit: int, trusted: list[str]) -> None:
        self.limit = limit
        self.trusted = trusted
        self._proxies: TrustedProxies | None = None
        self._open: dict[str, int] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {"limit": self.limit, "trusted": self.trusted}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["limit"], state["trusted"])  # type: ignore[misc]

    def admit(self, address: str) -> bool:
        """Counts a new connection from ``address``; False (not counted) past the cap."""
        if self._proxies is None:
            self._proxies = TrustedProxies(self.trusted)
        if self._proxies.normalized_member(address) is not None:
            return True
        count = self._open.get(address, 0)
        if count >= self.limit:
            return False
        self._open[address] = count + 1
        return True

    def release(self, address: str) -> None:
        count = self._open.get(address, 0) - 1
        if count > 0:
            self._open[address] = count
        else:
            self._open.pop(address, None)


class _HeadTooLarge(Exception):
    """The parsed request head passed the bound (see ``BoundedHttpToolsProtocol``)."""


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the request head bounded in size and in time.

    The size is counted twice. Per read while a head is incomplete (a read that completes
    the head is not counted: its body part is not head), so a worker buffers at most
    ``max_head_bytes`` plus one read of an unfinished head; and as the parser hands over the
    target and each header, so that a head that arrives whole in one read (100 KB of header
    in one write was served) is bounded too. Over it: 431 and the connection closed. A head
    not complete within ``head_timeout`` of the connection's start, or (on a
    kept-alive connection) of the first read that left it incomplete: the connection is
    closed without an answer.
    """

    max_head_bytes = MAX_REQUEST_HEAD_BYTES
    head_timeout: float = REQUEST_HEAD_TIMEOUT_SECONDS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = False
        self._head_bytes = 0
        self._parsed_head_bytes = 0
        self._head_deadline: asyncio.TimerHandle | None = None
        # The cap that admitted this connection and the address it counts it under.
        self._admitted: tuple[ConnectionCap, str] | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        cap: ConnectionCap | None = getattr(self.config, CONNECTION_CAP_ATTRIBUTE, None)
        peer = transport.get_extra_info("peername")
        if cap is not None and isinstance(peer, tuple) and peer:
            address = str(peer[0])
            if not cap.admit(address):
                transport.close()
                return
            self._admitted = (cap, address)
        self._arm_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_deadline()
        if self._admitted is not None:
            cap, address = self._admitted
            cap.release(address)
            self._admitted = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._in_head and not self.transport.is_closing():
            self._head_bytes += len(data)
            if self._head_bytes > self.max_head_bytes:
                self._refuse_head()
            else:
                # Only now: a head that arrives whole (the usual case) costs no timer.
                self._arm_head_deadline()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_bytes = 0
        self._parsed_head_bytes = 0

    def _count_parsed(self, size: int) -> None:
        """Raising here makes the parser fail; uvicorn then answers through
        ``send_400_response``, which sends the 431 instead."""
        self._parsed_head_bytes += size
        if self._parsed_head_bytes > self.max_head_bytes:
            raise _HeadTooLarge

    def on_url(self, url: bytes) -> None:
        self._count_parsed(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_parsed(len(name) + len(value) + 4)  # ": " and CRLF
        super().on_header(name, value)

    def send_400_response(self, msg: str) -> None:  # noqa: ARG002 (uvicorn's own words)
        if self._parsed_head_bytes > self.max_head_bytes:
            self._refuse_head()
        else:
            # uvicorn's own answer is plain text without the security headers.
            self._answer_and_close(400, UNPARSABLE_REQUEST_DETAIL)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._disarm_head_deadline()
        super().on_headers_complete()

    def _arm_head_deadline(self) -> None:
        # A deadline already running (from the connection's start) is kept, never extended.
        if self._head_deadline is None:
            self._head_deadline = self.loop.call_later(self.head_timeout, self._head_too_slow)

    def _disarm_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_too_slow(self) -> None:
        self._head_deadline = None
        if not self.transport.is_closing():
            self.transport.close()

    def _refuse_head(self) -> None:
        self._disarm_head_deadline()
        self.logger.warning("Request head too large.")
        self._answer_and_close(431, HEAD_TOO_LARGE_DETAIL)

    def _answer_and_close(self, status: int, detail: str) -> None:
        """An answer from below the app, as the app answers: problem details with the
        security headers (no request id: none was assigned yet), then the connection
        closed, as nothing more can be read from it."""
        self.transport.write(server_problem(status, detail))
        self.transport.close()


HEAD_TOO_LARGE_DETAIL = (
    f"The request line and headers are larger than {MAX_REQUEST_HEAD_BYTES} bytes."
)
UNPARSABLE_REQUEST_DETAIL = "The request is not valid HTTP/1.1."


def server_problem(status: int, detail: str) -> bytes:
    body = render_problem(problem_document(status, detail, None))
    head = [
        f"HTTP/1.1 {status} {status_phrase(status)}".encode("ascii"),
        b"content-type: " + PROBLEM_CONTENT_TYPE.encode("ascii"),
        b"content-length: %d" % len(body),
        b"cache-control: no-store",
        *(name + b": " + value for name, value in API_HEADERS),
        b"connection: close",
    ]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


# The hardening as ``uvicorn.Config`` keyword arguments: ``build_config`` passes them, and a
# gunicorn worker class can take the same (docs/deployment.md).
UVICORN_HARDENING: Mapping[str, Any] = MappingProxyType(
    {
        "http": BoundedHttpToolsProtocol,
        "ws": "none",  # the service has no WebSocket route: upgrades stay plain HTTP requests
        "proxy_headers": False,
        "server_header": False,
        "log_config": None,
        "access_log": False,
        "limit_concurrency": MAX_CONCURRENCY,
        "backlog": BACKLOG,
        "timeout_keep_alive": KEEP_ALIVE_SECONDS,
        "timeout_graceful_shutdown": GRACEFUL_SHUTDOWN_SECONDS,
        "timeout_worker_healthcheck": WORKER_HEALTHCHECK_SECONDS,
    }
)


class ServerConfigError(ValueError):
    """The server cannot start with these options; the message says why."""


def harden_tls(context: ssl.SSLContext) -> ssl.SSLContext:
    """TLS 1.2 at least, AEAD suites with forward secrecy, no renegotiation."""
    context.minimum_version = MIN_TLS_VERSION
    context.set_ciphers(TLS12_CIPHERS)
    context.options |= ssl.OP_NO_RENEGOTIATION
    return context


def hardened_tls_context(
    _config: uvicorn.Config, default: Callable[[], ssl.SSLContext]
) -> ssl.SSLContext:
    """uvicorn's ``ssl_context_factory``: its own context (certificate, key), then hardened.
    Module-level, so that ``--workers`` can pickle the config for its worker processes."""
    return harden_tls(default())


def check_tls_files(certfile: str, keyfile: str) -> None:
    """Raises ``ServerConfigError`` unless the two files load as a certificate chain and its
    unencrypted private key: a legible refusal instead of a traceback from every worker."""

    def no_password() -> str:
        raise ServerConfigError(
            f"{keyfile} is encrypted; give bastion serve an unencrypted key (readable by the "
            "service's user only)"
        )

    for option, path in (("--ssl-certfile", certfile), ("--ssl-keyfile", keyfile)):
        try:
            with open(path, "rb"):
                pass
        except FileNotFoundError:
            raise ServerConfigError(f"{option} {path}: no such file") from None
        except PermissionError:
            raise ServerConfigError(f"{option} {path}: not readable by this user") from None
        except IsADirectoryError:
            raise ServerConfigError(f"{option} {path}: is a directory") from None
        except OSError as error:
            raise ServerConfigError(f"{option} {path}: {error.strerror}") from None
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(certfile, keyfile, no_password)
    except ssl.SSLError:
        raise ServerConfigError(
            f"{certfile} and {keyfile} are not a PEM certificate chain and its private key"
        ) from None


class ServeOptions(TypedDict, total=False):
    """``bastion serve``'s options; each defaults as in ``build_config``."""

    app_factory: str
    host: str
    port: int
    workers: int
    ssl_certfile: str | None
    ssl_keyfile: str | None


def build_config(
    settings: Settings,
    *,
    app_factory: str = SERVICE_APP,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    ssl_certfile: str | None = None,
    ssl_keyfile: str | None = None,
) -> uvicorn.Config:
    """The uvicorn configuration ``bastion serve`` runs with."""
    if workers > 1 and settings.redis_url is None:
        # The CLI says so first, with the reason; this guards every other caller.
        raise ServerConfigError("more than one worker needs BASTION_REDIS_URL")
    if (ssl_certfile is None) != (ssl_keyfile is None):
        raise ServerConfigError("--ssl-certfile and --ssl-keyfile go together")
    config = uvicorn.Config(
        app_factory,
        factory=True,
        host=host,
        port=port,
        workers=workers,
        ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile,
        # uvicorn counts a factory as TLS whether or not there are files: only with them.
        ssl_context_factory=hardened_tls_context if ssl_certfile else None,
        **UVICORN_HARDENING,
    )
    cap = ConnectionCap(settings.max_connections_per_address, list(settings.trusted_proxies))
    setattr(config, CONNECTION_CAP_ATTRIBUTE, cap)
    return config


class ClosingMultiprocess(Multiprocess):
    """uvicorn's supervisor, closing its copy of the listening socket as shutdown begins.

    Each worker closes its own copy when it starts shutting down, but the supervisor kept
    one open until every worker had finished its requests in flight: meanwhile the kernel
    accepted new connections into the backlog, nobody served them, and they were reset at
    the end, up to the grace period later. Closed here first, the socket is gone once the
    last worker has closed its copy, so a new connection is refused at once and the client
    can try another host."""

    def terminate_all(self) -> None:
        for listening in self.sockets:
            listening.close()
        super().terminate_all()


def _interrupted(_signal: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def serve(config: uvicorn.Config) -> None:
    """``uvicorn.run``'s two paths without reload: one process, or ``Multiprocess`` over a
    socket bound here; exits with uvicorn's start-up failure code when the server never
    started, and 0 after a graceful stop (SIGTERM or SIGINT).

    uvicorn's server, once shut down, raises again the signal that stopped it, with the
    handler that was there before it ran: Python's default for SIGTERM ends the process
    "killed by SIGTERM" (status 143, a failure to docker and Kubernetes) although every
    request was answered, while ``--workers``' supervisor returns and exits 0. So SIGTERM
    is handled here as SIGINT is by default: a ``KeyboardInterrupt``, the end of serving."""
    server = uvicorn.Server(config)
    previous = signal.signal(signal.SIGTERM, _interrupted)
    try:
        if config.workers > 1:
            socket = config.bind_socket()
            ClosingMultiprocess(config, sockets=[socket]).run()
        else:
            config.load_app()  # fails fast, before binding, when the app does not import
            server.run()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
    if not server.started and config.workers == 1:
        sys.exit(STARTUP_FAILURE)


def run_server(settings: Settings, **options: Unpack[ServeOptions]) -> None:
    """``build_config`` then ``serve``: what ``bastion serve`` does."""
    serve(build_config(settings, **options))
