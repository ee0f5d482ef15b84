"""Signing keys: one algorithm and one ``kid`` each, generated, loaded from PEM, or a shared secret.

A key knows what it may publish (its public JWK, never a shared secret) and until when: a
retired key stays in the JWKS until every token it signed has expired.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from bastion.security.access_claims import LEEWAY_SECONDS

RSA_KEY_BITS = 3072


_JWK_CONVERTERS: dict[str, Callable[[Any], Mapping[str, Any]]] = {
    "EdDSA": lambda key: OKPAlgorithm.to_jwk(key, as_dict=True),
    "ES256": lambda key: ECAlgorithm.to_jwk(key, as_dict=True),
    "RS256": lambda key: RSAAlgorithm.to_jwk(key, as_dict=True),
}


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
