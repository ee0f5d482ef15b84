"""The key ring, the JWKS and the verified-token cache, without the app."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any
from uuid import uuid4

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from bastion.security import token_cache
from bastion.security.tokens import (
    ACCESS_TOKEN_TYPE,
    LEEWAY_SECONDS,
    AccessClaims,
    InvalidToken,
    KeyRing,
    SigningKey,
    TokenVerifier,
    VerifiedTokenCache,
    access_token_claims,
    generate_signing_key,
    shared_secret_key,
)

ISSUER = "https://id.example.test"
AUDIENCE = "bastion"
LIFETIME = 900
T0 = datetime(2026, 1, 1, tzinfo=UTC)
ASYMMETRIC = ("EdDSA", "ES256", "RS256")
PRIVATE_JWK_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}
EXPECTED_KTY = {"EdDSA": "OKP", "ES256": "EC", "RS256": "RSA"}


@pytest.fixture(scope="module")
def asymmetric_keys() -> dict[str, SigningKey]:
    """One key per algorithm, generated once (RSA-3072 generation is slow)."""
    return {algorithm: generate_signing_key(algorithm, now=T0) for algorithm in ASYMMETRIC}


def key_for(algorithm: str, asymmetric_keys: dict[str, SigningKey]) -> SigningKey:
    if algorithm == "HS256":
        return shared_secret_key(b"x" * 32)
    return asymmetric_keys[algorithm]


def claims(*, now: int | None = None, lifetime: int = LIFETIME, **changes: Any) -> dict[str, Any]:
    values = access_token_claims(
        issuer=ISSUER,
        audience=AUDIENCE,
        subject="3f1c1f7e-6a57-4a8e-9b1e-1b2c3d4e5f60",
        session_id="0a9b8c7d-6e5f-4a3b-8c1d-2e3f4a5b6c7d",
        scopes={"notes:write", "notes:read"},
        lifetime=lifetime,
        now=int(time.time()) if now is None else now,
    )
    values.update(changes)
    return values


# -- signing and verifying --------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["EdDSA", "ES256", "RS256", "HS256"])
def test_sign_verify_round_trip(algorithm: str, asymmetric_keys: dict[str, SigningKey]) -> None:
    key = key_for(algorithm, asymmetric_keys)
    ring = KeyRing([key])
    payload = claims()
    token = ring.sign(payload)

    header = jwt.get_unverified_header(token)
    assert header == {"alg": algorithm, "kid": key.kid, "typ": ACCESS_TOKEN_TYPE}
    verified = ring.verify(token, issuer=ISSUER, audience=AUDIENCE)
    assert verified == AccessClaims(
        subject=payload["sub"],
        session_id=payload["sid"],
        token_id=payload["jti"],
        scopes=frozenset({"notes:read", "notes:write"}),
        issued_at=payload["iat"],
        expires_at=payload["exp"],
        methods=frozenset({"pwd"}),
    )
    with pytest.raises(InvalidToken):
        ring.verify(token, issuer=ISSUER, audience="someone-else")
    with pytest.raises(InvalidToken):
        ring.verify(token, issuer="https://evil.example.test", audience=AUDIENCE)


@pytest.mark.parametrize("algorithm", ASYMMETRIC)
def test_a_third_party_verifies_with_the_published_jwk_alone(
    algorithm: str, asymmetric_keys: dict[str, SigningKey]
) -> None:
    key = asymmetric_keys[algorithm]
    ring = KeyRing([key])
    token = ring.sign(claims())
    (published,) = ring.jwks(now=T0, max_token_lifetime=LIFETIME)["keys"]
    decoded = jwt.decode(
        token,
        jwt.PyJWK(published).key,
        algorithms=[algorithm],
        audience=AUDIENCE,
        issuer=ISSUER,
    )
    assert decoded["sub"] == "3f1c1f7e-6a57-4a8e-9b1e-1b2c3d4e5f60"


def test_a_shared_secret_is_never_published_and_has_no_pem() -> None:
    key = shared_secret_key(b"x" * 32)
    assert key.public_jwk() is None
    assert KeyRing([key]).jwks(now=T0, max_token_lifetime=LIFETIME) == {"keys": []}
    with pytest.raises(ValueError, match="no PEM"):
        key.private_key_pem()
    assert key.kid.startswith("hs256-")
    assert "x" * 8 not in key.kid


def test_the_shared_secret_kid_names_the_secret() -> None:
    assert shared_secret_key(b"x" * 32).kid == shared_secret_key(b"x" * 32).kid
    assert shared_secret_key(b"x" * 32).kid != shared_secret_key(b"y" * 32).kid


# -- the JWKS ---------------------------------------------------------------------------


def test_jwks_holds_public_parts_only_one_entry_per_kid(
    asymmetric_keys: dict[str, SigningKey],
) -> None:
    ring = KeyRing([*asymmetric_keys.values(), shared_secret_key(b"x" * 32)])
    document = ring.jwks(now=T0, max_token_lifetime=LIFETIME)
    assert set(document) == {"keys"}
    published = {jwk["kid"]: jwk for jwk in document["keys"]}
    assert len(published) == len(document["keys"]) == len(ASYMMETRIC)
    for algorithm, key in asymmetric_keys.items():
        jwk = published[key.kid]
        assert not PRIVATE_JWK_MEMBERS & jwk.keys(), jwk.keys()
        assert jwk["alg"] == algorithm
        assert jwk["use"] == "sig"
        assert jwk["kty"] == EXPECTED_KTY[algorithm]
    assert published[asymmetric_keys["EdDSA"].kid]["crv"] == "Ed25519"
    assert published[asymmetric_keys["ES256"].kid]["crv"] == "P-256"


def test_a_retired_key_stays_published_until_its_tokens_have_expired() -> None:
    retired_at = T0 + timedelta(hours=1)
    old = replace(generate_signing_key("EdDSA", now=T0), retired_at=retired_at)
    new = generate_signing_key("EdDSA", now=retired_at)
    ring = KeyRing([old, new])
    until = retired_at + timedelta(seconds=LIFETIME + LEEWAY_SECONDS)
    assert old.published_until(LIFETIME) == until
    assert new.published_until(LIFETIME) is None

    def kids(now: datetime) -> list[str]:
        return [jwk["kid"] for jwk in ring.jwks(now=now, max_token_lifetime=LIFETIME)["keys"]]

    assert kids(retired_at) == [new.kid, old.kid]  # newest first
    assert kids(until - timedelta(seconds=1)) == [new.kid, old.kid]
    assert kids(until) == [new.kid]
    assert kids(until + timedelta(days=1)) == [new.kid]
    # Published or not, the retired key still verifies what it signed while it could.
    token = KeyRing([replace(old, retired_at=None)]).sign(claims())
    assert ring.verify(token, issuer=ISSUER, audience=AUDIENCE).subject


def test_the_newest_active_key_signs() -> None:
    oldest = generate_signing_key("EdDSA", now=T0)
    newest_active = generate_signing_key("EdDSA", now=T0 + timedelta(days=1))
    retired_newer = replace(
        generate_signing_key("EdDSA", now=T0 + timedelta(days=2)),
        retired_at=T0 + timedelta(days=3),
    )
    ring = KeyRing([oldest, retired_newer, newest_active])
    assert ring.current == newest_active
    assert jwt.get_unverified_header(ring.sign(claims()))["kid"] == newest_active.kid
    # Tokens of the other active key still verify.
    older_token = KeyRing([oldest]).sign(claims())
    assert ring.verify(older_token, issuer=ISSUER, audience=AUDIENCE).subject


def test_a_ring_without_an_active_key_is_refused() -> None:
    retired = replace(generate_signing_key("EdDSA", now=T0), retired_at=T0)
    with pytest.raises(ValueError, match="active"):
        KeyRing([retired])
    with pytest.raises(ValueError, match="active"):
        KeyRing([])


# -- the verified-token cache -----------------------------------------------------------


def access_claims(token_id: str, *, expires_at: int) -> AccessClaims:
    return AccessClaims(
        subject="user",
        session_id="session",
        token_id=token_id,
        scopes=frozenset(),
        issued_at=expires_at - LIFETIME,
        expires_at=expires_at,
    )


def test_the_cache_is_bounded_and_evicts_the_least_recently_used() -> None:
    cache = VerifiedTokenCache(max_entries=3)
    expires_at = int(time.time()) + LIFETIME
    now = float(expires_at - LIFETIME)
    for index in range(3):
        cache.put(f"token-{index}", access_claims(f"jti-{index}", expires_at=expires_at))
    assert cache.get("token-0", now=now) is not None  # token-1 is now the oldest
    for index in range(3, 6):
        cache.put(f"token-{index}", access_claims(f"jti-{index}", expires_at=expires_at))
        assert len(cache) == 3
    assert cache.get("token-1", now=now) is None
    assert cache.get("token-2", now=now) is None
    assert cache.get("token-0", now=now) is None
    assert [cache.get(f"token-{i}", now=now) is not None for i in range(3, 6)] == [True] * 3


def test_a_large_number_of_tokens_never_grows_the_cache_past_its_bound() -> None:
    cache = VerifiedTokenCache(max_entries=50)
    for index in range(1_000):
        cache.put(f"token-{index}", access_claims(f"jti-{index}", expires_at=2**40))
    assert len(cache) == 50


def test_a_cache_entry_ends_when_its_token_does() -> None:
    """Served while the verifier itself would accept the token (exp + leeway), not after."""
    cache = VerifiedTokenCache()
    expires_at = 2_000_000_000
    cache.put("token", access_claims("jti", expires_at=expires_at))
    assert cache.get("token", now=expires_at - 1) is not None
    assert cache.get("token", now=expires_at + LEEWAY_SECONDS - 0.5) is not None
    assert cache.get("token", now=expires_at + LEEWAY_SECONDS) is None
    assert len(cache) == 0  # the expired entry is dropped, not kept around
    assert cache.get("token", now=expires_at - 1) is None


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[SimpleNamespace]:
    """The verifier's clock, under the test's control."""
    fake = SimpleNamespace(now=time.time())
    monkeypatch.setattr(token_cache, "time", SimpleNamespace(time=lambda: fake.now))
    yield fake


def test_a_cached_token_is_served_without_verifying_again_until_it_expires(
    clock: SimpleNamespace,
) -> None:
    key = generate_signing_key("EdDSA", now=T0)
    payload = claims(now=int(clock.now))
    token = KeyRing([key]).sign(payload)
    verifier = TokenVerifier(issuer=ISSUER, audience=AUDIENCE, cache=VerifiedTokenCache())
    first = verifier.verify(token, KeyRing([key]))

    # The key is gone from the ring: only the cache can still answer.
    other_ring = KeyRing([generate_signing_key("EdDSA", now=T0)])
    with pytest.raises(InvalidToken):
        other_ring.verify(token, issuer=ISSUER, audience=AUDIENCE)
    assert verifier.verify(token, other_ring) is first
    clock.now = payload["exp"] + LEEWAY_SECONDS - 1
    assert verifier.verify(token, other_ring) is first

    clock.now = payload["exp"] + LEEWAY_SECONDS
    with pytest.raises(InvalidToken):
        verifier.verify(token, other_ring)
    assert len(verifier.cache) == 0


def forged_like(token: str, attacker: ed25519.Ed25519PrivateKey, **changes: Any) -> str:
    """The same header and claims (same jti), signed by someone else's key."""
    header = jwt.get_unverified_header(token)
    payload = {**jwt.decode(token, options={"verify_signature": False}), **changes}
    return jwt.encode(payload, attacker, algorithm="EdDSA", headers=header)


def claims_segment(token: str) -> dict[str, Any]:
    segment = token.split(".")[1]
    padded = segment + "=" * (-len(segment) % 4)
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(padded))
    return decoded


def test_another_token_with_a_cached_jti_is_not_served_from_the_cache() -> None:
    key = generate_signing_key("EdDSA", now=T0)
    ring = KeyRing([key])
    token = ring.sign(claims())
    verifier = TokenVerifier(issuer=ISSUER, audience=AUDIENCE, cache=VerifiedTokenCache())
    verified = verifier.verify(token, ring)
    assert verifier.verify(token, ring) is verified  # cached

    attacker = ed25519.Ed25519PrivateKey.generate()
    jti = claims_segment(token)["jti"]
    head, body, signature = token.split(".")
    lookalikes = {
        "same claims, attacker's signature": forged_like(token, attacker),
        "same jti, more scope": forged_like(token, attacker, scope="users:write audit:read"),
        "same jti, another subject": forged_like(token, attacker, sub="someone-else"),
        "same header and claims, no signature": f"{head}.{body}.",
        "same header and claims, reversed signature": f"{head}.{body}.{signature[::-1]}",
    }
    for name, forged in lookalikes.items():
        assert forged != token
        assert claims_segment(forged)["jti"] == jti, name
        with pytest.raises(InvalidToken):
            verifier.verify(forged, ring)
    assert len(verifier.cache) == 1  # refused tokens are not cached either


def test_a_leaked_retired_key_cannot_mint_lasting_or_new_tokens() -> None:
    """After rotation the old key only verifies what it signed before retiring, for at
    most one token lifetime."""
    now = int(time.time())
    key = generate_signing_key("EdDSA", now=datetime.fromtimestamp(now - 100, tz=UTC))
    retired = replace(key, retired_at=datetime.fromtimestamp(now - 60, tz=UTC))
    active = generate_signing_key("EdDSA", now=datetime.fromtimestamp(now - 60, tz=UTC))
    ring = KeyRing([retired, active], max_token_lifetime=900)
    leaked = KeyRing([replace(retired, retired_at=None)])

    def minted(issued_at: int, lifetime: int) -> str:
        return leaked.sign(
            access_token_claims(
                issuer=ISSUER, audience=AUDIENCE, subject=str(uuid4()), session_id=str(uuid4()),
                scopes=["notes:read"], lifetime=lifetime, now=issued_at,
            )
        )

    ring.verify(minted(now - 90, 900), issuer=ISSUER, audience=AUDIENCE)  # signed before
    with pytest.raises(InvalidToken):
        ring.verify(minted(now, 900), issuer=ISSUER, audience=AUDIENCE)  # after retirement
    with pytest.raises(InvalidToken):
        ring.verify(minted(now - 90, 86_400), issuer=ISSUER, audience=AUDIENCE)  # too long
