"""Opaque, tamper-proof pagination cursors.

A cursor is the position of the last item seen, serialised and signed with HMAC-SHA256
under a server secret. Clients cannot read meaning into it or forge one: a cursor that was
edited, truncated or made up fails verification and the request gets a 4xx, instead of the
query running from an attacker-chosen position.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

import orjson

_SIGNATURE_BYTES = 16  # a truncated HMAC-SHA256 tag: 128 bits are plenty for a cursor
MAX_CURSOR_LENGTH = 512
# Two unpadded base64url parts: the payload and its tag.
CURSOR_PATTERN = r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$"


class InvalidCursor(ValueError):
    """The cursor was not issued by this server (or not for this listing)."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class CursorCodec:
    """Signs and verifies cursors; ``purpose`` keeps one listing's cursors out of another."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def _tag(self, purpose: str, payload: bytes) -> bytes:
        message = purpose.encode() + b"\x00" + payload
        return hmac.new(self._secret, message, hashlib.sha256).digest()[:_SIGNATURE_BYTES]

    def encode(self, purpose: str, position: list[Any]) -> str:
        payload = orjson.dumps(position)
        return f"{_b64(payload)}.{_b64(self._tag(purpose, payload))}"

    def decode(self, purpose: str, cursor: str) -> list[Any]:
        if len(cursor) > MAX_CURSOR_LENGTH or cursor.count(".") != 1:
            raise InvalidCursor
        encoded_payload, encoded_tag = cursor.split(".")
        try:
            payload, tag = _unb64(encoded_payload), _unb64(encoded_tag)
        except ValueError:
            raise InvalidCursor from None
        if not hmac.compare_digest(tag, self._tag(purpose, payload)):
            raise InvalidCursor
        try:
            position = orjson.loads(payload)
        except orjson.JSONDecodeError:
            raise InvalidCursor from None
        if not isinstance(position, list):
            raise InvalidCursor
        return position
