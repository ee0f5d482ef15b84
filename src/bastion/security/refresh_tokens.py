"""Refresh tokens: opaque random strings, stored only as their hash."""

from __future__ import annotations

import hashlib
import secrets


def hash_refresh_token(token: str) -> str:
    """Refresh tokens are 256-bit random: a plain SHA-256 is enough to store them safely."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_refresh_token() -> str:
    return secrets.token_urlsafe(32)
