"""``JwksAuthenticator``: verify a bastion service's access tokens in another service.

A resource server holds no signing key and no database of bastion's. It reads the issuing
service's public keys from its JWKS (``/.well-known/jwks.json``) and, given the issuing
service's Redis, its revocations:

- The key set is fetched at start and cached. A token naming a ``kid`` the cache lacks (the
  issuer rotated) refetches it, at most once per ``refetch_interval`` (forged kids cost at
  most that), and concurrent requests share one fetch. A key set older than
  ``KEY_SET_MAX_AGE`` (the JWKS's own ``max-age``) is refreshed in the background, so keys
  the issuer withdrew stop verifying; one that could not be refreshed for
  ``KEY_SET_MAX_STALE`` is dropped (503 until the JWKS answers again).
- Each key's algorithm comes from the key (``kty``/``crv``, and ``alg`` must agree), never
  from the token: ``alg:none``, HS256 (a JWKS never holds a shared secret, and a public key
  is no secret) and a header ``alg`` other than the key's are refused. The header and claim
  checks are the service's own (``bastion.security.tokens``): ``typ: at+jwt``, no ``jwk``,
  ``jku``, ``x5u``, ``x5c`` or ``crit`` header (nothing is ever fetched from a token),
  ``iss``, ``aud``, ``exp``, ``nbf`` with the same leeway, every required claim.
- With ``redis_url``, every request asks the issuing service's Redis whether the token, its
  session or its user's older tokens were revoked (logout, password change, disable, role
  change): the keys the service writes, read only. A Redis that lost them (restarted empty,
  failed over) answers 503 until the service has restored them, never an "allow".

Failing closed: when no decision is possible (no key set, a new ``kid`` while the JWKS does
not answer, Redis down), ``authenticate`` raises ``StorageUnavailable`` (a 503), not
``InvalidToken`` (a 401 that would make clients throw their tokens away). Nothing logged or
raised here contains a token.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import math
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from bastion.authentication import unrevoked_principal
from bastion.layer import SecurityMisconfigured
from bastion.logs import get_logger
from bastion.security.principal import Principal
from bastion.security.tokens import (
    AccessClaims,
    InvalidToken,
    VerifiedTokenCache,
    checked_header,
    decode_access_token,
    pinned_key,
)
from bastion.storage import StorageUnavailable
from bastion.storage.outages import Outage
from bastion.storage.redis_client import redis_client_from_url
from bastion.storage.redis_revocations import RECORD_NOT_RESTORED, RedisRevocationStore
from bastion.storage.signing_keys import RELOAD_INTERVAL_SECONDS, SIGNING_DELAY_SECONDS

log = get_logger("bastion.toolkit.jwks")

SUPPORTED_ALGORITHMS: Final = ("EdDSA", "ES256", "RS256")
MAX_JWKS_BYTES: Final = 64 * 1024
MIN_RSA_BITS: Final = 2048
# bastion serves its JWKS with ``Cache-Control: public, max-age=60``.
KEY_SET_MAX_AGE: Final = 60.0
# A key set not refreshed for this long (the JWKS did not answer) is no longer trusted:
# by then every token issued before the outage has expired (bastion's default lifetime is
# 15 min), and a key the issuer withdrew must not verify forever.
KEY_SET_MAX_STALE: Final = 3600.0
# After a failed fetch, requests that need one answer 503 at once for this long instead of
# each trying again: a dead issuer is not hammered.
RETRY_AFTER_FAILURE: Final = 1.0
# A rotated key is in bastion's JWKS at most RELOAD_INTERVAL_SECONDS after the rotation and
# signs SIGNING_DELAY_SECONDS after it: a resource server that may refetch at least this
# often has learnt the key before its first token arrives, whatever fetched last.
MAX_REFETCH_INTERVAL: Final = SIGNING_DELAY_SECONDS - RELOAD_INTERVAL_SECONDS
MIN_REFETCH_INTERVAL: Final = 1.0
MAX_TIMEOUT: Final = 60.0
_MAX_KID_LENGTH = 256
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
NOT_ACCEPTED: Final = "algorithm not accepted"
_SYMMETRIC = frozenset({"HS256", "HS384", "HS512"})
_LOOPBACK_NAMES = frozenset({"localhost"})


@dataclass(frozen=True, slots=True)
class PublishedKey:
    """A public key of the issuer's JWKS, with the one algorithm it verifies."""

    kid: str
    algorithm: str
    verifying_key: Any


class JwksUnavailable(Exception):
    """The JWKS could not be fetched or read; ``reason`` names why, for the log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class JwksAuthenticator:
    """Verifies access tokens of a bastion service through its JWKS (see the module)."""

    def __init__(
        self,
        *,
        jwks_url: str,
        issuer: str,
        audience: str,
        redis_url: str | None = None,
        algorithms: Collection[str] = SUPPORTED_ALGORITHMS,
        refetch_interval: float = 5.0,
        timeout: float = 5.0,
    ) -> None:
        """``jwks_url`` the issuer's ``/.well-known/jwks.json``; ``issuer`` and ``audience``
        what its tokens' ``iss`` and ``aud`` must be (``BASTION_ISSUER``,
        ``BASTION_AUDIENCE``); ``redis_url`` the issuing service's ``BASTION_REDIS_URL``,
        to honour its revocations; ``algorithms`` those accepted (keys of other algorithms
        in the JWKS are ignored); ``refetch_interval`` the least time between two fetches
        for an unknown ``kid``; ``timeout`` bounds a fetch, start to end.

        Every argument is checked here: ``ValueError`` says what to fix."""
        self.jwks_url = _checked_url(jwks_url)
        self._url_for_logs = _url_for_logs(self.jwks_url)
        self.issuer = _checked_text("issuer", issuer)
        self.audience = _checked_text("audience", audience)
        self.algorithms = _checked_algorithms(algorithms)
        self.refetch_interval = _checked_number(
            "refetch_interval",
            refetch_interval,
            low=MIN_REFETCH_INTERVAL,
            high=MAX_REFETCH_INTERVAL,
            why=(
                "at least 1 s, so forged kids cannot make every request a fetch, and at most "
                f"{MAX_REFETCH_INTERVAL:g} s, so a key bastion rotates in is learnt before it "
                "signs"
            ),
        )
        self.timeout = _checked_number(
            "timeout", timeout, low=None, high=MAX_TIMEOUT, why="seconds, above 0"
        )
        self._revocations = _revocation_store(redis_url)
        self._cache = VerifiedTokenCache()
        self._http: httpx.AsyncClient | None = None
        self._keys: dict[str, PublishedKey] | None = None
        self._fetched_at = float("-inf")  # the last fetch that installed a key set
        self._attempted_at = float("-inf")  # the last fetch started, whatever came of it
        self._failed_at: float | None = None  # the last fetch failed, at this time
        self._outage = Outage("jwks", "NotFetched")
        self._fetching: asyncio.Task[None] | None = None
        if not _is_secure_or_local(self.jwks_url):
            log.warning(
                "jwks_url_not_https",
                jwks_url=self._url_for_logs,
                detail="anyone on the path can substitute keys; use https between hosts",
            )

    # -- the authenticator's interface --------------------------------------------------

    async def start(self) -> None:
        """Fetches the key set (and asks Redis); a failure is logged, never raised: the
        first request that needs the keys tries again."""
        await self._refresh()
        if self._revocations is not None and not await self._revocations.ping():
            log.warning("revocation_store_unavailable_at_start", dependency="redis")

    async def authenticate(self, token: str) -> Principal:
        """The principal of a valid, unrevoked access token. ``InvalidToken`` refuses it
        (401); ``StorageUnavailable`` when the JWKS or Redis cannot be reached and no
        decision is possible (503)."""
        self._refresh_if_stale()
        claims = self._cache.get(token, now=time.time())
        if claims is None:
            claims = await self._verify(token)
            self._cache.put(token, claims)
        if self._revocations is not None:
            return await unrevoked_principal(self._revocations, claims)
        return Principal.from_claims(claims)

    async def ready(self) -> bool:
        """Whether a request could be decided now: a key set loaded (fetched here if
        there is none) and, when configured, Redis answering."""
        if self._usable_keys() is None and not self._failed_recently():
            await self._refresh()
        if self._usable_keys() is None:
            return False
        return self._revocations is None or await self._revocations.ping()

    async def aclose(self) -> None:
        fetching, self._fetching = self._fetching, None
        if fetching is not None:
            fetching.cancel()
            await asyncio.gather(fetching, return_exceptions=True)
        http, self._http = self._http, None
        if http is not None:
            await http.aclose()
        if self._revocations is not None:
            await self._revocations.close()

    # -- verification -------------------------------------------------------------------

    async def _verify(self, token: str) -> AccessClaims:
        header = checked_header(token)  # an unsafe header costs no fetch
        keys = await self._current_keys()
        try:
            key = pinned_key(header, keys)
        except InvalidToken as refused:
            if refused.reason != "unknown kid" or not isinstance(header.get("kid"), str):
                raise
            key = pinned_key(header, await self._keys_for_unknown_kid())
        return decode_access_token(token, key, issuer=self.issuer, audience=self.audience)

    async def _current_keys(self) -> Mapping[str, PublishedKey]:
        keys = self._usable_keys()
        if keys is not None:
            return keys
        if self._fetching is None and self._failed_recently():
            raise StorageUnavailable(outage=self._outage)
        await self._refresh()
        keys = self._usable_keys()
        if keys is None:
            raise StorageUnavailable(outage=self._outage)
        return keys

    async def _keys_for_unknown_kid(self) -> Mapping[str, PublishedKey]:
        """The key set refetched for a token whose ``kid`` it lacks, unless a fetch started
        within ``refetch_interval`` (then the token is refused as it stands, or answered 503
        if that fetch failed: the key may exist)."""
        if self._fetching is None:
            if time.monotonic() - self._attempted_at < self.refetch_interval:
                if self._failed_at is not None:
                    raise StorageUnavailable(outage=self._outage)
                raise InvalidToken("unknown kid")
            log.info("jwks_refetch_for_unknown_kid", jwks_url=self._url_for_logs)
        await self._refresh()
        if self._failed_at is not None:
            raise StorageUnavailable(outage=self._outage)
        keys = self._usable_keys()
        if keys is None:
            raise StorageUnavailable(outage=self._outage)
        return keys

    def _usable_keys(self) -> dict[str, PublishedKey] | None:
        if self._keys is None:
            return None
        if time.monotonic() - self._fetched_at > KEY_SET_MAX_STALE:
            log.warning(
                "jwks_key_set_dropped",
                jwks_url=self._url_for_logs,
                detail=f"not refreshed for {KEY_SET_MAX_STALE:g} s",
            )
            self._keys = None
            self._cache = VerifiedTokenCache()
            return None
        return self._keys

    def _failed_recently(self) -> bool:
        return (
            self._failed_at is not None
            and time.monotonic() - self._failed_at < RETRY_AFTER_FAILURE
        )

    # -- fetching -----------------------------------------------------------------------

    def _refresh_if_stale(self) -> None:
        """Starts a background refresh of a key set older than ``KEY_SET_MAX_AGE``; the
        request goes on with the keys it has."""
        now = time.monotonic()
        if (
            self._keys is not None
            and self._fetching is None
            and now - self._fetched_at >= KEY_SET_MAX_AGE
            and now - self._attempted_at >= self.refetch_interval
        ):
            self._start_fetch()

    def _start_fetch(self) -> asyncio.Task[None]:
        if self._fetching is None:
            self._attempted_at = time.monotonic()
            self._fetching = asyncio.create_task(self._fetch_and_install())
        return self._fetching

    async def _refresh(self) -> None:
        """Fetches the key set, or joins the fetch in flight; never raises for a failed
        fetch (``_failed_at`` and ``_outage`` say what happened). A caller's cancellation
        does not cancel the fetch the others wait for."""
        await asyncio.shield(self._start_fetch())

    async def _fetch_and_install(self) -> None:
        try:
            keys = await self._fetch()
        except JwksUnavailable as failure:
            self._failed_at = time.monotonic()
            self._outage = Outage("jwks", failure.reason)
            log.warning(
                "jwks_fetch_failed",
                jwks_url=self._url_for_logs,
                reason=failure.reason,
                keeping_cached_keys=self._keys is not None,
            )
        else:
            previous = self._keys or {}
            if previous.keys() - keys.keys():
                # A withdrawn key verifies nothing more, cached verdicts included.
                self._cache = VerifiedTokenCache()
            self._keys = keys
            self._fetched_at = time.monotonic()
            self._failed_at = None
            if previous.keys() != keys.keys():
                log.info("jwks_fetched", jwks_url=self._url_for_logs, kids=sorted(keys))
        finally:
            self._fetching = None

    async def _fetch(self) -> dict[str, PublishedKey]:
        if self._http is None:
            # No redirects: the key set comes from the configured URL or not at all.
            self._http = httpx.AsyncClient(timeout=self.timeout, follow_redirects=False)
        try:
            async with asyncio.timeout(self.timeout):
                body = await self._download(self._http)
        except TimeoutError:
            raise JwksUnavailable("Timeout") from None
        except (httpx.HTTPError, httpx.StreamError, OSError) as error:
            raise JwksUnavailable(type(error).__name__) from None
        return read_key_set(body, self.algorithms)

    async def _download(self, http: httpx.AsyncClient) -> bytes:
        headers = {"Accept": "application/jwk-set+json, application/json"}
        async with http.stream("GET", self.jwks_url, headers=headers) as response:
            if response.status_code != 200:
                raise JwksUnavailable(f"HTTP {response.status_code}")
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > MAX_JWKS_BYTES:
                raise JwksUnavailable("TooLarge")
            body = bytearray()
            async for chunk in response.aiter_bytes():  # decoded: a compressed bomb stops too
                body += chunk
                if len(body) > MAX_JWKS_BYTES:
                    raise JwksUnavailable("TooLarge")
            return bytes(body)


# -- reading a key set --------------------------------------------------------------------


def read_key_set(body: bytes, algorithms: Collection[str]) -> dict[str, PublishedKey]:
    """The usable keys of a JWKS document, by ``kid``: ``JwksUnavailable`` when it is no
    JWKS or has no usable key. A key is skipped (and logged, by ``kid``) when it is not a
    public signing key of an accepted algorithm; a ``kid`` given twice is skipped too."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):  # not UTF-8, not JSON, nested beyond the stack
        raise JwksUnavailable("NotJson") from None
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise JwksUnavailable("NotAKeySet")
    keys: dict[str, PublishedKey] = {}
    duplicated: set[str] = set()
    for entry in entries:
        key = _published_key(entry, algorithms)
        if isinstance(key, str):
            kid = entry.get("kid") if isinstance(entry, dict) else None
            shown = kid[:64] if isinstance(kid, str) else None
            # Keys of algorithms the app does not accept are expected (an info line).
            level = log.info if key == NOT_ACCEPTED else log.warning
            level("jwks_key_skipped", kid=shown, reason=key)
            continue
        if key.kid in keys or key.kid in duplicated:
            duplicated.add(key.kid)
            keys.pop(key.kid, None)
            log.warning("jwks_key_skipped", kid=key.kid[:64], reason="kid given twice")
            continue
        keys[key.kid] = key
    if not keys:
        raise JwksUnavailable("NoUsableKey")
    return keys


def _published_key(entry: object, algorithms: Collection[str]) -> PublishedKey | str:
    """The key ``entry`` describes, or why it cannot be used."""
    if not isinstance(entry, dict):
        return "not a JSON object"
    kid = entry.get("kid")
    if not isinstance(kid, str) or not 0 < len(kid) <= _MAX_KID_LENGTH:
        return "no kid"
    if _PRIVATE_MEMBERS & entry.keys():
        return "holds private or secret key material"
    if entry.get("use", "sig") != "sig":
        return "not a signing key"
    operations = entry.get("key_ops")
    if operations is not None and (not isinstance(operations, list) or "verify" not in operations):
        return "not a verifying key"
    algorithm = _algorithm_of(entry.get("kty"), entry.get("crv"))
    if algorithm is None:
        return "unsupported key type"
    if entry.get("alg", algorithm) != algorithm:
        return "alg does not match the key type"
    if algorithm not in algorithms:
        return NOT_ACCEPTED
    try:
        verifying_key = _public_key(algorithm, entry)
    except (jwt.InvalidKeyError, ValueError, TypeError, KeyError):
        return "malformed key"
    if verifying_key is None:
        return "malformed key"
    return PublishedKey(kid=kid, algorithm=algorithm, verifying_key=verifying_key)


def _algorithm_of(kty: object, crv: object) -> str | None:
    """The one algorithm a key of this type verifies: its type decides, not its ``alg``."""
    if kty == "OKP" and crv == "Ed25519":
        return "EdDSA"
    if kty == "EC" and crv == "P-256":
        return "ES256"
    if kty == "RSA":
        return "RS256"
    return None


def _public_key(algorithm: str, entry: dict[str, Any]) -> Any:
    """The public key object, or None when it is not the kind ``algorithm`` verifies with."""
    if algorithm == "EdDSA":
        okp = OKPAlgorithm.from_jwk(entry)
        return okp if isinstance(okp, ed25519.Ed25519PublicKey) else None
    if algorithm == "ES256":
        ec_key = ECAlgorithm.from_jwk(entry)
        if isinstance(ec_key, ec.EllipticCurvePublicKey) and isinstance(
            ec_key.curve, ec.SECP256R1
        ):
            return ec_key
        return None
    rsa_key = RSAAlgorithm.from_jwk(entry)
    if isinstance(rsa_key, rsa.RSAPublicKey) and rsa_key.key_size >= MIN_RSA_BITS:
        return rsa_key
    return None


# -- checking the arguments ---------------------------------------------------------------


def _checked_url(url: object) -> str:
    if not isinstance(url, str) or not url:
        raise SecurityMisconfigured("jwks_url must be the issuer's JWKS URL, e.g. "
                         "https://auth.example.com/.well-known/jwks.json")
    try:
        parts = urlsplit(url)
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        port_ok = False
        parts = urlsplit("")
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
        raise SecurityMisconfigured(
            "jwks_url must be an absolute http(s) URL with a host, e.g. "
            "https://auth.example.com/.well-known/jwks.json"
        )
    if parts.fragment or any(character.isspace() for character in url):
        raise SecurityMisconfigured("jwks_url must not hold a fragment or whitespace")
    return url


def _url_for_logs(url: str) -> str:
    """The URL without credentials or query (either may hold a secret)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _is_secure_or_local(url: str) -> bool:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme == "https" or host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _checked_text(name: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise SecurityMisconfigured(
            f"{name} must be a non-empty string (the issuing service's {name})"
        )
    if value != value.strip():
        raise SecurityMisconfigured(f"{name} must not start or end with whitespace")
    return value


def _checked_algorithms(algorithms: object) -> frozenset[str]:
    if isinstance(algorithms, str) or not isinstance(algorithms, Collection):
        # ValueError like every other misconfiguration here: one exception to catch.
        raise SecurityMisconfigured(
            f"algorithms must be a collection of names, e.g. {list(SUPPORTED_ALGORITHMS)}"
        )
    names = frozenset(algorithms)
    if not names:
        raise SecurityMisconfigured(
            f"algorithms must name at least one of {list(SUPPORTED_ALGORITHMS)}"
        )
    for name in sorted(names, key=str):
        if name in _SYMMETRIC:
            raise SecurityMisconfigured(
                f"algorithms: {name} is refused: a JWKS publishes public keys only, and "
                "a public key used as an HMAC secret lets anyone forge tokens"
            )
        if isinstance(name, str) and name.lower() == "none":
            raise SecurityMisconfigured(
                "algorithms: 'none' is refused: unsigned tokens prove nothing"
            )
        if name not in SUPPORTED_ALGORITHMS:
            raise SecurityMisconfigured(
                f"algorithms: {name!r} is not supported; choose from "
                f"{list(SUPPORTED_ALGORITHMS)}"
            )
    return names


def _checked_number(
    name: str, value: object, *, low: float | None, high: float, why: str
) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SecurityMisconfigured(f"{name} must be a number of seconds")
    number = float(value)
    too_low = number <= 0 if low is None else number < low
    if math.isnan(number) or too_low or number > high:
        bounds = f"above 0 and at most {high:g}" if low is None else f"{low:g} to {high:g}"
        raise SecurityMisconfigured(f"{name} must be {bounds} seconds ({why}), not {value!r}")
    return number


async def _revocations_not_restored() -> None:
    """The restorer of a read-only store: only the issuing service can restore the
    revocations Redis lost, so until it has, no answer is safe (503)."""
    raise StorageUnavailable(outage=RECORD_NOT_RESTORED)


def _revocation_store(redis_url: object) -> RedisRevocationStore | None:
    if redis_url is None:
        return None
    if not isinstance(redis_url, str) or urlsplit(redis_url).scheme not in (
        "redis",
        "rediss",
        "unix",
    ):
        raise SecurityMisconfigured(
            "redis_url must be the issuing service's BASTION_REDIS_URL "
            "(redis://, rediss:// or unix://), or None"
        )
    try:
        client = redis_client_from_url(redis_url)
    except ValueError:
        # redis-py's message may quote the URL, password included.
        raise SecurityMisconfigured("redis_url is not a valid Redis URL") from None
    store = RedisRevocationStore(client)
    store.restore_with(_revocations_not_restored)
    return store
