"""An access token's claims: which are required, how they are read, and how new ones are made.

Kept apart from the key ring so that what a verified token says (``AccessClaims``) can be
used by code that never sees a key, and so that the clock skew allowed (``LEEWAY_SECONDS``)
is one number for the claims, the keys' publication and the cache alike.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

REQUIRED_CLAIMS = ("iss", "aud", "sub", "exp", "iat", "nbf", "jti", "sid", "scope")
LEEWAY_SECONDS = 30

INVALID_TOKEN_DETAIL = "The access token is not valid."  # noqa: S105 (a message)


class InvalidToken(Exception):
    """The token cannot be trusted; ``reason`` is for logs, never for the client."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class AccessClaims:
    subject: str
    session_id: str
    token_id: str
    scopes: frozenset[str]
    issued_at: int
    expires_at: int
    # RFC 8176 authentication methods: {"pwd"}, or with a second factor {"pwd", "otp"} /
    # {"pwd", "mfa"}. A token without ``amr`` proved nothing beyond its existence.
    methods: frozenset[str] = frozenset()


def read_access_claims(claims: dict[str, Any]) -> AccessClaims:
    """The claims bastion relies on, typed; ``InvalidToken`` when one is of the wrong type."""
    subject, session_id, token_id, scope = (
        claims.get("sub"),
        claims.get("sid"),
        claims.get("jti"),
        claims.get("scope"),
    )
    if not all(isinstance(value, str) for value in (subject, session_id, token_id, scope)):
        raise InvalidToken("claims of the wrong type")
    assert isinstance(scope, str)  # noqa: S101 (narrowing for mypy; checked above)
    # bastion names users and sessions by UUID; anything else was not issued here.
    try:
        uuid.UUID(str(subject))
        uuid.UUID(str(session_id))
    except ValueError:
        raise InvalidToken("claims of the wrong type") from None
    methods = claims.get("amr", [])
    if not isinstance(methods, list) or not all(isinstance(item, str) for item in methods):
        raise InvalidToken("claims of the wrong type")
    return AccessClaims(
        subject=str(subject),
        session_id=str(session_id),
        token_id=str(token_id),
        scopes=frozenset(scope.split()),
        issued_at=int(claims["iat"]),
        expires_at=int(claims["exp"]),
        methods=frozenset(methods),
    )


def access_token_claims(
    *,
    issuer: str,
    audience: str,
    subject: str,
    session_id: str,
    scopes: Iterable[str],
    lifetime: int,
    now: int,
    methods: Iterable[str] = ("pwd",),
) -> dict[str, Any]:
    return {
        "iss": issuer,
        "aud": audience,
        "sub": subject,
        "sid": session_id,
        "jti": secrets.token_urlsafe(16),
        "scope": " ".join(sorted(scopes)),
        "iat": now,
        "nbf": now,
        "exp": now + lifetime,
        "amr": sorted(methods),
    }
