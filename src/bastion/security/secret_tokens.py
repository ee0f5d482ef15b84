"""Opaque secrets handed to a client and kept server-side only as their hash: refresh tokens,
browser-session cookies, ``mfa_token``s and mailed links' tokens alike.

Each is 256 random bits, so a plain SHA-256 stores it safely (there is no dictionary to try)
and lets it be found again by an indexed equality.
"""

from __future__ import annotations

import hashlib
import secrets

SECRET_TOKEN_BYTES = 32


def new_secret_token() -> str:
    """256 random bits, base64url: 43 characters."""
    return secrets.token_urlsafe(SECRET_TOKEN_BYTES)


def hash_secret_token(token: str) -> str:
    """What the database keeps of a secret token: its SHA-256, hex."""
    return hashlib.sha256(token.encode()).hexdigest()
