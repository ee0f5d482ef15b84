"""How a mail leaves: SMTP in any real deployment, ``.eml`` files in development.

``BASTION_SMTP_URL``: ``smtp://[user:password@]host[:port]`` (port 25) upgrades to TLS with
STARTTLS when the server offers it; with credentials STARTTLS is required, since a password
must never cross in clear (an attacker who strips the STARTTLS offer would read it).
``smtps://`` (port 465) speaks TLS from the first byte. Certificates are verified against
the system's trust store; a test passes its own ``ssl.SSLContext``. Every wait is bounded
(``timeout`` per connect or command, ``4 * timeout`` for the whole mail), so a server that
accepts the connection and then says nothing cannot hold the sender for ever.

A failure is a ``DeliveryError`` whose ``reason`` is the error's class and SMTP code only:
it is stored and logged, and the server's text may echo an address or a credential.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlsplit

import aiosmtplib

from bastion.config import Settings
from bastion.mail.message import Mail
from bastion.storage.files import PRIVATE_FILE_MODE, ensure_private_dir

SMTP_TIMEOUT_SECONDS = 10.0
DEFAULT_PORTS = {"smtp": 25, "smtps": 465}
OUTBOX_DIR_NAME = "outbox"


class DeliveryError(Exception):
    """A mail was not delivered. ``reason`` is safe to store and log; ``server_down`` says
    the failure is the server's or the connection's, not this mail's, so the other mails
    due now would fail the same way and are left for later."""

    def __init__(self, reason: str, *, server_down: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.server_down = server_down


class Transport(Protocol):
    """Hands one mail on; returns once it was accepted, raises ``DeliveryError`` otherwise.
    Delivering the same mail again must be harmless (the outbox retries)."""

    @property
    def kind(self) -> str: ...

    async def deliver(self, mail: Mail) -> None: ...


@dataclass(frozen=True, slots=True)
class SmtpTarget:
    """``BASTION_SMTP_URL`` taken apart; ``__repr__`` leaves the password out."""

    host: str
    port: int
    implicit_tls: bool
    username: str | None
    password: str | None

    def __repr__(self) -> str:
        scheme = "smtps" if self.implicit_tls else "smtp"
        user = f"{self.username}:***@" if self.username else ""
        return f"SmtpTarget({scheme}://{user}{self.host}:{self.port})"


def parse_smtp_url(url: str) -> SmtpTarget:
    """``ValueError`` for another scheme, no host, or a password without a user; the
    message never repeats the URL (it may hold the password)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ValueError("BASTION_SMTP_URL must start with smtp:// or smtps://")
    if not parts.hostname:
        raise ValueError("BASTION_SMTP_URL names no host")
    try:
        port = parts.port or DEFAULT_PORTS[scheme]
    except ValueError:
        raise ValueError("BASTION_SMTP_URL's port is not a number from 1 to 65535") from None
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    if password is not None and not username:
        raise ValueError("BASTION_SMTP_URL has a password but no user")
    return SmtpTarget(
        host=parts.hostname,
        port=port,
        implicit_tls=scheme == "smtps",
        username=username,
        password=password,
    )


def failure_reason(error: BaseException) -> str:
    """``SMTPRecipientsRefused 550``, ``SMTPConnectError``, ``SSLCertVerificationError``:
    what went wrong, with nothing from the server's text."""
    code = getattr(error, "code", None)
    if code is None and isinstance(error, aiosmtplib.SMTPRecipientsRefused):
        code = next((refused.code for refused in error.recipients), None)
    name = type(error).__name__
    return f"{name} {code}" if isinstance(code, int) else name


# Refusals of this one mail: the server is up, and the next mail may well go through.
_THIS_MAIL_ONLY = (
    aiosmtplib.SMTPRecipientsRefused,
    aiosmtplib.SMTPRecipientRefused,
    aiosmtplib.SMTPDataError,
)


class SmtpTransport:
    """Delivers over SMTP, one connection per mail (mail is rare: a sign-up, a reset)."""

    kind = "smtp"

    def __init__(
        self,
        url: str,
        *,
        tls_context: ssl.SSLContext | None = None,
        timeout: float = SMTP_TIMEOUT_SECONDS,
    ) -> None:
        self.target = parse_smtp_url(url)
        self._tls_context = tls_context or ssl.create_default_context()
        self._timeout = timeout

    def __repr__(self) -> str:
        return f"SmtpTransport({self.target!r})"

    async def deliver(self, mail: Mail) -> None:
        target = self.target
        # STARTTLS: required with credentials, else taken when offered (None).
        start_tls = None if target.username is None else True
        try:
            async with asyncio.timeout(4 * self._timeout):
                await aiosmtplib.send(
                    mail.data,
                    sender=mail.sender,
                    recipients=[mail.recipient],
                    hostname=target.host,
                    port=target.port,
                    username=target.username,
                    password=target.password,
                    use_tls=target.implicit_tls,
                    start_tls=False if target.implicit_tls else start_tls,
                    tls_context=self._tls_context,
                    timeout=self._timeout,
                )
        except _THIS_MAIL_ONLY as error:
            raise DeliveryError(failure_reason(error), server_down=False) from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as error:
            # OSError covers refused connections, DNS failures and TLS errors (ssl.SSLError).
            raise DeliveryError(failure_reason(error), server_down=True) from None


def eml_file_name(message_id: str) -> str:
    """A file name made from the Message-ID alone, so a resend writes the same file."""
    safe = re.sub(r"[^A-Za-z0-9._@-]", "_", message_id.strip("<>")).lstrip(".")
    return f"{safe or 'mail'}.eml"


class FileTransport:
    """Development without a mail server: each mail becomes ``<dir>/<Message-ID>.eml``
    (0600 in a 0700 directory: the mails hold live links), written to a temporary file
    beside it and renamed into place, so a reader never sees half a mail and a resend
    replaces the same file."""

    kind = "file"

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def __repr__(self) -> str:
        return f"FileTransport({str(self.directory)!r})"

    async def deliver(self, mail: Mail) -> None:
        try:
            await asyncio.to_thread(self.write, mail)
        except OSError as error:
            raise DeliveryError(failure_reason(error), server_down=True) from None

    def write(self, mail: Mail) -> Path:
        ensure_private_dir(self.directory)
        path = self.directory / eml_file_name(mail.message_id)
        # mkstemp creates the file 0600 already.
        descriptor, temporary = tempfile.mkstemp(dir=self.directory, prefix=".", suffix=".tmp")
        try:
            with os.fdopen(descriptor, "wb") as file:
                file.write(mail.data)
                file.flush()
                os.fsync(file.fileno())
            os.chmod(temporary, PRIVATE_FILE_MODE)
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        return path


def transport_for(settings: Settings, *, tls_context: ssl.SSLContext | None = None) -> Transport:
    """SMTP when ``BASTION_SMTP_URL`` is set; otherwise ``.eml`` files in
    ``<data dir>/outbox/`` (production refuses to start without SMTP: a settings finding)."""
    if settings.smtp_url is not None:
        return SmtpTransport(settings.smtp_url.get_secret_value(), tls_context=tls_context)
    return FileTransport(settings.data_dir / OUTBOX_DIR_NAME)
