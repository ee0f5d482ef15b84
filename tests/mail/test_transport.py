"""The transports on their own: the SMTP URL, real SMTP servers (plain, STARTTLS, SMTPS,
with a verified certificate), and the development ``.eml`` files."""

from __future__ import annotations

import socket
import stat
import time
from pathlib import Path

import pytest

from bastion.mail.message import Mail
from bastion.mail.transport import (
    DeliveryError,
    FileTransport,
    SmtpTransport,
    eml_file_name,
    parse_smtp_url,
    transport_for,
)
from tests.conftest import make_settings
from tests.servers.smtp import SmtpServer

MAIL = Mail(
    message_id="<0123abcd@example.org>",
    sender="bastion@example.org",
    recipient="ada@example.com",
    data=b"Subject: hi\r\nMessage-ID: <0123abcd@example.org>\r\n\r\nbody\r\n",
)


def test_the_smtp_url_gives_host_port_tls_and_decoded_credentials() -> None:
    plain = parse_smtp_url("smtp://mail.example.org")
    assert (plain.host, plain.port, plain.implicit_tls, plain.username) == (
        "mail.example.org", 25, False, None,
    )
    tls = parse_smtp_url("smtps://us%40er:p%3Ass%2Fw@mail.example.org:2465")
    assert (tls.port, tls.implicit_tls, tls.username, tls.password) == (
        2465, True, "us@er", "p:ss/w",
    )
    assert parse_smtp_url("SMTPS://h").port == 465
    assert "p:ss/w" not in repr(tls) and "p%3Ass" not in repr(tls)


@pytest.mark.parametrize(
    "url", ["http://mail.example.org", "smtp://", "smtp://:secret@h", "smtp://h:99999"]
)
def test_a_bad_smtp_url_is_refused_without_repeating_it(url: str) -> None:
    with pytest.raises(ValueError) as refused:
        parse_smtp_url(url)
    assert "secret" not in str(refused.value)


def test_without_an_smtp_url_mails_go_to_files_in_the_data_dir(tmp_path: Path) -> None:
    transport = transport_for(make_settings(tmp_path / "data"))
    assert isinstance(transport, FileTransport)
    assert transport.directory == tmp_path / "data" / "outbox"
    smtp = transport_for(make_settings(tmp_path / "data", smtp_url="smtp://u:p@mail.example"))
    assert isinstance(smtp, SmtpTransport)


async def test_smtp_delivers_in_plain(smtp_server: SmtpServer) -> None:
    await SmtpTransport(smtp_server.url).deliver(MAIL)
    [received] = smtp_server.received
    assert received.sender == "bastion@example.org"
    assert received.recipients == ("ada@example.com",)
    assert received.data == MAIL.data


async def test_smtp_upgrades_with_starttls_and_verifies_the_certificate(
    starttls_server: SmtpServer,
) -> None:
    await SmtpTransport(
        starttls_server.url, tls_context=starttls_server.client_tls_context()
    ).deliver(MAIL)
    assert starttls_server.messages == [MAIL.data]
    # The system's trust store does not know the self-signed certificate: refused.
    with pytest.raises(DeliveryError) as refused:
        await SmtpTransport(starttls_server.url).deliver(MAIL)
    assert refused.value.server_down
    assert "Cert" in refused.value.reason
    assert len(starttls_server.messages) == 1


async def test_smtps_speaks_tls_from_the_start(smtps_server: SmtpServer) -> None:
    await SmtpTransport(
        smtps_server.url, tls_context=smtps_server.client_tls_context()
    ).deliver(MAIL)
    assert smtps_server.messages == [MAIL.data]
    with pytest.raises(DeliveryError):
        await SmtpTransport(smtps_server.url).deliver(MAIL)
    assert len(smtps_server.messages) == 1


async def test_credentials_are_sent_only_over_tls() -> None:
    server = SmtpServer(tls="starttls", credentials=("mailer", "pa ss")).start()
    try:
        url = server.url.replace("pa ss", "pa%20ss")
        await SmtpTransport(url, tls_context=server.client_tls_context()).deliver(MAIL)
        assert len(server.messages) == 1
    finally:
        server.destroy()
    # A server that offers no STARTTLS never sees the password: the mail fails instead.
    plain = SmtpServer(tls="plain", credentials=("mailer", "secret")).start()
    try:
        with pytest.raises(DeliveryError) as refused:
            await SmtpTransport(plain.url).deliver(MAIL)
        assert refused.value.server_down
        assert "secret" not in refused.value.reason
        assert plain.messages == []
    finally:
        plain.destroy()


async def test_a_server_that_is_down_fails_fast_and_says_so(smtp_server: SmtpServer) -> None:
    smtp_server.stop()
    started = time.monotonic()
    with pytest.raises(DeliveryError) as failed:
        await SmtpTransport(smtp_server.url).deliver(MAIL)
    assert time.monotonic() - started < 2
    assert failed.value.server_down
    assert failed.value.reason == "SMTPConnectError"


async def test_a_server_that_never_answers_is_given_up_on_within_the_timeout() -> None:
    # A listening socket that never accepts: the connection is made (the kernel's backlog),
    # and no greeting ever comes.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(DeliveryError) as failed:
            await SmtpTransport(f"smtp://127.0.0.1:{port}", timeout=0.3).deliver(MAIL)
        assert time.monotonic() - started < 3
        assert failed.value.server_down
        assert "Timeout" in failed.value.reason


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_files_are_private_and_a_resend_replaces_the_same_file(tmp_path: Path) -> None:
    directory = tmp_path / "data" / "outbox"
    transport = FileTransport(directory)
    await transport.deliver(MAIL)
    path = directory / "0123abcd@example.org.eml"
    assert path.read_bytes() == MAIL.data
    assert _mode(directory) == 0o700
    assert _mode(path) == 0o600
    again = Mail(MAIL.message_id, MAIL.sender, MAIL.recipient, MAIL.data + b"resent\r\n")
    await transport.deliver(again)
    assert [p.name for p in directory.iterdir()] == [path.name]  # no temporary file left
    assert path.read_bytes() == again.data
    assert _mode(path) == 0o600


def test_file_names_come_from_the_message_id_alone() -> None:
    assert eml_file_name("<abc@example.org>") == "abc@example.org.eml"
    assert "/" not in eml_file_name("<../../etc/passwd@x>")
    assert not eml_file_name("<../../etc/passwd@x>").startswith(".")
