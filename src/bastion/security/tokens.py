"""Access tokens: JWTs (RFC 9068) signed by a key ring, verified with pinned algorithms.

Every key has a ``kid`` and exactly one algorithm. Verification takes the algorithm from
our key, never from the token: ``alg:none`` in any spelling, an HS256 token presented with
an asymmetric key's ``kid`` (the classic confusion), an unknown ``kid``, another ``typ``,
and tokens that carry their own key material (``jwk``, ``jku``, ``x5u``, ``x5c``) are all
refused before the signature is even checked. Nothing is ever fetched from a URL.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

ACCESS_TOKEN_TYPE = "at+jwt"  # noqa: S105 (a media type, not a secret)
_ACCEPTED_TYPES = frozenset({"at+jwt", "application/at+jwt"})
_FORBIDDEN_HEADERS = frozenset({"jwk", "jku", "x5u", "x5c", "crit"})
REQUIRED_CLAIMS = ("iss", "aud", "sub", "exp", "iat", "nbf", "jti", "sid", "scope")
LEEWAY_SECONDS = 30
RSA_KEY_BITS = 3072


_JWK_CONVERTERS: dict[str, Callable[[Any], Mapping[str, Any]]] = {
    "EdDSA": lambda key: OKPAlgorithm.to_jwk(key, as_dict=True),
    "ES256": lambda key: ECAlgorithm.to_jwk(key, as_dict=True),
    "RS256": lambda key: RSAAlgorithm.to_jwk(key, as_dict=True),
}


INVALID_TOKEN_DETAIL = "The access token is not valid."  # noqa: S105 (a message)


class InvalidToken(Exception):
    """The token cannot be trusted; ``reason`` is for logs, never for the client."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    algorithm: str
    signing_key: Any  # private key object, or the HMAC secret (bytes)
    verifying_key: Any  # public key object, or the same secret
    created_at: datetime
    retired_at: datetime | None = None

    @property
    def is_symmetric(self) -> bool:
        return self.algorithm == "HS256"

    def public_jwk(self) -> dict[str, Any] | None:
        """The JWK of the public key; None for a shared secret, which is never published."""
        if self.is_symmetric:
            return None
        jwk: dict[str, Any] = dict(_JWK_CONVERTERS[self.algorithm](self.verifying_key))
        jwk.update({"kid": self.kid, "alg": self.algorithm, "use": "sig"})
        return jwk

    def private_key_pem(self) -> str:
        if self.is_symmetric:
            raise ValueError("a shared secret has no PEM form")
        pem: bytes = self.signing_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return pem.decode()

    def published_until(self, max_token_lifetime: int) -> datetime | None:
        """When no token signed by this key can still be valid; None while it signs."""
        if self.retired_at is None:
            return None
        return self.retired_at + timedelta(seconds=max_token_lifetime + LEEWAY_SECONDS)


def _new_private_key(algorithm: str) -> Any:
    if algorithm == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    if algorithm == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=RSA_KEY_BITS)
    raise ValueError(f"not an asymmetric algorithm: {algorithm}")


def generate_signing_key(algorithm: str, *, now: datetime) -> SigningKey:
    private_key = _new_private_key(algorithm)
    return SigningKey(
        kid=secrets.token_urlsafe(12),
        algorithm=algorithm,
        signing_key=private_key,
        verifying_key=private_key.public_key(),
        created_at=now,
    )


def signing_key_from_pem(
    *, kid: str, algorithm: str, pem: str, created_at: datetime, retired_at: datetime | None
) -> SigningKey:
    private_key = serialization.load_pem_private_key(pem.encode(), password=None)
    return SigningKey(
        kid=kid,
        algorithm=algorithm,
        signing_key=private_key,
        verifying_key=private_key.public_key(),
        created_at=created_at,
        retired_at=retired_at,
    )


def shared_secret_key(secret: bytes) -> SigningKey:
    """HS256, only when configured: the ``kid`` names the secret without revealing it."""
    kid = "hs256-" + hashlib.sha256(b"bastion-kid:" + secret).hexdigest()[:16]
    return SigningKey(
        kid=kid,
        algorithm="HS256",
        signing_key=secret,
        verifying_key=secret,
        created_at=datetime(1970, 1, 1, tzinfo=UTC),
    )


@dataclass(frozen=True, slots=True)
class AccessClaims:
    subject: str
    session_id: str
    token_id: str
    scopes: frozenset[str]
    issued_at: int
    expires_at: int


class KeyRing:
    """The keys that may verify tokens, and the one that signs new ones (the newest)."""

    def __init__(
        self, keys: Iterable[SigningKey], *, max_token_lifetime: int | None = None
    ) -> None:
        """``max_token_lifetime`` (the access-token TTL) bounds what a leaked key can do:
        tokens may not live longer than it, and a retired key's tokens may not be younger
        than its retirement, so a key stops working for good one lifetime after rotation."""
        self.max_token_lifetime = max_token_lifetime
        self.keys = {key.kid: key for key in keys}
        active = [key for key in self.keys.values() if key.retired_at is None]
        if not active:
            raise ValueError("a key ring needs at least one active signing key")
        self.current = max(active, key=lambda key: (key.created_at, key.kid))

    def sign(self, claims: dict[str, Any]) -> str:
        key = self.current
        return jwt.encode(
            claims,
            key.signing_key,
            algorithm=key.algorithm,
            headers={"kid": key.kid, "typ": ACCESS_TOKEN_TYPE},
        )

    def jwks(self, *, now: datetime, max_token_lifetime: int) -> dict[str, list[dict[str, Any]]]:
        published = []
        for key in sorted(self.keys.values(), key=lambda key: key.created_at, reverse=True):
            until = key.published_until(max_token_lifetime)
            jwk = key.public_jwk()
            if jwk is not None and (until is None or until > now):
                published.append(jwk)
        return {"keys": published}

    def key_for(self, token: str) -> SigningKey:
        """The ring's key for this token's header, after refusing every unsafe header."""
        if "=" in token:  # base64url in JWS has no padding; refuse look-alike spellings
            raise InvalidToken("malformed")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidToken("malformed") from None
        if _FORBIDDEN_HEADERS & header.keys():
            raise InvalidToken("embedded or critical header")
        typ = header.get("typ")
        if not isinstance(typ, str) or typ.lower() not in _ACCEPTED_TYPES:
            raise InvalidToken("not an access token")
        kid = header.get("kid")
        key = self.keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise InvalidToken("unknown kid")
        if header.get("alg") != key.algorithm:
            raise InvalidToken("algorithm does not match the key")
        return key

    def verify(self, token: str, *, issuer: str, audience: str) -> AccessClaims:
        key = self.key_for(token)
        try:
            claims = jwt.decode(
                token,
                key.verifying_key,
                algorithms=[key.algorithm],
                audience=audience,
                issuer=issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": list(REQUIRED_CLAIMS), "strict_aud": True},
            )
        except jwt.PyJWTError as error:
            raise InvalidToken(type(error).__name__) from None
        access = _access_claims(claims)
        if self.max_token_lifetime is not None:
            if access.expires_at - access.issued_at > self.max_token_lifetime + LEEWAY_SECONDS:
                raise InvalidToken("lifetime longer than this issuer grants")
            retired = key.retired_at
            if retired is not None and access.issued_at > retired.timestamp() + LEEWAY_SECONDS:
                raise InvalidToken("issued by a retired key")
        return access


def _access_claims(claims: dict[str, Any]) -> AccessClaims:
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
    return AccessClaims(
        subject=str(subject),
        session_id=str(session_id),
        token_id=str(token_id),
        scopes=frozenset(scope.split()),
        issued_at=int(claims["iat"]),
        expires_at=int(claims["exp"]),
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
    }


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


def hash_refresh_token(token: str) -> str:
    """Refresh tokens are 256-bit random: a plain SHA-256 is enough to store them safely."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_refresh_token() -> str:
    return secrets.token_urlsafe(32)


__all__ = [
    "ACCESS_TOKEN_TYPE",
    "AccessClaims",
    "InvalidToken",
    "KeyRing",
    "SigningKey",
    "TokenVerifier",
    "VerifiedTokenCache",
    "access_token_claims",
    "generate_signing_key",
    "hash_refresh_token",
    "new_refresh_token",
    "shared_secret_key",
    "signing_key_from_pem",
]
