"""Secrets at rest (AES-256-GCM): bound to their row, refused when altered or under an
unknown key, readable across a rotation, and no key ever shown."""

from __future__ import annotations

import base64
from collections.abc import Callable

import pytest

from bastion.security.encryption import (
    KEY_BYTES,
    DecryptionFailed,
    EncryptionKeys,
    new_key_text,
    parse_key,
)
from tests.conftest import TEST_ENCRYPTION_KEY

SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
CONTEXT = "totp:2b1c3d4e-0000-4000-8000-000000000001"


def keys(*texts: str) -> EncryptionKeys:
    return EncryptionKeys.parse(",".join(texts))


def test_a_value_round_trips() -> None:
    ring = keys(TEST_ENCRYPTION_KEY)
    sealed = ring.encrypt(SECRET, context=CONTEXT)
    assert SECRET not in sealed
    assert sealed.startswith(f"v1.{ring.current_key_id}.")
    assert ring.decrypt(sealed, context=CONTEXT) == SECRET
    assert ring.decrypt(ring.encrypt("", context=CONTEXT), context=CONTEXT) == ""
    assert ring.decrypt(ring.encrypt("é ✓ 🗝", context="c"), context="c") == "é ✓ 🗝"


def test_each_encryption_is_fresh() -> None:
    ring = keys(TEST_ENCRYPTION_KEY)
    assert ring.encrypt(SECRET, context=CONTEXT) != ring.encrypt(SECRET, context=CONTEXT)


@pytest.mark.parametrize(
    "other", ["totp:2b1c3d4e-0000-4000-8000-000000000002", "mail:" + CONTEXT[5:], "", CONTEXT + " "]
)
def test_another_context_is_refused(other: str) -> None:
    """A ciphertext copied into another user's row does not decrypt there."""
    ring = keys(TEST_ENCRYPTION_KEY)
    sealed = ring.encrypt(SECRET, context=CONTEXT)
    with pytest.raises(DecryptionFailed, match="altered, or not for this context"):
        ring.decrypt(sealed, context=other)


def _flip(sealed: str, index: int) -> str:
    version, key_id, payload = sealed.split(".")
    raw = bytearray(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    raw[index] ^= 0x01
    return f"{version}.{key_id}.{base64.urlsafe_b64encode(bytes(raw)).decode().rstrip('=')}"


@pytest.mark.parametrize("index", [0, 11, 12, 20, -1], ids=["nonce", "nonce-end", "body",
                                                             "body-mid", "tag"])
def test_a_tampered_value_is_refused(index: int) -> None:
    ring = keys(TEST_ENCRYPTION_KEY)
    sealed = ring.encrypt(SECRET, context=CONTEXT)
    with pytest.raises(DecryptionFailed):
        ring.decrypt(_flip(sealed, index), context=CONTEXT)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda s: s[:-1],
        lambda s: s[:20],
        lambda s: s.replace("v1.", "v2.", 1),
        lambda s: s.split(".", 1)[1],
        lambda s: s + "AA",
        lambda s: s.rsplit(".", 1)[0] + ".",
        lambda _: "",
        lambda _: "plain text",
    ],
    ids=["truncated", "cut", "version", "no-version", "longer", "no-payload", "empty", "plain"],
)
def test_malformed_values_are_refused_with_decryption_failed(
    mangle: Callable[[str], str],
) -> None:
    ring = keys(TEST_ENCRYPTION_KEY)
    sealed = ring.encrypt(SECRET, context=CONTEXT)
    with pytest.raises(DecryptionFailed):
        ring.decrypt(mangle(sealed), context=CONTEXT)


def test_a_key_not_configured_is_refused() -> None:
    sealed = keys(new_key_text()).encrypt(SECRET, context=CONTEXT)
    with pytest.raises(DecryptionFailed, match="not configured"):
        keys(TEST_ENCRYPTION_KEY).decrypt(sealed, context=CONTEXT)


def test_after_a_rotation_old_values_still_decrypt_and_new_ones_use_the_new_key() -> None:
    old = keys(TEST_ENCRYPTION_KEY)
    new_text = new_key_text()
    rotated = keys(new_text, TEST_ENCRYPTION_KEY)
    under_old = old.encrypt(SECRET, context=CONTEXT)
    assert rotated.decrypt(under_old, context=CONTEXT) == SECRET
    under_new = rotated.encrypt(SECRET, context=CONTEXT)
    assert rotated.current_key_id == keys(new_text).current_key_id != old.current_key_id
    assert keys(new_text).decrypt(under_new, context=CONTEXT) == SECRET
    with pytest.raises(DecryptionFailed):
        old.decrypt(under_new, context=CONTEXT)


def test_needs_reencryption_is_true_only_off_the_current_key() -> None:
    old = keys(TEST_ENCRYPTION_KEY)
    rotated = keys(new_key_text(), TEST_ENCRYPTION_KEY)
    assert rotated.needs_reencryption(old.encrypt(SECRET, context=CONTEXT))
    assert not rotated.needs_reencryption(rotated.encrypt(SECRET, context=CONTEXT))
    assert not old.needs_reencryption(old.encrypt(SECRET, context=CONTEXT))
    assert rotated.needs_reencryption("not an encrypted value")


def test_keys_are_parsed_with_or_without_padding_and_spaces() -> None:
    raw = bytes(range(KEY_BYTES))
    text = base64.urlsafe_b64encode(raw).decode()
    assert text.endswith("=")
    assert parse_key(text) == raw == parse_key(text.rstrip("=")) == parse_key(f"  {text}\n")
    assert len(parse_key(new_key_text())) == KEY_BYTES
    assert new_key_text() != new_key_text()
    assert keys(f" {TEST_ENCRYPTION_KEY} ", "").current_key_id == keys(
        TEST_ENCRYPTION_KEY).current_key_id


@pytest.mark.parametrize(
    "bad",
    [
        "sixteen-bytes-key-text",  # valid base64url, wrong length
        base64.urlsafe_b64encode(b"k" * 31).decode(),
        base64.urlsafe_b64encode(b"k" * 33).decode(),
        "%%%%nope-b64%%%%",
        "a" * 43 + "*",
    ],
)
def test_bad_key_text_is_refused_without_echoing_it(bad: str) -> None:
    with pytest.raises(ValueError) as refused:
        EncryptionKeys.parse(f"{TEST_ENCRYPTION_KEY},{bad}")
    message = str(refused.value)
    assert bad not in message
    assert bad.rstrip("=")[:8] not in message
    assert TEST_ENCRYPTION_KEY not in message


def test_no_key_or_the_same_key_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        EncryptionKeys.parse(" , ")
    with pytest.raises(ValueError, match="twice"):
        EncryptionKeys.parse(f"{TEST_ENCRYPTION_KEY},{TEST_ENCRYPTION_KEY}=")


def test_the_repr_shows_no_key() -> None:
    ring = keys(new_key_text(), TEST_ENCRYPTION_KEY)
    shown = f"{ring!r} {ring!s}"
    assert shown.count("EncryptionKeys(<2 keys>)") == 2
    assert TEST_ENCRYPTION_KEY not in shown
    raw = parse_key(TEST_ENCRYPTION_KEY)
    assert raw.hex() not in shown and repr(raw) not in shown
