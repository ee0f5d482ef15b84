"""Recovery codes: single-use ways in for a user who lost their authenticator.

A user writes them down or prints them, and may type one years later from paper, so they
are lower-case, in groups of four, from an alphabet without the characters that read
alike (0/o, 1/l/i). That alphabet has 31 symbols, so a code has 20 of them (five groups,
about 99 bits): sixteen would fall just short of 80 bits. Codes that random cannot be
guessed, so they are stored as a plain SHA-256, like refresh tokens: a slow hash guards
low-entropy secrets, which these are not.
"""

from __future__ import annotations

import hashlib
import secrets

RECOVERY_CODE_COUNT = 10
ALPHABET = "23456789abcdefghjkmnpqrstuvwxyz"
_GROUPS = 5
_GROUP_LENGTH = 4
CODE_LENGTH = _GROUPS * _GROUP_LENGTH
_SYMBOLS = frozenset(ALPHABET)


def _new_code() -> str:
    symbols = "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))
    return "-".join(
        symbols[start : start + _GROUP_LENGTH] for start in range(0, CODE_LENGTH, _GROUP_LENGTH)
    )


def new_recovery_codes(count: int = RECOVERY_CODE_COUNT) -> list[str]:
    """``count`` distinct codes, shown to the user once; store only their hashes."""
    if count < 1:
        raise ValueError("at least one recovery code")
    codes: list[str] = []
    while len(codes) < count:
        code = _new_code()
        if code not in codes:
            codes.append(code)
    return codes


def normalise_recovery_code(text: str) -> str | None:
    """A code as typed (any case, with or without its hyphens, spaces anywhere) as it is
    hashed; None when it cannot be a code, so a typo costs no database round trip."""
    normalised = text.strip().lower().replace("-", "").replace(" ", "")
    if len(normalised) != CODE_LENGTH or not _SYMBOLS.issuperset(normalised):
        return None
    return normalised


def hash_recovery_code(code: str) -> str:
    """What the database keeps of a code. ``ValueError`` for text that is no code, so an
    invalid code is never looked up (nor stored) under some hash."""
    normalised = normalise_recovery_code(code)
    if normalised is None:
        raise ValueError("not a recovery code")
    return hashlib.sha256(normalised.encode("ascii")).hexdigest()
