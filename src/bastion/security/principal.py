"""Who is calling: what a verified, unrevoked access token (or browser session) says."""

from __future__ import annotations

from dataclasses import dataclass

from bastion.security.access_claims import AccessClaims


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: str
    session_id: str
    token_id: str
    scopes: frozenset[str]
    issued_at: int
    expires_at: int
    # Authenticated by a browser's session cookie: its unsafe requests need the CSRF checks.
    via_cookie: bool = False

    @classmethod
    def from_claims(cls, claims: AccessClaims) -> Principal:
        return cls(
            user_id=claims.subject,
            session_id=claims.session_id,
            token_id=claims.token_id,
            scopes=claims.scopes,
            issued_at=claims.issued_at,
            expires_at=claims.expires_at,
        )
