"""A real SMTP server for tests: aiosmtpd's ``Controller`` on 127.0.0.1, in a thread.

``SmtpServer(tls="plain" | "starttls" | "smtps")``: the TLS variants use a self-signed
certificate for localhost/127.0.0.1 (``bastion.devcert``) that ``client_tls_context()``
trusts, so the client's certificate checks stay on. Every message the server accepts is
kept whole (``messages``: the raw bytes, ``envelopes``: sender and recipients).
``stop()`` and ``start()`` again keep the port: an outage and the recovery from it.

aiosmtpd is imported at module level: without it every test that needs the server fails at
collection, loudly, rather than being skipped.
"""

from __future__ import annotations

import shutil
import ssl
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPProtocol
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from bastion.devcert import write_dev_certificate
from tests.servers.postgres import free_port

TlsMode = Literal["plain", "starttls", "smtps"]
HOST = "127.0.0.1"
START_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class Received:
    sender: str
    recipients: tuple[str, ...]
    data: bytes


class _Collector:
    """aiosmtpd's handler: keeps what arrives (from the server's thread; a lock guards it)."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.lock = threading.Lock()

    async def handle_DATA(
        self, _server: SMTPProtocol, _session: Session, envelope: Envelope
    ) -> str:
        data = envelope.original_content or b""
        with self.lock:
            self.received.append(
                Received(str(envelope.mail_from), tuple(envelope.rcpt_tos), bytes(data))
            )
        return "250 Message accepted for delivery"


class SmtpServer:
    def __init__(
        self, *, tls: TlsMode = "plain", credentials: tuple[str, str] | None = None
    ) -> None:
        self.tls = tls
        self.credentials = credentials
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="bastion-smtp-"))
        self._collector = _Collector()
        self._controller: Controller | None = None
        self._started_once = False
        self.certfile: Path | None = None
        self._server_context: ssl.SSLContext | None = None
        if tls != "plain":
            pair = write_dev_certificate(self.root / "cert")
            self.certfile = pair.certfile
            self._server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self._server_context.load_cert_chain(pair.certfile, pair.keyfile)

    @property
    def url(self) -> str:
        scheme = "smtps" if self.tls == "smtps" else "smtp"
        user = ""
        if self.credentials is not None:
            user = f"{self.credentials[0]}:{self.credentials[1]}@"
        return f"{scheme}://{user}{HOST}:{self.port}"

    def client_tls_context(self) -> ssl.SSLContext:
        """A client context that trusts this server's certificate (and verifies it)."""
        if self.certfile is None:
            return ssl.create_default_context()
        return ssl.create_default_context(cafile=str(self.certfile))

    @property
    def received(self) -> list[Received]:
        with self._collector.lock:
            return list(self._collector.received)

    @property
    def messages(self) -> list[bytes]:
        return [received.data for received in self.received]

    def _authenticate(
        self,
        _server: SMTPProtocol,
        _session: Session,
        _envelope: Envelope,
        _mechanism: str,
        auth_data: Any,
    ) -> AuthResult:
        assert self.credentials is not None
        user, password = self.credentials
        valid = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == user.encode()
            and auth_data.password == password.encode()
        )
        return AuthResult(success=valid)

    def _controller_for(self, port: int) -> Controller:
        options: dict[str, Any] = {"server_hostname": "localhost", "ready_timeout": 10.0}
        if self.tls == "smtps":
            options["ssl_context"] = self._server_context
        elif self.tls == "starttls":
            options["tls_context"] = self._server_context
        if self.credentials is not None:
            options["authenticator"] = self._authenticate
            # aiosmtpd counts only STARTTLS as TLS: on SMTPS it would never offer AUTH.
            options["auth_require_tls"] = self.tls != "smtps"
        return Controller(self._collector, hostname=HOST, port=port, **options)

    def start(self) -> SmtpServer:
        # The first start may lose the port to another process (parallel workers); later
        # starts keep it, since clients already point there.
        for _ in range(1 if self._started_once else START_ATTEMPTS):
            controller = self._controller_for(self.port)
            try:
                controller.start()
            except OSError:
                if self._started_once:
                    raise
                self.port = free_port()
                continue
            self._controller = controller
            self._started_once = True
            return self
        raise RuntimeError("the SMTP test server did not start")

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
