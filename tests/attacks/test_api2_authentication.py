"""Forged, tampered and misused access tokens against ``GET /auth/me``, on both backends.

Every refusal must be the same 401: ``WWW-Authenticate: Bearer ... error="invalid_token"``
and one problem+json body that says nothing about why (only ``request_id`` differs), so an
attacker learns nothing from which check failed. Cases that need a valid signature are
signed with the server's REAL current key (read from the database through the app), so
the one wrong thing in them is the thing under test. ``test_controls_are_accepted`` proves
the helpers build tokens the server otherwise accepts.

API2:2023 Broken Authentication (docs/security-testing.md). Every test runs under the
``network`` fixture (``conftest.py``): apart from the PostgreSQL server under test nothing may
be contacted or looked up, so ``jku``/``x5u`` are never fetched (API7, server-side request
forgery).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from fastapi import FastAPI
from jwt.algorithms import OKPAlgorithm, get_default_algorithms

from bastion.config import Settings
from bastion.security.tokens import LEEWAY_SECONDS, REQUIRED_CLAIMS, SigningKey
from bastion.services import services_of
from tests.attacks.conftest import Network
from tests.identity.helpers import bearer, login, me, refresh, register

INVALID_TOKEN_CHALLENGE = re.compile(r'^Bearer (?:.*, )?error="invalid_token"(?:,|$)')
REFUSAL = {
    "type": "about:blank",
    "title": "Unauthorized",
    "status": 401,
    "detail": "The access token is not valid.",
}
INVALID_GRANT = {
    "error": "invalid_grant",
    "error_description": "The credentials or the grant are not valid.",
}
UNREACHABLE_JWKS = "http://127.0.0.1:1/jwks"

pytestmark = pytest.mark.usefixtures("network")


# -- token building ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Victim:
    """A signed-in user, and what an attacker (or the test) knows about the server."""

    access_token: str
    refresh_token: str
    claims: dict[str, Any]
    key: SigningKey  # the server's current signing key, private part included
    public_jwk: dict[str, Any]  # as published in the JWKS


@pytest.fixture
async def victim(app: FastAPI, client: httpx.AsyncClient) -> Victim:
    await register(client, "alice")
    tokens = await login(client, "alice")
    ring = await services_of(app).keys.ring()
    key = ring.current
    assert jwt.get_unverified_header(tokens["access_token"])["kid"] == key.kid
    jwks = (await client.get("/.well-known/jwks.json")).json()
    (public_jwk,) = [jwk for jwk in jwks["keys"] if jwk["kid"] == key.kid]
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    assert set(claims) == {*REQUIRED_CLAIMS, "amr"}  # amr: how the user signed in
    return Victim(
        access_token=tokens["access_token"],
        refresh_token=tokens["refresh_token"],
        claims=claims,
        key=key,
        public_jwk=public_jwk,
    )


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def json_segment(value: Any) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def unsigned(header: Mapping[str, Any], payload: Mapping[str, Any]) -> str:
    """A JWS with an empty signature, as ``alg: none`` tokens are written."""
    return f"{json_segment(header)}.{json_segment(payload)}."


def hs256(header: Mapping[str, Any], payload: Mapping[str, Any], secret: bytes) -> str:
    """By hand: PyJWT refuses to use a PEM public key as an HMAC secret."""
    signing_input = f"{json_segment(header)}.{json_segment(payload)}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def signed_by_hand(
    header: Mapping[str, Any], payload: Mapping[str, Any], private_key: Any, algorithm: str
) -> str:
    """Any header, signed: for what ``jwt.encode`` validates away (a non-string kid...)."""
    signing_input = f"{json_segment(header)}.{json_segment(payload)}"
    signature = get_default_algorithms()[algorithm].sign(signing_input.encode(), private_key)
    return f"{signing_input}.{b64url(signature)}"


def fresh_claims(victim: Victim, *, drop: tuple[str, ...] = (), **changes: Any) -> dict[str, Any]:
    """The victim's claims, valid now, with a new jti (never a cached token), then changed."""
    now = int(time.time())
    claims = {
        **victim.claims,
        "jti": uuid.uuid4().hex,
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        **changes,
    }
    for name in drop:
        del claims[name]
    return claims


def server_signed(victim: Victim, payload: Mapping[str, Any], **header: Any) -> str:
    """Signed with the server's real key; ``typ=None`` leaves the typ out."""
    return jwt.encode(
        dict(payload),
        victim.key.signing_key,
        algorithm=victim.key.algorithm,
        headers={"kid": victim.key.kid, "typ": "at+jwt", **header},
    )


def server_signed_by_hand(victim: Victim, payload: Mapping[str, Any], **header: Any) -> str:
    full_header = {"alg": victim.key.algorithm, "kid": victim.key.kid, "typ": "at+jwt", **header}
    return signed_by_hand(full_header, payload, victim.key.signing_key, victim.key.algorithm)


def attacker_signed(payload: Mapping[str, Any], **header: Any) -> tuple[str, dict[str, Any]]:
    """Signed with a fresh Ed25519 key of the attacker's; returns the token and its JWK."""
    key = ed25519.Ed25519PrivateKey.generate()
    public_jwk = json.loads(OKPAlgorithm.to_jwk(key.public_key()))
    token = jwt.encode(dict(payload), key, algorithm="EdDSA", headers={"typ": "at+jwt", **header})
    return token, public_jwk


def with_claims_segment(token: str, **changes: Any) -> str:
    """The same header and signature around an edited payload."""
    header, payload, signature = token.split(".")
    claims = {**json.loads(b64url_decode(payload)), **changes}
    return f"{header}.{json_segment(claims)}.{signature}"


# -- checking refusals ------------------------------------------------------------------


def refusal_problem(response: httpx.Response) -> str | None:
    """What is wrong with this refusal, or None when it is the one expected 401."""
    if response.status_code != 401:
        return f"status {response.status_code}"
    challenge = response.headers.get("www-authenticate", "")
    if not INVALID_TOKEN_CHALLENGE.match(challenge):
        return f"challenge {challenge!r}"
    if response.headers.get("content-type") != "application/problem+json":
        return f"content-type {response.headers.get('content-type')!r}"
    body = response.json()
    if not isinstance(body.pop("request_id", None), str):
        return "no request_id"
    if body != REFUSAL:
        return f"body {body}"
    return None


async def assert_refused(client: httpx.AsyncClient, tokens: Mapping[str, str]) -> None:
    failures: dict[str, str] = {}
    for name, token in tokens.items():
        problem = refusal_problem(await me(client, token))
        if problem is not None:
            failures[name] = problem
    assert failures == {}, f"accepted or answered badly: {failures}"


# -- controls: the helpers build tokens the server accepts ------------------------------


async def test_controls_are_accepted(client: httpx.AsyncClient, victim: Victim) -> None:
    now = int(time.time())
    accepted = {
        "the real token": victim.access_token,
        "re-signed with the real key": server_signed(victim, fresh_claims(victim)),
        "signed by hand with the real key": server_signed_by_hand(victim, fresh_claims(victim)),
        "typ application/at+jwt": server_signed(
            victim, fresh_claims(victim), typ="application/at+jwt"
        ),
        "typ AT+JWT (media types are case-insensitive)": server_signed(
            victim, fresh_claims(victim), typ="AT+JWT"
        ),
        "expired within the leeway": server_signed(
            victim, fresh_claims(victim, exp=now - LEEWAY_SECONDS // 2)
        ),
    }
    statuses = {name: (await me(client, token)).status_code for name, token in accepted.items()}
    assert statuses == dict.fromkeys(accepted, 200)


# -- alg: none, key confusion, foreign keys ---------------------------------------------


async def test_alg_none_in_any_spelling_is_refused(
    client: httpx.AsyncClient, victim: Victim
) -> None:
    tokens: dict[str, str] = {}
    for spelling in ("none", "None", "NONE", "nOnE"):
        header = {"alg": spelling, "kid": victim.key.kid, "typ": "at+jwt"}
        tokens[f"alg {spelling}"] = unsigned(header, fresh_claims(victim))
        # the real token's own claims and signature, under an alg:none header
        _, payload, signature = victim.access_token.split(".")
        tokens[f"alg {spelling}, real payload"] = f"{json_segment(header)}.{payload}."
        tokens[f"alg {spelling}, real signature"] = f"{json_segment(header)}.{payload}.{signature}"
    tokens["alg missing"] = unsigned({"kid": victim.key.kid, "typ": "at+jwt"}, fresh_claims(victim))
    tokens["alg empty"] = unsigned(
        {"alg": "", "kid": victim.key.kid, "typ": "at+jwt"}, fresh_claims(victim)
    )
    await assert_refused(client, tokens)


async def test_hs256_keyed_with_the_published_public_key_is_refused(
    client: httpx.AsyncClient, victim: Victim
) -> None:
    """The classic confusion: the verifier must not take HS256 from a token for its key."""
    assert victim.public_jwk["kty"] == "OKP"  # the default algorithm, EdDSA
    public_key = jwt.PyJWK(victim.public_jwk).key
    assert isinstance(public_key, ed25519.Ed25519PublicKey)
    pem = public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    secrets = {
        "PEM": pem,
        "PEM without the final newline": pem.rstrip(b"\n"),
        "DER": public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        "raw": public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw),
        "OpenSSH": public_key.public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        ),
        "JWK x member": victim.public_jwk["x"].encode(),
        "JWK JSON": json.dumps(victim.public_jwk).encode(),
    }
    header = {"alg": "HS256", "kid": victim.key.kid, "typ": "at+jwt"}
    tokens = {
        f"HS256 with the {form} public key": hs256(header, fresh_claims(victim), secret)
        for form, secret in secrets.items()
    }
    for spelling in ("hs256", "HS384", "HS512"):
        tokens[f"alg {spelling} with the PEM public key"] = hs256(
            {**header, "alg": spelling}, fresh_claims(victim), pem
        )
    await assert_refused(client, tokens)


async def test_tokens_signed_by_an_attackers_key_are_refused(
    client: httpx.AsyncClient, victim: Victim
) -> None:
    # The real token is verified and cached first: a forgery that shares its jti (and
    # header, and claims) must not be answered from the cache.
    assert (await me(client, victim.access_token)).status_code == 200
    attacker = ed25519.Ed25519PrivateKey.generate()
    attacker_ec = ec.generate_private_key(ec.SECP256R1())
    claims = fresh_claims(victim)
    header = {"alg": "EdDSA", "typ": "at+jwt"}
    tokens = {
        "the server's kid": attacker_signed(claims, kid=victim.key.kid)[0],
        "an unknown kid": attacker_signed(claims, kid="attacker-key-1")[0],
        "no kid": attacker_signed(claims)[0],
        "an empty kid": attacker_signed(claims, kid="")[0],
        "a path as kid": attacker_signed(claims, kid="../../../../dev/null")[0],
        "SQL as kid": attacker_signed(claims, kid="' OR '1'='1")[0],
        "a number as kid": signed_by_hand({**header, "kid": 1}, claims, attacker, "EdDSA"),
        "a list as kid": signed_by_hand(
            {**header, "kid": [victim.key.kid]}, claims, attacker, "EdDSA"
        ),
        "an object as kid": signed_by_hand(
            {**header, "kid": {"kid": victim.key.kid}}, claims, attacker, "EdDSA"
        ),
        "ES256 with the server's kid": jwt.encode(
            claims, attacker_ec, algorithm="ES256", headers={"kid": victim.key.kid, "typ": "at+jwt"}
        ),
        "the server's own claims and header, attacker's signature": signed_by_hand(
            jwt.get_unverified_header(victim.access_token), victim.claims, attacker, "EdDSA"
        ),
    }
    await assert_refused(client, tokens)


# -- header tricks ----------------------------------------------------------------------


async def test_headers_that_carry_keys_or_urls_are_refused_without_fetching(
    client: httpx.AsyncClient, victim: Victim, network: Network
) -> None:
    claims = fresh_claims(victim)
    attacker = ed25519.Ed25519PrivateKey.generate()
    attacker_jwk = json.loads(OKPAlgorithm.to_jwk(attacker.public_key()))
    tokens: dict[str, str] = {}
    for name, kid in (("the server's kid", victim.key.kid), ("its own kid", "attacker-1")):
        # the embedded key is the one that really signed: only trusting it would verify
        tokens[f"jwk header, {name}"] = jwt.encode(
            claims,
            attacker,
            algorithm="EdDSA",
            headers={"kid": kid, "typ": "at+jwt", "jwk": {**attacker_jwk, "kid": kid}},
        )
    tokens["jwk header, no kid"] = jwt.encode(
        claims, attacker, algorithm="EdDSA", headers={"typ": "at+jwt", "jwk": attacker_jwk}
    )
    tokens["jwk header of the server's own public key, attacker-signed"] = jwt.encode(
        claims,
        attacker,
        algorithm="EdDSA",
        headers={"kid": victim.key.kid, "typ": "at+jwt", "jwk": victim.public_jwk},
    )
    for member in ("jku", "x5u"):
        tokens[f"{member} with the attacker's key"] = attacker_signed(
            claims, kid=victim.key.kid, **{member: UNREACHABLE_JWKS}
        )[0]
        # signed with the real key: the URL alone must be enough to refuse
        tokens[f"{member} with the real key"] = server_signed(
            victim, fresh_claims(victim), **{member: UNREACHABLE_JWKS}
        )
    tokens["x5c with the real key"] = server_signed(
        victim, fresh_claims(victim), x5c=[b64url(b"not a certificate")]
    )
    tokens["crit with the real key"] = server_signed(victim, fresh_claims(victim), crit=["exp"])
    tokens["crit naming an unknown extension"] = server_signed(
        victim, fresh_claims(victim), crit=["urn:example:ext"], **{"urn:example:ext": True}
    )
    tokens["b64 false (RFC 7797) with the real key"] = server_signed_by_hand(
        victim, fresh_claims(victim), b64=False
    )
    started = time.monotonic()
    await assert_refused(client, tokens)
    assert time.monotonic() - started < 2.0
    assert not [
        address for address in network.connects if isinstance(address, tuple) and address[1] == 1
    ], "the server tried to fetch a key URL"
    assert network.outbound() == []


async def test_a_typ_other_than_at_jwt_is_refused(
    client: httpx.AsyncClient, victim: Victim
) -> None:
    """Re-signed with the real key: only the typ is wrong (an ID token, a refresh JWT...)."""
    typs: dict[str, Any] = {
        "JWT": "JWT",
        "jwt": "jwt",
        "missing": None,
        "empty": "",
        "refresh+jwt": "refresh+jwt",
        "application/jwt": "application/jwt",
        "at+jwt with a suffix": "at+jwt2",
        "dpop+jwt": "dpop+jwt",
    }
    tokens = {
        f"typ {name}": server_signed(victim, fresh_claims(victim), typ=typ)
        for name, typ in typs.items()
    }
    tokens["typ as a list"] = server_signed_by_hand(victim, fresh_claims(victim), typ=["at+jwt"])
    tokens["typ as a number"] = server_signed_by_hand(victim, fresh_claims(victim), typ=1)
    await assert_refused(client, tokens)


# -- tampering and garbage --------------------------------------------------------------


async def test_tampered_and_malformed_tokens_are_refused(
    client: httpx.AsyncClient, victim: Victim
) -> None:
    token = victim.access_token
    header, payload, signature = token.split(".")
    middle = len(signature) // 2
    flipped = "A" if signature[middle] != "A" else "B"
    flipped_signature = signature[:middle] + flipped + signature[middle + 1 :]
    other_header = json_segment({**jwt.get_unverified_header(token), "x": 1})
    other_login = await login(client, "alice")
    other_signature = other_login["access_token"].split(".")[2]
    tokens = {
        "more scope in the payload": with_claims_segment(
            token, scope="notes:read notes:write users:read users:write audit:read"
        ),
        "another subject in the payload": with_claims_segment(token, sub=str(uuid.uuid4())),
        "a later exp in the payload": with_claims_segment(token, exp=victim.claims["exp"] + 3600),
        "another header, same signature": f"{other_header}.{payload}.{signature}",
        "a flipped signature character": f"{header}.{payload}.{flipped_signature}",
        "another token's signature": f"{header}.{payload}.{other_signature}",
        "no signature": f"{header}.{payload}.",
        "a truncated signature": token[:-4],
        "the last character dropped": token[:-1],
        "half a token": token[: len(token) // 2],
        "header and payload only": f"{header}.{payload}",
        "an extra segment": f"{token}.{signature}",
        "a trailing dot": f"{token}.",
        "five segments (JWE-shaped)": f"{token}.AAAA.BBBB",
        "not a JWT": "not-a-jwt",
        "punctuation": "!!!.@@@.###",
        "three short segments": "a.b.c",
        "dots only": "....",
        "eyJ prefixes": "eyJ.eyJ.eyJ",
        "a JSON array header": f"{json_segment([1])}.{payload}.{signature}",
        "a null header": f"{json_segment(None)}.{payload}.{signature}",
        "a JSON array payload": f"{header}.{json_segment([victim.claims])}.{signature}",
        "header is not JSON": f"{b64url(b'{not json')}.{payload}.{signature}",
    }
    await assert_refused(client, tokens)
    # Bytes that are not even ASCII in the header value
    response = await client.get(
        "/auth/me", headers={b"Authorization": b"Bearer \xff\xfe.\x80\x81.\xc3\x28"}
    )
    assert refusal_problem(response) is None


async def test_a_huge_token_is_refused_without_a_server_error(
    client: httpx.AsyncClient, victim: Victim
) -> None:
    size = 100 * 1024
    huge = {
        "100 KB of letters": "a" * size,
        "100 KB of dots": "." * size,
        "a 100 KB claim, the server's kid, attacker-signed": attacker_signed(
            fresh_claims(victim, padding="x" * size), kid=victim.key.kid
        )[0],
        "a 100 KB header": unsigned(
            {"alg": "EdDSA", "kid": "k" * size, "typ": "at+jwt"}, fresh_claims(victim)
        ),
    }
    for name, token in huge.items():
        assert len(token) >= size, name
        response = await me(client, token)
        assert 400 <= response.status_code < 500, (name, response.status_code)
        if response.status_code == 401:
            assert refusal_problem(response) is None, name


# -- claims, signed with the real key ---------------------------------------------------


async def test_wrong_claims_are_refused_even_with_a_real_signature(
    client: httpx.AsyncClient, victim: Victim, settings: Settings
) -> None:
    now = int(time.time())
    late = now + LEEWAY_SECONDS + 60
    changes: dict[str, dict[str, Any]] = {
        "wrong iss": {"iss": "https://evil.example.test"},
        "iss with a trailing slash": {"iss": settings.issuer + "/"},
        "iss as a list": {"iss": [settings.issuer]},
        "wrong aud": {"aud": "another-service"},
        # strict_aud: one audience string, exactly; a list is refused even when it holds
        # ours (a token minted for several services must not be replayable here).
        "aud list with ours and another": {"aud": [settings.audience, "another-service"]},
        "aud list with ours only": {"aud": [settings.audience]},
        "aud as a number": {"aud": 1},
        "expired beyond the leeway": {
            "iat": now - 900,
            "nbf": now - 900,
            "exp": now - LEEWAY_SECONDS - 5,
        },
        "nbf in the future beyond the leeway": {"nbf": late},
        "iat in the future beyond the leeway": {"iat": late},
        "sub as a number": {"sub": 12345},
        "sub as null": {"sub": None},
        "sid as a number": {"sid": 12345},
        "jti as a number": {"jti": 12345},
        "scope as a list": {"scope": ["notes:read", "notes:write"]},
        "scope as null": {"scope": None},
        "exp as text": {"exp": "tomorrow"},
        "iat as text": {"iat": "x"},
        "iat as an object": {"iat": {"t": now}},
    }
    tokens = {
        name: server_signed_by_hand(victim, fresh_claims(victim, **change))
        for name, change in changes.items()
    }
    for claim in REQUIRED_CLAIMS:
        tokens[f"{claim} missing"] = server_signed(victim, fresh_claims(victim, drop=(claim,)))
    await assert_refused(client, tokens)


async def test_a_real_signature_over_a_malformed_subject_or_session_is_not_a_500(
    client: httpx.AsyncClient, victim: Victim
) -> None:
    """Defence in depth: claims the server never issues must still fail closed (no 500).

    Only someone holding the signing key (or, with HS256, the shared secret) can build
    these, so this is robustness, not an authentication bypass.
    """
    answers = {
        "GET /auth/me, sub an unknown UUID": await me(
            client, server_signed(victim, fresh_claims(victim, sub=str(uuid.uuid4())))
        ),
        "GET /auth/me, sub not a UUID": await me(
            client, server_signed(victim, fresh_claims(victim, sub="admin"))
        ),
        "POST /auth/logout, sid not a UUID": await client.post(
            "/auth/logout",
            headers=bearer(server_signed(victim, fresh_claims(victim, sid="not-a-uuid"))),
        ),
    }
    allowed = {
        "GET /auth/me, sub an unknown UUID": {401},
        "GET /auth/me, sub not a UUID": {401},
        # An unknown session is a no-op logout today (204); a refusal would do as well.
        "POST /auth/logout, sid not a UUID": {204, 401},
    }
    wrong = {
        name: response.status_code
        for name, response in answers.items()
        if response.status_code not in allowed[name]
    }
    assert wrong == {}


# -- tokens used in the wrong place -----------------------------------------------------


async def test_a_refresh_token_is_not_a_bearer_token(
    client: httpx.AsyncClient, victim: Victim
) -> None:
    await assert_refused(client, {"the refresh token": victim.refresh_token})
    # and the refresh token still works where it belongs
    assert (await refresh(client, victim.refresh_token)).status_code == 200


async def test_an_access_token_is_not_a_refresh_token(
    client: httpx.AsyncClient, victim: Victim
) -> None:
    response = await refresh(client, victim.access_token)
    assert response.status_code == 400
    assert response.json() == INVALID_GRANT
    assert (await me(client, victim.access_token)).status_code == 200


# -- the Authorization header -----------------------------------------------------------


async def test_the_bearer_scheme_is_case_insensitive_and_required(
    client: httpx.AsyncClient, victim: Victim
) -> None:
    token = victim.access_token
    # RFC 6750 §2.1 / RFC 9110 §11.1: the scheme is case-insensitive; 1*SP before the token.
    for value in (f"bearer {token}", f"BEARER {token}", f"Bearer  {token}"):
        response = await client.get("/auth/me", headers={"Authorization": value})
        assert response.status_code == 200, value

    for value in (
        token,
        f"Basic {base64.b64encode(b'alice:correct horse battery staple').decode()}",
        f"Basic {token}",
        f"Token {token}",
        f"Bearer{token}",
        f"Bearer\t{token}",
        "Bearer",
        "Bearer ",
        f"JWT {token}",
    ):
        response = await client.get("/auth/me", headers={"Authorization": value})
        assert response.status_code == 401, value
        assert INVALID_TOKEN_CHALLENGE.match(response.headers["www-authenticate"]), value
        assert response.headers["content-type"] == "application/problem+json"
        assert token not in response.text


async def test_a_token_in_the_query_string_does_not_authenticate(
    client: httpx.AsyncClient, victim: Victim
) -> None:
    response = await client.get("/auth/me", params={"access_token": victim.access_token})
    assert response.status_code == 401
    # No credentials were presented where they count: RFC 6750 §3.1, no error code.
    assert response.headers["www-authenticate"] == 'Bearer realm="bastion"'
    assert victim.access_token not in response.text


# -- revocation beats the cache ---------------------------------------------------------


@pytest.mark.parametrize("how", ["logout", "revoke"])
async def test_a_revoked_token_stays_refused_although_it_is_cached(
    app: FastAPI, client: httpx.AsyncClient, victim: Victim, how: str
) -> None:
    token = victim.access_token
    assert (await me(client, token)).status_code == 200
    cache = services_of(app).authenticator.verifier.cache
    assert cache.get(token, now=time.time()) is not None
    if how == "logout":
        response = await client.post("/auth/logout", headers=bearer(token))
        assert response.status_code == 204
    else:
        response = await client.post("/auth/revoke", data={"token": token})
        assert response.status_code == 200
    # PyJWT tolerates base64 padding on a segment: the padded string is another cache key
    # for the same signed token, and it must be refused just the same.
    variants = {f"after {how}": token, f"after {how}, signature padded": f"{token}=="}
    for _ in range(2):
        await assert_refused(client, variants)
    assert cache.get(token, now=time.time()) is not None  # refused despite the cache
