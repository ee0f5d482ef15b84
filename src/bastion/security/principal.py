"""Who is calling: what a verified, unrevoked access token (or browser session) says."""

from __future__ import annotations

from dataclasses import dataclass

from bastion.security.access_claims import AccessClaims

# RFC 8176 values that mean a factor beyond the password: "otp" (a TOTP code), "mfa" (a
# recovery code: several factors, not one named method).
SECOND_FACTOR_METHODS = frozenset({"otp", "mfa"})


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
    # How the user signed in (RFC 8176 ``amr``): {"pwd"}, {"pwd", "otp"} or {"pwd", "mfa"}.
    methods: frozenset[str] = frozenset()

    @property
    def second_factor(self) -> bool:
        """Signed in with a second factor (a TOTP code or a recovery code)."""
        return not self.methods.isdisjoint(SECOND_FACTOR_METHODS)

    @classmethod
    def from_claims(cls, claims: AccessClaims) -> Principal:
        return cls(
            user_id=claims.subject,
            session_id=claims.session_id,
            token_id=claims.token_id,
            scopes=claims.scopes,
            issued_at=claims.issued_at,
            expires_at=claims.expires_at,
            methods=claims.methods,
        )
