"""Secrets at rest: AES-256-GCM under keys that never live in the database.

A TOTP secret or a queued mail is stored as ``v1.<key id>.<base64url(nonce | ciphertext)>``.
The key id (a hash of the key, never the key) says which key of ``BASTION_ENCRYPTION_KEY``
encrypted it, so a rotation (a new key put first, the old ones after it) keeps every stored
value readable while new values use the new key; ``bastion keys reencrypt`` then moves the
old values over, after which the old key can be dropped from the list.

Every value is bound to where it is stored by the associated data (``context``: e.g. the
user's id for a TOTP secret), so a ciphertext copied into another row does not decrypt.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
_NONCE_BYTES = 12
_VERSION = "v1"
_KEY_ID_LABEL = b"bastion encryption key id\x00"


class DecryptionFailed(Exception):
    """The value was not made by any configured key for this context, or was altered.
    The message never holds key material or the value."""


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def parse_key(text: str) -> bytes:
    """One key as ``BASTION_ENCRYPTION_KEY`` writes it: 32 bytes, base64url (padding
    optional). ``ValueError`` otherwise, naming no part of the value."""
    text = text.strip()
    try:
        key = _b64decode(text)
    except (binascii.Error, ValueError):
        raise ValueError("an encryption key is not base64url") from None
    if len(key) != KEY_BYTES:
        raise ValueError(f"an encryption key must be {KEY_BYTES} bytes (base64url), not {len(key)}")
    return key


def new_key_text() -> str:
    """A fresh key, written as the setting expects it."""
    return base64.urlsafe_b64encode(os.urandom(KEY_BYTES)).decode().rstrip("=")


def _key_id(key: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(_KEY_ID_LABEL + key).digest()[:9]).decode()


@dataclass(frozen=True, slots=True)
class EncryptionKeys:
    """The configured keys: the first encrypts, every one decrypts."""

    _keys: tuple[tuple[str, AESGCM], ...]

    @classmethod
    def from_keys(cls, keys: Iterable[bytes]) -> EncryptionKeys:
        ring = tuple((_key_id(key), AESGCM(key)) for key in keys)
        if not ring:
            raise ValueError("at least one encryption key is needed")
        if len({key_id for key_id, _ in ring}) != len(ring):
            raise ValueError("the same encryption key is listed twice")
        return cls(ring)

    @classmethod
    def parse(cls, setting: str) -> EncryptionKeys:
        """``BASTION_ENCRYPTION_KEY``: one key or a comma-separated list."""
        return cls.from_keys(parse_key(part) for part in setting.split(",") if part.strip())

    @property
    def current_key_id(self) -> str:
        return self._keys[0][0]

    def encrypt(self, plaintext: str, *, context: str) -> str:
        key_id, aead = self._keys[0]
        nonce = os.urandom(_NONCE_BYTES)
        sealed = aead.encrypt(nonce, plaintext.encode("utf-8"), context.encode("utf-8"))
        payload = base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")
        return f"{_VERSION}.{key_id}.{payload}"

    def decrypt(self, stored: str, *, context: str) -> str:
        version, _, rest = stored.partition(".")
        key_id, _, payload = rest.partition(".")
        if version != _VERSION or not payload:
            raise DecryptionFailed("not an encrypted value")
        aead = next((aead for known, aead in self._keys if known == key_id), None)
        if aead is None:
            raise DecryptionFailed("encrypted with a key that is not configured")
        try:
            raw = _b64decode(payload)
            opened = aead.decrypt(
                raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], context.encode("utf-8")
            )
        except (binascii.Error, ValueError, InvalidTag):
            raise DecryptionFailed("altered, or not for this context") from None
        return opened.decode("utf-8")

    def needs_reencryption(self, stored: str) -> bool:
        """Whether ``stored`` is under another key than the current (first) one."""
        parts = stored.split(".", 2)
        return len(parts) != 3 or parts[1] != self.current_key_id

    def __repr__(self) -> str:
        return f"EncryptionKeys(<{len(self._keys)} keys>)"
