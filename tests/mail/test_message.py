"""The message as queued: its headers, and the refusal of header injection."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bastion.mail.message import (
    address_of,
    build_message,
    mail_from_stored,
    new_message_id,
    parse,
    serialize,
)

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def _message(**overrides: str) -> str:
    values = {
        "sender": "bastion <bastion@example.org>",
        "recipient": "ada@example.com",
        "subject": "Réinitialiser",
        "text": "Bonjour, voici le lien : https://x.example/reset?token=t0k3n\n",
        **overrides,
    }
    message = build_message(
        message_id=new_message_id(values["sender"]), date=NOW, **values
    )
    return serialize(message)


def test_the_message_carries_every_header_and_a_utf8_text_body() -> None:
    stored = _message()
    message = parse(stored.encode("ascii"))
    assert message["From"] == "bastion <bastion@example.org>"
    assert message["To"] == "ada@example.com"
    assert message["Subject"] == "Réinitialiser"
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["Date"] == "Wed, 02 Dec 2026 12:00:00 +0000"
    assert message["Message-ID"].endswith("@example.org>")
    assert message.get_content_type() == "text/plain"
    assert message.get_content_charset() == "utf-8"
    body = message.get_content().replace("\r\n", "\n")
    assert body == "Bonjour, voici le lien : https://x.example/reset?token=t0k3n\n"
    assert "\r\n" in stored  # CRLF, as SMTP and .eml readers expect


def test_message_ids_are_unique_and_on_the_sending_domain() -> None:
    ids = {new_message_id("bastion@mail.example.org") for _ in range(100)}
    assert len(ids) == 100
    assert all(i.startswith("<") and i.endswith("@mail.example.org>") for i in ids)


@pytest.mark.parametrize("field", ["subject", "recipient", "sender"])
@pytest.mark.parametrize("line_break", ["\r\n", "\n", "\r", "\x00"])
def test_a_line_break_in_a_header_is_refused(field: str, line_break: str) -> None:
    value = {"subject": "Hi", "recipient": "ada@example.com", "sender": "bastion@example.org"}[
        field
    ]
    with pytest.raises(ValueError, match="line break"):
        _message(**{field: f"{value}{line_break}Bcc: eve@example.net"})


@pytest.mark.parametrize(
    "recipient",
    [
        "ada@example.com, eve@example.net",
        "Ada <ada@example.com>, eve@example.net",
        "nobody",
        "@x.org",
        "ü@example.com",
    ],
)
def test_a_recipient_that_is_not_one_address_is_refused(recipient: str) -> None:
    with pytest.raises(ValueError, match="not one valid address"):
        _message(recipient=recipient)


def test_the_envelope_is_read_from_the_stored_message() -> None:
    mail = mail_from_stored(_message(), message_id="<m@example.org>", recipient="ada@example.com")
    assert mail.sender == "bastion@example.org"
    assert mail.recipient == "ada@example.com"
    assert address_of("sender", "Bastion <b@example.org>") == "b@example.org"
