"""The one shape of a mail bastion sends, and the checks that keep its headers whole.

A message is built once, when it is queued: its ``Message-ID`` and ``Date`` are fixed then,
so a resend after a crash is the same message, which a recipient's mail system can
recognise as a duplicate. Headers are refused, never cleaned, when they hold a line break
(header injection: a subject ending in ``\\r\\nBcc: ...`` would add a recipient).
"""

from __future__ import annotations

import email.policy
import uuid
from dataclasses import dataclass
from datetime import datetime
from email.errors import HeaderParseError
from email.headerregistry import Address
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import format_datetime

# CRLF line ends (what SMTP and .eml readers expect) and the standard header handling.
POLICY = email.policy.SMTP
_FORBIDDEN = frozenset("\r\n\x00")


@dataclass(frozen=True, slots=True)
class Mail:
    """What a transport delivers: the envelope and the serialized message, as queued."""

    message_id: str
    sender: str
    recipient: str
    data: bytes


def _single_line(name: str, value: str) -> str:
    if _FORBIDDEN.intersection(value):
        raise ValueError(f"the mail's {name} holds a line break or NUL: refused")
    return value


def address_of(name: str, value: str) -> str:
    """The bare address in ``value`` (``a@b`` or ``Name <a@b>``); ``ValueError`` unless it
    is exactly one address (a list would send to more people than asked)."""
    _single_line(name, value)
    try:
        parsed = Address(addr_spec=value) if "<" not in value else _display_address(value)
    except (ValueError, HeaderParseError, IndexError):
        raise ValueError(f"the mail's {name} is not one valid address") from None
    if not parsed.username or not parsed.domain:
        raise ValueError(f"the mail's {name} is not one valid address")
    return parsed.addr_spec


def _display_address(value: str) -> Address:
    message = EmailMessage(policy=email.policy.default)
    message["From"] = value
    addresses = message["From"].addresses
    if len(addresses) != 1 or message["From"].defects:
        raise ValueError("not one address")
    found: Address = addresses[0]
    return found


def new_message_id(sender: str) -> str:
    """``<random@domain of the sender>``: unique, and on the sending domain as RFC 5322
    recommends (some spam filters frown on a foreign or missing domain)."""
    domain = address_of("sender", sender).rpartition("@")[2]
    return f"<{uuid.uuid4().hex}@{domain}>"


def build_message(
    *, sender: str, recipient: str, subject: str, text: str, message_id: str, date: datetime
) -> EmailMessage:
    """A text/plain UTF-8 message marked ``Auto-Submitted: auto-generated`` (RFC 3834), so
    that auto-responders do not answer it."""
    address_of("sender", sender)
    address_of("recipient", recipient)
    _single_line("subject", subject)
    _single_line("Message-ID", message_id)
    message = EmailMessage(policy=POLICY)
    message["From"] = sender
    message["To"] = recipient
    message["Subject"] = subject
    message["Date"] = format_datetime(date)
    message["Message-ID"] = message_id
    message["Auto-Submitted"] = "auto-generated"
    # Quoted-printable keeps the body 7-bit (any relay takes it) and still readable.
    message.set_content(text, subtype="plain", charset="utf-8", cte="quoted-printable")
    return message


def serialize(message: EmailMessage) -> str:
    """The message as it is stored (encrypted) and sent: ASCII with CRLF line ends (the
    UTF-8 body is transfer-encoded, a non-ASCII subject RFC 2047-encoded)."""
    return message.as_bytes(policy=POLICY).decode("ascii")


def parse(data: bytes) -> EmailMessage:
    """A stored message read back, for its envelope and for tests."""
    parsed = BytesParser(policy=email.policy.default).parsebytes(data)
    assert isinstance(parsed, EmailMessage)  # noqa: S101 (policy.default makes EmailMessage)
    return parsed


def mail_from_stored(content: str, *, message_id: str, recipient: str) -> Mail:
    """The ``Mail`` to deliver from a queued row's decrypted content: the envelope sender is
    the message's From address, the envelope recipient the row's."""
    data = content.encode("ascii")
    sender = address_of("sender", str(parse(data)["From"]))
    return Mail(message_id=message_id, sender=sender, recipient=recipient, data=data)
