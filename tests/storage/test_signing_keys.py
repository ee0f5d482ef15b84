"""Key rotation across hosts: a rotated key is published before it signs, and a token with a
``kid`` a host does not know may always make it reload once per interval, whatever reloads
it did before issuing. Two ``KeyRingHolder``s on one database are two hosts."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime

import pytest
from fastapi import FastAPI

from bastion.authentication import Authenticator
from bastion.security.tokens import TokenVerifier, VerifiedTokenCache, access_token_claims
from bastion.services import services_of
from bastion.storage import signing_keys
from bastion.storage.signing_keys import KeyRingHolder, rotate_signing_key

RELOAD = 0.3
DELAY = 0.9


@pytest.fixture(autouse=True)
def quick_intervals(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(signing_keys, "RELOAD_INTERVAL_SECONDS", RELOAD)
    monkeypatch.setattr(signing_keys, "SIGNING_DELAY_SECONDS", DELAY)


def _host(app: FastAPI) -> tuple[KeyRingHolder, Authenticator]:
    services = services_of(app)
    keys = KeyRingHolder(services.database, services.settings)
    verifier = TokenVerifier(
        issuer=services.settings.issuer,
        audience=services.settings.audience,
        cache=VerifiedTokenCache(),
    )
    revocations = services.authenticator.revocations
    return keys, Authenticator(keys=keys, verifier=verifier, revocations=revocations)


def _claims(app: FastAPI) -> dict[str, object]:
    settings = services_of(app).settings
    return access_token_claims(
        issuer=settings.issuer,
        audience=settings.audience,
        subject=str(uuid.uuid4()),
        session_id=str(uuid.uuid4()),
        scopes=["notes:read"],
        lifetime=900,
        now=int(time.time()),
    )


async def _rotate(app: FastAPI) -> str:
    services = services_of(app)
    async with services.database.transaction() as session:
        key = await rotate_signing_key(session, services.settings, now=datetime.now(UTC))
    return key.kid


async def test_a_rotated_key_is_published_before_it_signs(app: FastAPI) -> None:
    keys, _ = _host(app)
    old = (await keys.reload()).current.kid
    new = await _rotate(app)
    ring = await keys.reload()
    assert new in ring.keys  # published: in the ring, hence in the JWKS
    assert ring.current.kid == old  # not signing yet
    published = ring.jwks(now=datetime.now(UTC), max_token_lifetime=900)["keys"]
    assert new in {key["kid"] for key in published}
    await asyncio.sleep(DELAY)
    assert (await keys.reload()).current.kid == new
    assert ring.current.kid == new  # the same ring, a moment later


async def test_a_host_that_reloaded_just_before_the_rotation_accepts_the_new_tokens(
    app: FastAPI,
) -> None:
    """The finding: host B reloads (to issue a token), the key rotates, host A signs with
    the new key; B refused it for up to the reload interval."""
    keys_a, _ = _host(app)
    keys_b, host_b = _host(app)
    await keys_a.reload()
    await keys_b.reload()
    new = await _rotate(app)
    deadline = time.monotonic() + 3 * DELAY
    while (ring_a := await keys_a.reload()).current.kid != new:  # A signs as soon as it may
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    await keys_b.reload_if_stale()  # B issues tokens meanwhile, reloading when stale
    token = ring_a.sign(_claims(app))
    principal = await host_b.authenticate(token)
    assert principal.scopes == frozenset({"notes:read"})


async def test_an_unknown_kid_may_reload_right_after_a_reload_to_issue(app: FastAPI) -> None:
    keys, _ = _host(app)
    await keys.reload()
    assert await keys.reload_if_stale() is None  # throttled: just reloaded
    assert await keys.reload_for_unknown_kid() is not None  # its own throttle
    assert await keys.reload_for_unknown_kid() is None  # bounded: once per interval
    await asyncio.sleep(RELOAD)
    assert await keys.reload_for_unknown_kid() is not None
