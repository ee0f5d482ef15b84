"""Bearer-token authentication: verify (through the cache), then check revocation.

The hot path costs a dict lookup when the token was seen before, plus one revocation check
(in-process, or one Redis round trip); never a database query. An unknown ``kid`` reloads
the key ring at most once per interval, for keys rotated by another process.
"""

from __future__ import annotations

from bastion.security.access_claims import AccessClaims
from bastion.security.principal import Principal
from bastion.security.tokens import InvalidToken, TokenVerifier
from bastion.storage.revocations import RevocationStore
from bastion.storage.signing_keys import KeyRingHolder


class Authenticator:
    def __init__(
        self, *, keys: KeyRingHolder, verifier: TokenVerifier, revocations: RevocationStore
    ) -> None:
        self.keys = keys
        self.verifier = verifier
        self.revocations = revocations

    async def authenticate(self, token: str) -> Principal:
        """The principal behind ``token``; raises ``InvalidToken`` otherwise."""
        try:
            claims = self.verifier.verify(token, await self.keys.ring())
        except InvalidToken as error:
            if error.reason != "unknown kid":
                raise
            ring = await self.keys.reload_for_unknown_kid()
            if ring is None:
                raise
            claims = self.verifier.verify(token, ring)
        return await unrevoked_principal(self.revocations, claims)


async def unrevoked_principal(revocations: RevocationStore, claims: AccessClaims) -> Principal:
    """The principal of verified ``claims``, unless the store says its token, its session
    or its user's earlier tokens were revoked (``InvalidToken``). The one revocation check
    of every verifier: the service's and a resource server's (``JwksAuthenticator``)."""
    revoked = await revocations.is_revoked(
        jti=claims.token_id,
        sid=claims.session_id,
        user_id=claims.subject,
        issued_at=claims.issued_at,
    )
    if revoked:
        raise InvalidToken("revoked")
    return Principal.from_claims(claims)
