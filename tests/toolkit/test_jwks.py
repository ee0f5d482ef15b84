"""``JwksAuthenticator`` against a real JWKS served over HTTP, and a real Redis.

The JWKS comes from a small HTTP server on loopback (``JwksServer``) that counts its hits and
can be made slow, broken, oversized or unreachable; tokens are signed with bastion's own
signing keys, or forged by hand. Revocations are written to a real Redis by bastion's own
``RedisRevocationStore``, as the issuing service writes them.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from structlog.testing import capture_logs

from bastion.security.principal import Principal
from bastion.security.tokens import (
    LEEWAY_SECONDS,
    InvalidToken,
    SigningKey,
    access_token_claims,
    generate_signing_key,
)
from bastion.storage import StorageUnavailable
from bastion.storage.redis_client import redis_client_from_url
from bastion.storage.redis_revocations import RedisRevocationStore
from bastion.toolkit._jwks import (
    KEY_SET_MAX_AGE,
    MAX_JWKS_BYTES,
    RETRY_AFTER_FAILURE,
    JwksAuthenticator,
)
from tests.servers.postgres import free_port
from tests.servers.redis import RedisServer

ISSUER = "https://auth.example.test"
AUDIENCE = "reports"
USER_ID = "3f1c1f7e-6a57-4a8e-9b1e-1b2c3d4e5f60"
INTERVAL = 1.0  # the shortest refetch interval allowed, so the throttle tests wait little
T0 = time.time()


# -- a JWKS over real HTTP -----------------------------------------------------------------


class JwksServer:
    """Serves ``body`` at ``/.well-known/jwks.json`` on loopback; counts the GETs."""

    def __init__(self) -> None:
        self.body = b'{"keys": []}'
        self.status = 200
        self.delay = 0.0
        self.declare_length = True
        self.hits: dict[str, int] = {}
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with owner._lock:
                    owner.hits[self.path] = owner.hits.get(self.path, 0) + 1
                if owner.delay:
                    time.sleep(owner.delay)
                self.send_response(owner.status)
                self.send_header("Content-Type", "application/json")
                if owner.declare_length:
                    self.send_header("Content-Length", str(len(owner.body)))
                self.end_headers()
                self.wfile.write(owner.body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/.well-known/jwks.json"

    @property
    def fetches(self) -> int:
        return self.hits.get("/.well-known/jwks.json", 0)

    def publish(self, *keys: SigningKey, extra: list[dict[str, Any]] | None = None) -> None:
        jwks = [key.public_jwk() for key in keys]
        self.body = json.dumps({"keys": [*jwks, *(extra or [])]}).encode()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def keys() -> dict[str, SigningKey]:
    """bastion's own keys, one per algorithm (RSA-3072 is slow to generate: once)."""
    now = datetime.now(UTC)
    return {name: generate_signing_key(name, now=now) for name in ("EdDSA", "ES256", "RS256")}


@pytest.fixture
def jwks(keys: dict[str, SigningKey]) -> Iterator[JwksServer]:
    server = JwksServer()
    server.publish(*keys.values())
    yield server
    server.close()


Make = Callable[..., Awaitable[JwksAuthenticator]]


@pytest.fixture
async def make(jwks: JwksServer) -> AsyncIterator[Make]:
    """Builds started authenticators (for ``jwks`` unless told otherwise); closes them."""
    made: list[JwksAuthenticator] = []

    async def build(*, start: bool = True, **options: Any) -> JwksAuthenticator:
        options.setdefault("jwks_url", jwks.url)
        options.setdefault("issuer", ISSUER)
        options.setdefault("audience", AUDIENCE)
        options.setdefault("refetch_interval", INTERVAL)
        authenticator = JwksAuthenticator(**options)
        made.append(authenticator)
        if start:
            await authenticator.start()
        return authenticator

    yield build
    for authenticator in made:
        await authenticator.aclose()


# -- tokens --------------------------------------------------------------------------------


def claims(**changes: Any) -> dict[str, Any]:
    values = access_token_claims(
        issuer=ISSUER,
        audience=AUDIENCE,
        subject=USER_ID,
        session_id=str(uuid.uuid4()),
        scopes={"notes:read", "notes:write"},
        lifetime=900,
        now=int(time.time()),
    )
    values.update(changes)
    return {name: value for name, value in values.items() if value is not None}


def signed(key: SigningKey, *, header: dict[str, Any] | None = None, **changes: Any) -> str:
    """A token as bastion signs it (``typ: at+jwt``, the key's ``kid``), with changes."""
    headers = {"kid": key.kid, "typ": "at+jwt", **(header or {})}
    return jwt.encode(claims(**changes), key.signing_key, algorithm=key.algorithm,
                      headers=headers)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_made(
    header: dict[str, Any], payload: dict[str, Any], sign: Callable[[bytes], bytes]
) -> str:
    """A compact JWS built byte by byte, for what no library will sign."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    return f"{signing_input}.{b64(sign(signing_input.encode()))}"


def hmac_with(secret: bytes) -> Callable[[bytes], bytes]:
    return lambda data: hmac.new(secret, data, hashlib.sha256).digest()


async def refused(authenticator: JwksAuthenticator, token: str) -> str:
    """The reason the token is refused (it must be)."""
    with pytest.raises(InvalidToken) as refusal:
        await authenticator.authenticate(token)
    assert token not in str(refusal.value)
    return refusal.value.reason


# -- what is accepted ----------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["EdDSA", "ES256", "RS256"])
async def test_a_valid_token_of_each_algorithm_is_accepted_with_one_fetch(
    algorithm: str, keys: dict[str, SigningKey], jwks: JwksServer, make: Make
) -> None:
    authenticator = await make()
    token = signed(keys[algorithm])
    principal = await authenticator.authenticate(token)
    assert isinstance(principal, Principal)
    assert principal.user_id == USER_ID
    assert principal.scopes == {"notes:read", "notes:write"}
    assert principal.token_id == jwt.decode(token, options={"verify_signature": False})["jti"]
    assert await authenticator.authenticate(token) == principal  # again, from the cache
    assert jwks.fetches == 1
    assert await authenticator.ready()


async def test_the_first_request_fetches_when_start_was_not_called(
    keys: dict[str, SigningKey], jwks: JwksServer, make: Make
) -> None:
    authenticator = await make(start=False)
    tokens = [signed(keys["EdDSA"]) for _ in range(10)]
    await asyncio.gather(*(authenticator.authenticate(token) for token in tokens))
    assert jwks.fetches == 1  # concurrent first requests share one fetch


async def test_clock_skew_within_bastions_leeway_is_tolerated(
    keys: dict[str, SigningKey], make: Make
) -> None:
    authenticator = await make()
    now = int(time.time())
    skew = LEEWAY_SECONDS - 5
    await authenticator.authenticate(signed(keys["EdDSA"], nbf=now + skew, iat=now + skew))
    await authenticator.authenticate(signed(keys["EdDSA"], exp=now - skew, iat=now - 900))


# -- forgeries -----------------------------------------------------------------------------


async def test_a_forged_signature_is_refused(keys: dict[str, SigningKey], make: Make) -> None:
    authenticator = await make()
    now = datetime.now(UTC)
    impostor = generate_signing_key("EdDSA", now=now)
    # The impostor's own key, under the real key's kid.
    forged = signed(impostor, header={"kid": keys["EdDSA"].kid})
    assert await refused(authenticator, forged) == "InvalidSignatureError"
    # A real token whose claims were edited afterwards.
    head, payload, signature = signed(keys["EdDSA"]).split(".")
    edited = json.loads(base64.urlsafe_b64decode(payload + "=="))
    edited["scope"] = "notes:read audit:read users:write"
    tampered = f"{head}.{b64(json.dumps(edited).encode())}.{signature}"
    assert await refused(authenticator, tampered) == "InvalidSignatureError"


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
async def test_alg_none_is_refused(alg: str, keys: dict[str, SigningKey], make: Make) -> None:
    authenticator = await make()
    header = {"alg": alg, "typ": "at+jwt", "kid": keys["EdDSA"].kid}
    unsigned = hand_made(header, claims(), lambda _: b"")
    assert await refused(authenticator, unsigned) == "algorithm does not match the key"
    assert await refused(authenticator, unsigned.rstrip(".") + ".") != ""


@pytest.mark.parametrize("algorithm", ["EdDSA", "ES256", "RS256"])
async def test_hs256_with_the_public_key_as_the_secret_is_refused(
    algorithm: str, keys: dict[str, SigningKey], make: Make
) -> None:
    """The classic confusion: HMAC keyed with the public key every JWKS reader has."""
    authenticator = await make()
    key = keys[algorithm]
    pem = key.verifying_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    jwk_json = json.dumps(key.public_jwk()).encode()
    for secret in (pem, jwk_json):
        header = {"alg": "HS256", "typ": "at+jwt", "kid": key.kid}
        token = hand_made(header, claims(), hmac_with(secret))
        assert await refused(authenticator, token) == "algorithm does not match the key"


async def test_another_algorithm_than_the_keys_own_is_refused(
    keys: dict[str, SigningKey], make: Make
) -> None:
    """An ES256 signature presented under the EdDSA key's kid: the key decides."""
    authenticator = await make()
    token = signed(keys["ES256"], header={"kid": keys["EdDSA"].kid})
    assert await refused(authenticator, token) == "algorithm does not match the key"


@pytest.mark.parametrize("name", ["jku", "x5u", "jwk", "x5c", "crit"])
async def test_tokens_carrying_key_urls_or_keys_are_refused_without_a_fetch(
    name: str, keys: dict[str, SigningKey], jwks: JwksServer, make: Make
) -> None:
    authenticator = await make()
    attacker = jwks.url.replace("/.well-known/jwks.json", "/attacker.json")
    values = {
        "jku": attacker,
        "x5u": attacker,
        "jwk": keys["EdDSA"].public_jwk(),
        "x5c": ["MIIB"],
        "crit": ["exp"],
    }
    token = signed(keys["EdDSA"], header={name: values[name]})
    # PyJWT itself refuses a ``crit`` naming no header it knows: malformed.
    assert await refused(authenticator, token) in {"embedded or critical header", "malformed"}
    assert jwks.hits == {"/.well-known/jwks.json": 1}  # the start's fetch, nothing else


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"iss": "https://evil.example.test"}, "InvalidIssuerError"),
        ({"aud": "bastion"}, "InvalidAudienceError"),
        ({"aud": [AUDIENCE, "other"]}, "InvalidAudienceError"),
        ({"exp": int(T0) - LEEWAY_SECONDS - 60, "iat": int(T0) - 1000}, "ExpiredSignatureError"),
        ({"nbf": int(T0) + LEEWAY_SECONDS + 120}, "ImmatureSignatureError"),
        ({"sid": None}, "MissingRequiredClaimError"),
        ({"jti": None}, "MissingRequiredClaimError"),
        ({"scope": None}, "MissingRequiredClaimError"),
        ({"sub": "not-a-uuid"}, "claims of the wrong type"),
        ({"scope": ["notes:read"]}, "claims of the wrong type"),
    ],
)
async def test_wrong_or_missing_claims_are_refused(
    changes: dict[str, Any], reason: str, keys: dict[str, SigningKey], make: Make
) -> None:
    authenticator = await make()
    if "nbf" in changes:
        # Ahead of the clock when the test runs, not when the module was imported (a
        # parallel run may reach this test minutes later).
        changes = {"nbf": int(time.time()) + LEEWAY_SECONDS + 120}
    assert await refused(authenticator, signed(keys["EdDSA"], **changes)) == reason


@pytest.mark.parametrize("typ", ["JWT", "jwt", "at+jwt2", None])
async def test_another_typ_is_refused(
    typ: str | None, keys: dict[str, SigningKey], make: Make
) -> None:
    authenticator = await make()
    key = keys["EdDSA"]
    header: dict[str, Any] = {"alg": "EdDSA", "kid": key.kid}
    if typ is not None:
        header["typ"] = typ
    token = hand_made(header, claims(), key.signing_key.sign)
    assert await refused(authenticator, token) == "not an access token"


# -- unknown kids, rotation, withdrawal ----------------------------------------------------


async def test_a_foreign_kid_refetches_once_per_interval_and_concurrent_ones_share_it(
    keys: dict[str, SigningKey], jwks: JwksServer, make: Make
) -> None:
    authenticator = await make()
    foreign = [signed(keys["EdDSA"], header={"kid": f"forged-{n}"}) for n in range(20)]
    # Within the interval after the start's fetch: refused without a fetch.
    for token in foreign[:5]:
        assert await refused(authenticator, token) == "unknown kid"
    assert jwks.fetches == 1
    await asyncio.sleep(INTERVAL + 0.05)
    outcomes = await asyncio.gather(
        *(authenticator.authenticate(token) for token in foreign[5:15]), return_exceptions=True
    )
    assert all(isinstance(outcome, InvalidToken) for outcome in outcomes), outcomes
    assert jwks.fetches == 2  # ten requests, one fetch
    for token in foreign[15:]:
        assert await refused(authenticator, token) == "unknown kid"
    assert jwks.fetches == 2
    # A valid token is not held back by the throttle.
    await authenticator.authenticate(signed(keys["ES256"]))


async def test_a_rotated_in_key_is_accepted_after_one_refetch(
    keys: dict[str, SigningKey], jwks: JwksServer, make: Make
) -> None:
    jwks.publish(keys["EdDSA"])
    authenticator = await make()
    old_token = signed(keys["EdDSA"])
    await authenticator.authenticate(old_token)
    now = datetime.now(UTC)
    rotated = generate_signing_key("EdDSA", now=now)
    jwks.publish(rotated, keys["EdDSA"])  # published first, as `bastion keys rotate` does
    await asyncio.sleep(INTERVAL + 0.05)
    new_token = signed(rotated)
    principal = await authenticator.authenticate(new_token)
    assert principal.user_id == USER_ID
    assert jwks.fetches == 2
    await authenticator.authenticate(old_token)  # the old key still verifies its tokens
    await authenticator.authenticate(signed(rotated))
    assert jwks.fetches == 2


async def test_a_key_withdrawn_from_the_jwks_stops_verifying_cached_tokens_too(
    keys: dict[str, SigningKey], jwks: JwksServer, make: Make
) -> None:
    jwks.publish(keys["EdDSA"], keys["ES256"])
    authenticator = await make()
    withdrawn = signed(keys["ES256"])
    await authenticator.authenticate(withdrawn)
    jwks.publish(keys["EdDSA"], keys["RS256"])
    await asyncio.sleep(INTERVAL + 0.05)
    await authenticator.authenticate(signed(keys["RS256"]))  # its unknown kid refetches
    assert jwks.fetches == 2
    assert await refused(authenticator, withdrawn) == "unknown kid"


async def test_an_old_key_set_is_refreshed_in_the_background(
    keys: dict[str, SigningKey], jwks: JwksServer, make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    authenticator = await make()
    token = signed(keys["EdDSA"])
    await authenticator.authenticate(token)
    # The key set was fetched KEY_SET_MAX_AGE ago.
    monkeypatch.setattr(authenticator, "_fetched_at", time.monotonic() - KEY_SET_MAX_AGE)
    monkeypatch.setattr(authenticator, "_attempted_at", time.monotonic() - KEY_SET_MAX_AGE)
    await authenticator.authenticate(token)  # answered with the keys it has
    for _ in range(100):
        if jwks.fetches == 2:
            break
        await asyncio.sleep(0.01)
    assert jwks.fetches == 2


# -- the JWKS failing ----------------------------------------------------------------------


def closed_port_url() -> str:
    return f"http://127.0.0.1:{free_port()}/.well-known/jwks.json"


async def test_an_unreachable_jwks_is_a_503_logged_at_start_never_a_crash(
    keys: dict[str, SigningKey], make: Make
) -> None:
    with capture_logs() as events:
        authenticator = await make(jwks_url=closed_port_url())  # start() does not raise
    assert [e["event"] for e in events if e["event"] == "jwks_fetch_failed"], events
    assert not await authenticator.ready()
    with pytest.raises(StorageUnavailable) as unavailable:
        await authenticator.authenticate(signed(keys["EdDSA"]))
    assert unavailable.value.outage.dependency == "jwks"
    assert unavailable.value.outage.error == "ConnectError"
    # A malformed token needs no keys: a 401, not a 503.
    assert await refused(authenticator, "not.a.token") == "malformed"


async def test_a_jwks_that_comes_back_is_used_without_a_restart(
    keys: dict[str, SigningKey], jwks: JwksServer, make: Make
) -> None:
    jwks.status = 503
    authenticator = await make()
    token = signed(keys["EdDSA"])
    with pytest.raises(StorageUnavailable):
        await authenticator.authenticate(token)
    # Within a second of a failure, requests answer 503 at once, without a fetch each.
    fetches = jwks.fetches
    for _ in range(5):
        with pytest.raises(StorageUnavailable):
            await authenticator.authenticate(token)
    assert jwks.fetches == fetches
    jwks.status = 200
    await asyncio.sleep(RETRY_AFTER_FAILURE + 0.05)
    assert (await authenticator.authenticate(token)).user_id == USER_ID
    assert await authenticator.ready()


async def test_a_slow_jwks_fails_within_the_timeout(
    keys: dict[str, SigningKey], jwks: JwksServer, make: Make
) -> None:
    jwks.delay = 3.0
    began = time.monotonic()
    authenticator = await make(timeout=0.3)
    with pytest.raises(StorageUnavailable) as unavailable:
        await authenticator.authenticate(signed(keys["EdDSA"]))
    assert time.monotonic() - began < 1.5
    assert unavailable.value.outage.error in {"ReadTimeout", "Timeout"}


async def test_unknown_kid_while_the_jwks_is_down_is_a_503_known_kids_still_verify(
    keys: dict[str, SigningKey], jwks: JwksServer, make: Make
) -> None:
    authenticator = await make()
    jwks.status = 500
    await asyncio.sleep(INTERVAL + 0.05)
    now = datetime.now(UTC)
    with pytest.raises(StorageUnavailable):  # the new key may exist: no decision possible
        await authenticator.authenticate(signed(generate_signing_key("EdDSA", now=now)))
    await authenticator.authenticate(signed(keys["EdDSA"]))


@pytest.mark.parametrize("declare_length", [True, False])
async def test_an_oversized_jwks_is_refused_not_read_whole(
    declare_length: bool, keys: dict[str, SigningKey], jwks: JwksServer, make: Make
) -> None:
    jwk = keys["EdDSA"].public_jwk()
    assert jwk is not None
    padding = {"kid": "padding", "kty": "oct", "note": "x" * (MAX_JWKS_BYTES + 1)}
    jwks.body = json.dumps({"keys": [jwk, padding]}).encode()
    jwks.declare_length = declare_length
    authenticator = await make()
    with pytest.raises(StorageUnavailable) as unavailable:
        await authenticator.authenticate(signed(keys["EdDSA"]))
    assert unavailable.value.outage.error == "TooLarge"


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"<html>bad gateway</html>", "NotJson"),
        (b"\xff\xfe{", "NotJson"),
        (b"[" * 20_000 + b"]" * 20_000, "NotJson"),  # deeper than the parser's stack
        (b'["keys"]', "NotAKeySet"),
        (b'{"keys": {"kid": "x"}}', "NotAKeySet"),
        (b'{"keys": []}', "NoUsableKey"),
        # A shared secret is never a verifying key, whatever its alg says.
        (b'{"keys": [{"kty": "oct", "kid": "s", "alg": "HS256", "k": "c2VjcmV0"}]}',
         "NoUsableKey"),
        (b'{"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "bad", "x": "!!"}]}',
         "NoUsableKey"),
    ],
)
async def test_a_jwks_that_is_not_a_key_set_is_an_error_not_a_crash(
    body: bytes, error: str, keys: dict[str, SigningKey], jwks: JwksServer, make: Make
) -> None:
    jwks.body = body
    authenticator = await make()
    with pytest.raises(StorageUnavailable) as unavailable:
        await authenticator.authenticate(signed(keys["EdDSA"]))
    assert unavailable.value.outage.error == error


async def test_unusable_keys_are_skipped_and_the_rest_is_used(
    keys: dict[str, SigningKey], jwks: JwksServer, make: Make
) -> None:
    ed, es, rs = keys["EdDSA"], keys["ES256"], keys["RS256"]
    ed_jwk, es_jwk = ed.public_jwk(), es.public_jwk()
    assert ed_jwk is not None and es_jwk is not None
    private = {**ed_jwk, "kid": "private", "d": ed_jwk["x"]}
    mismatched = {**es_jwk, "alg": "RS256"}  # an EC key claiming RSA: skipped
    encryption = {**ed_jwk, "kid": "enc", "use": "enc"}
    duplicate = {**ed_jwk, "kid": rs.kid}  # rs's kid given twice: neither is used
    jwks.publish(ed, rs, extra=[private, mismatched, encryption, duplicate])
    with capture_logs() as events:
        authenticator = await make(algorithms=["EdDSA", "RS256"])
    await authenticator.authenticate(signed(ed))
    assert await refused(authenticator, signed(es)) == "unknown kid"
    assert await refused(authenticator, signed(rs)) == "unknown kid"
    skipped = {e["kid"]: e["reason"] for e in events if e["event"] == "jwks_key_skipped"}
    assert skipped == {
        "private": "holds private or secret key material",
        es.kid: "alg does not match the key type",
        "enc": "not a signing key",
        rs.kid: "kid given twice",
    }


async def test_algorithms_limit_the_keys_used(
    keys: dict[str, SigningKey], make: Make
) -> None:
    authenticator = await make(algorithms={"ES256"})
    await authenticator.authenticate(signed(keys["ES256"]))
    assert await refused(authenticator, signed(keys["EdDSA"])) == "unknown kid"


# -- revocations through the issuing service's Redis --------------------------------------


async def issuing_service_store(url: str) -> RedisRevocationStore:
    """The store as bastion writes it, its record restored into this Redis (as at start)."""
    store = RedisRevocationStore(redis_client_from_url(url))
    await store.mark_restored(await store.begin_restore())
    return store


def identity_of(token: str) -> dict[str, Any]:
    values: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return values


async def test_revocations_written_by_the_service_are_honoured(
    keys: dict[str, SigningKey], make: Make, redis_server: RedisServer
) -> None:
    service = await issuing_service_store(redis_server.url)
    try:
        authenticator = await make(redis_url=redis_server.url)
        assert await authenticator.ready()
        logged_out, revoked, before_cutoff = (signed(keys["EdDSA"]) for _ in range(3))
        for token in (logged_out, revoked):
            await authenticator.authenticate(token)  # accepted, and cached

        await service.revoke_session(identity_of(logged_out)["sid"], ttl_seconds=60)
        assert await refused(authenticator, logged_out) == "revoked"
        await service.revoke_token(identity_of(revoked)["jti"], ttl_seconds=60)
        assert await refused(authenticator, revoked) == "revoked"

        user = str(uuid.uuid4())
        now = int(time.time())
        older = signed(keys["EdDSA"], sub=user, iat=now - 10)
        newer = signed(keys["EdDSA"], sub=user, iat=now + 1)
        await service.revoke_user_tokens_before(user, now, ttl_seconds=60)
        assert await refused(authenticator, older) == "revoked"
        await authenticator.authenticate(newer)
        await authenticator.authenticate(before_cutoff)  # another user's: untouched
    finally:
        await service.close()


async def test_redis_down_is_a_503_never_an_allow(
    keys: dict[str, SigningKey], make: Make, own_redis: RedisServer
) -> None:
    service = await issuing_service_store(own_redis.url)
    await service.close()
    authenticator = await make(redis_url=own_redis.url)
    token = signed(keys["EdDSA"])
    await authenticator.authenticate(token)
    own_redis.stop()
    began = time.monotonic()
    with pytest.raises(StorageUnavailable) as unavailable:
        await authenticator.authenticate(token)
    assert unavailable.value.outage.dependency == "redis"
    assert time.monotonic() - began < 5.0
    assert not await authenticator.ready()


async def test_a_redis_that_lost_the_revocations_is_a_503_until_the_service_restores_them(
    keys: dict[str, SigningKey], make: Make, own_redis: RedisServer
) -> None:
    service = await issuing_service_store(own_redis.url)
    try:
        authenticator = await make(redis_url=own_redis.url)
        token = signed(keys["EdDSA"])
        await authenticator.authenticate(token)
        own_redis.stop()  # no persistence: it comes back empty, the logouts forgotten
        own_redis.start()
        with pytest.raises(StorageUnavailable) as unavailable:
            await authenticator.authenticate(token)
        assert unavailable.value.outage.error == "RecordNotRestored"
        restarted = await issuing_service_store(own_redis.url)  # the service restores
        await restarted.close()
        await authenticator.authenticate(token)
    finally:
        await service.close()


# -- construction, and what is never said ----------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"jwks_url": "auth.internal/.well-known/jwks.json"}, "absolute http(s) URL"),
        ({"jwks_url": "file:///etc/passwd"}, "absolute http(s) URL"),
        ({"jwks_url": "https:///jwks.json"}, "absolute http(s) URL"),
        ({"jwks_url": "https://auth.example.test:99999/jwks"}, "absolute http(s) URL"),
        ({"jwks_url": ""}, "jwks_url"),
        ({"issuer": ""}, "issuer must be a non-empty string"),
        ({"issuer": " https://auth.example.test"}, "whitespace"),
        ({"audience": ""}, "audience must be a non-empty string"),
        ({"algorithms": ["HS256"]}, "HS256 is refused"),
        ({"algorithms": ["EdDSA", "HS512"]}, "HS512 is refused"),
        ({"algorithms": ["none"]}, "'none' is refused"),
        ({"algorithms": ["PS256"]}, "not supported"),
        ({"algorithms": []}, "at least one"),
        ({"algorithms": "EdDSA"}, "collection of names"),
        ({"refetch_interval": 0}, "refetch_interval must be 1 to 10 seconds"),
        ({"refetch_interval": 30}, "refetch_interval must be 1 to 10 seconds"),
        ({"refetch_interval": float("nan")}, "refetch_interval"),
        ({"timeout": 0}, "timeout must be above 0"),
        ({"timeout": -1}, "timeout must be above 0"),
        ({"redis_url": "http://127.0.0.1:6379"}, "redis_url must be"),
    ],
)
def test_a_misconfiguration_fails_at_construction_saying_what_to_fix(
    options: dict[str, Any], message: str
) -> None:
    arguments: dict[str, Any] = {
        "jwks_url": "https://auth.example.test/.well-known/jwks.json",
        "issuer": ISSUER,
        "audience": AUDIENCE,
        **options,
    }
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        JwksAuthenticator(**arguments)


def test_a_bad_redis_url_is_refused_without_echoing_its_password() -> None:
    with pytest.raises(ValueError) as refusal:
        JwksAuthenticator(
            jwks_url="https://auth.example.test/.well-known/jwks.json",
            issuer=ISSUER,
            audience=AUDIENCE,
            redis_url="redis://:hunter2-secret@127.0.0.1:notaport/0",
        )
    assert "hunter2" not in str(refusal.value)


def test_a_plain_http_jwks_between_hosts_is_warned_about() -> None:
    with capture_logs() as events:
        JwksAuthenticator(jwks_url="http://auth.internal/.well-known/jwks.json",
                          issuer=ISSUER, audience=AUDIENCE)
        JwksAuthenticator(jwks_url="http://127.0.0.1:8000/.well-known/jwks.json",
                          issuer=ISSUER, audience=AUDIENCE)
    assert [e["jwks_url"] for e in events if e["event"] == "jwks_url_not_https"] == [
        "http://auth.internal/.well-known/jwks.json"
    ]


async def test_no_token_reaches_the_log_or_an_exception(
    keys: dict[str, SigningKey], jwks: JwksServer, make: Make, own_redis: RedisServer
) -> None:
    service = await issuing_service_store(own_redis.url)
    await service.close()
    tokens: list[str] = []
    raised: list[str] = []
    with capture_logs() as events:
        authenticator = await make(redis_url=own_redis.url)
        now = datetime.now(UTC)
        tokens += [
            signed(keys["EdDSA"], header={"kid": "unknown"}),
            signed(keys["EdDSA"], iss="https://evil.example.test"),
            signed(generate_signing_key("EdDSA", now=now)),
            signed(keys["EdDSA"], header={"jku": "https://evil.example.test/jwks"}),
        ]
        await asyncio.sleep(INTERVAL + 0.05)
        for token in tokens:
            with pytest.raises(InvalidToken) as refusal:
                await authenticator.authenticate(token)
            raised.append(repr(refusal.value))
        jwks.status = 500
        await asyncio.sleep(INTERVAL + 0.05)
        own_redis.stop()
        for token in [signed(keys["EdDSA"]), signed(generate_signing_key("ES256", now=now))]:
            tokens.append(token)
            with pytest.raises(StorageUnavailable) as unavailable:
                await authenticator.authenticate(token)
            raised.append(repr(unavailable.value) + repr(unavailable.value.__cause__))
    text = repr(events) + "".join(raised)
    for token in tokens:
        for part in token.split("."):
            assert part not in text
