"""Access tokens: JWTs (RFC 9068) signed by a key ring, verified with pinned algorithms.

Every key has a ``kid`` and exactly one algorithm. Verification takes the algorithm from
our key, never from the token: ``alg:none`` in any spelling, an HS256 token presented with
an asymmetric key's ``kid`` (the classic confusion), an unknown ``kid``, another ``typ``,
and tokens that carry their own key material (``jwk``, ``jku``, ``x5u``, ``x5c``) are all
refused before the signature is even checked. Nothing is ever fetched from a URL.

The claims live in ``access_claims``, the keys in ``signing_keys``, the cache of verified
tokens in ``token_cache`` and opaque secrets (refresh tokens among them) in
``secret_tokens``; their names are also importable from here, the one door to access tokens.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import jwt

from bastion.security.access_claims import (
    INVALID_TOKEN_DETAIL,
    LEEWAY_SECONDS,
    REQUIRED_CLAIMS,
    AccessClaims,
    InvalidToken,
    access_token_claims,
    read_access_claims,
)
from bastion.security.secret_tokens import hash_secret_token, new_secret_token
from bastion.security.signing_keys import (
    SigningKey,
    generate_signing_key,
    shared_secret_key,
    signing_key_from_pem,
)
from bastion.security.token_cache import TokenVerifier, VerifiedTokenCache

ACCESS_TOKEN_TYPE = "at+jwt"  # noqa: S105 (a media type, not a secret)
_ACCEPTED_TYPES = frozenset({"at+jwt", "application/at+jwt"})
_FORBIDDEN_HEADERS = frozenset({"jwk", "jku", "x5u", "x5c", "crit"})


class VerifyingKey(Protocol):
    """What verifies a token: one algorithm and its (public) key. A ``SigningKey`` is one;
    so is a key read from another service's JWKS (``bastion.toolkit._jwks``)."""

    @property
    def algorithm(self) -> str: ...

    @property
    def verifying_key(self) -> Any: ...


_Key = TypeVar("_Key", bound=VerifyingKey)


def checked_header(token: str) -> dict[str, Any]:
    """The token's (unverified) JOSE header, after refusing every unsafe one: padding or
    anything else that is not compact JWS, key material or key URLs carried by the token
    (``jwk``, ``jku``, ``x5u``, ``x5c``: never followed), ``crit`` extensions, and any
    ``typ`` but an access token's (RFC 9068)."""
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
    return header


def pinned_key(header: Mapping[str, Any], keys: Mapping[str, _Key]) -> _Key:
    """The key the header's ``kid`` names, provided the header's ``alg`` is that key's own:
    the algorithm comes from the key, never from the token (``alg:none``, or HS256 with a
    public key as the secret, never match). ``InvalidToken("unknown kid")`` when ``keys``
    has no such key."""
    kid = header.get("kid")
    key = keys.get(kid) if isinstance(kid, str) else None
    if key is None:
        raise InvalidToken("unknown kid")
    if header.get("alg") != key.algorithm:
        raise InvalidToken("algorithm does not match the key")
    return key


def decode_access_token(
    token: str, key: VerifyingKey, *, issuer: str, audience: str
) -> AccessClaims:
    """The signature checked with ``key`` alone (its algorithm pinned), then ``iss``,
    ``aud``, ``exp`` and ``nbf`` (with ``LEEWAY_SECONDS``) and every required claim, read
    as bastion's typed claims. Call ``checked_header`` and ``pinned_key`` first."""
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
    return read_access_claims(claims)


class KeyRing:
    """The keys that may verify tokens, and the one that signs new ones.

    A key signs from its ``created_at`` until its ``retired_at``; both may lie ahead. A
    rotation publishes the new key first and starts signing with it only later (see
    ``storage.signing_keys``), so every host has learnt it before any token it signed
    arrives."""

    def __init__(
        self, keys: Iterable[SigningKey], *, max_token_lifetime: int | None = None
    ) -> None:
        """``max_token_lifetime`` (the access-token TTL) bounds what a leaked key can do:
        tokens may not live longer than it, and a retired key's tokens may not be younger
        than its retirement, so a key stops working for good one lifetime after rotation."""
        self.max_token_lifetime = max_token_lifetime
        self.keys = {key.kid: key for key in keys}
        if not any(key.retired_at is None for key in self.keys.values()):
            raise ValueError("a key ring needs at least one active signing key")

    def current_at(self, now: datetime) -> SigningKey:
        """The key that signs at ``now``: the newest one whose time has come and not gone
        (failing that, the newest never to retire)."""
        signing = [
            key
            for key in self.keys.values()
            if key.created_at <= now and (key.retired_at is None or key.retired_at > now)
        ]
        if not signing:
            signing = [key for key in self.keys.values() if key.retired_at is None]
        return max(signing, key=lambda key: (key.created_at, key.kid))

    @property
    def current(self) -> SigningKey:
        return self.current_at(datetime.now(UTC))

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
        return pinned_key(checked_header(token), self.keys)

    def verify(self, token: str, *, issuer: str, audience: str) -> AccessClaims:
        key = self.key_for(token)
        access = decode_access_token(token, key, issuer=issuer, audience=audience)
        if self.max_token_lifetime is not None:
            if access.expires_at - access.issued_at > self.max_token_lifetime + LEEWAY_SECONDS:
                raise InvalidToken("lifetime longer than this issuer grants")
            retired = key.retired_at
            if retired is not None and access.issued_at > retired.timestamp() + LEEWAY_SECONDS:
                raise InvalidToken("issued by a retired key")
        return access


__all__ = [
    "ACCESS_TOKEN_TYPE",
    "INVALID_TOKEN_DETAIL",
    "LEEWAY_SECONDS",
    "REQUIRED_CLAIMS",
    "AccessClaims",
    "InvalidToken",
    "KeyRing",
    "SigningKey",
    "TokenVerifier",
    "VerifiedTokenCache",
    "VerifyingKey",
    "access_token_claims",
    "checked_header",
    "decode_access_token",
    "generate_signing_key",
    "hash_secret_token",
    "new_secret_token",
    "pinned_key",
    "shared_secret_key",
    "signing_key_from_pem",
]
