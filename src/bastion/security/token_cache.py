"""Verified claims kept by token, so a token seen again skips the signature check.

Revocation is not cached here: callers check it on every request.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import TYPE_CHECKING

from bastion.security.access_claims import LEEWAY_SECONDS, AccessClaims

if TYPE_CHECKING:
    from bastion.security.tokens import KeyRing


class VerifiedTokenCache:
    """Verified claims by the whole token string, so a repeat token skips the signature.

    Keyed by the full token (never the ``jti`` alone, which an attacker could reuse in a
    forged token). Bounded LRU; an entry is only served until its token expires. Revocation
    is not cached here: callers check it on every request.
    """

    def __init__(self, max_entries: int = 10_000) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[str, AccessClaims] = OrderedDict()

    def get(self, token: str, *, now: float) -> AccessClaims | None:
        claims = self._entries.get(token)
        if claims is None:
            return None
        if claims.expires_at + LEEWAY_SECONDS <= now:
            del self._entries[token]
            return None
        self._entries.move_to_end(token)
        return claims

    def put(self, token: str, claims: AccessClaims) -> None:
        self._entries[token] = claims
        self._entries.move_to_end(token)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


class TokenVerifier:
    """Verifies access tokens against the current key ring, through the cache."""

    def __init__(self, *, issuer: str, audience: str, cache: VerifiedTokenCache) -> None:
        self.issuer = issuer
        self.audience = audience
        self.cache = cache

    def verify(self, token: str, ring: KeyRing) -> AccessClaims:
        now = time.time()
        cached = self.cache.get(token, now=now)
        if cached is not None:
            return cached
        claims = ring.verify(token, issuer=self.issuer, audience=self.audience)
        self.cache.put(token, claims)
        return claims
