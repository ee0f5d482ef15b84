"""Revocations: one contract over memory and Redis, the memory bound, and Redis going away."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import pytest
import redis.asyncio

from bastion.app import shared_stores
from bastion.storage import StorageUnavailable, revocations
from bastion.storage.ratelimits import MemoryRateLimitStore, RedisRateLimitStore
from bastion.storage.redis_client import redis_client_from_url
from bastion.storage.revocations import (
    MemoryRevocationStore,
    RedisRevocationStore,
    RevocationStore,
)
from tests.conftest import make_settings
from tests.servers.redis import RedisServer

NOW = 1_700_000_000
HOUR = 3600


async def _revoked(
    store: RevocationStore,
    *,
    jti: str = "jti-other",
    sid: str = "sid-other",
    user_id: str = "user-other",
    issued_at: int = NOW,
) -> bool:
    return await store.is_revoked(jti=jti, sid=sid, user_id=user_id, issued_at=issued_at)


async def test_nothing_is_revoked_at_first(revocation_store: RevocationStore) -> None:
    assert await revocation_store.ping()
    assert not await _revoked(revocation_store, jti="j", sid="s", user_id="u")


async def test_a_revoked_session_revokes_every_token_of_it_and_no_other(
    revocation_store: RevocationStore,
) -> None:
    await revocation_store.revoke_session("sid-1", ttl_seconds=HOUR)
    assert await _revoked(revocation_store, jti="jti-a", sid="sid-1")
    assert await _revoked(revocation_store, jti="jti-b", sid="sid-1", user_id="anyone")
    assert not await _revoked(revocation_store, jti="jti-a", sid="sid-2")


async def test_a_revoked_token_revokes_only_that_token(revocation_store: RevocationStore) -> None:
    await revocation_store.revoke_token("jti-1", ttl_seconds=HOUR)
    assert await _revoked(revocation_store, jti="jti-1", sid="sid-1")
    assert not await _revoked(revocation_store, jti="jti-2", sid="sid-1")


async def test_kinds_never_collide_even_with_colons_in_identifiers(
    revocation_store: RevocationStore,
) -> None:
    await revocation_store.revoke_token("sid:x", ttl_seconds=HOUR)
    await revocation_store.revoke_session("jti:y", ttl_seconds=HOUR)
    await revocation_store.revoke_user_tokens_before("z", NOW + 10, ttl_seconds=HOUR)
    assert not await _revoked(revocation_store, jti="x", sid="x")
    assert not await _revoked(revocation_store, jti="jti:y", sid="y")
    assert not await _revoked(revocation_store, jti="z", sid="z", user_id="user:z")
    assert await _revoked(revocation_store, jti="sid:x")
    assert await _revoked(revocation_store, sid="jti:y")


async def test_a_user_cutoff_revokes_only_older_tokens_of_that_user(
    revocation_store: RevocationStore,
) -> None:
    await revocation_store.revoke_user_tokens_before("user-1", NOW, ttl_seconds=HOUR)
    assert await _revoked(revocation_store, user_id="user-1", issued_at=NOW - 1)
    assert not await _revoked(revocation_store, user_id="user-1", issued_at=NOW)
    assert not await _revoked(revocation_store, user_id="user-1", issued_at=NOW + 1)
    assert not await _revoked(revocation_store, user_id="user-2", issued_at=NOW - 1)


async def test_a_lower_later_cutoff_never_lowers_the_stored_one(
    revocation_store: RevocationStore,
) -> None:
    await revocation_store.revoke_user_tokens_before("user-1", NOW, ttl_seconds=HOUR)
    await revocation_store.revoke_user_tokens_before("user-1", NOW - 100, ttl_seconds=HOUR)
    assert await _revoked(revocation_store, user_id="user-1", issued_at=NOW - 50)
    await revocation_store.revoke_user_tokens_before("user-1", NOW + 100, ttl_seconds=HOUR)
    assert await _revoked(revocation_store, user_id="user-1", issued_at=NOW + 50)
    assert not await _revoked(revocation_store, user_id="user-1", issued_at=NOW + 100)


async def test_entries_expire_after_their_ttl_and_a_shorter_ttl_never_shortens_one(
    revocation_store: RevocationStore,
) -> None:
    await revocation_store.revoke_token("short-jti", ttl_seconds=1)
    await revocation_store.revoke_session("short-sid", ttl_seconds=1)
    await revocation_store.revoke_user_tokens_before("short-user", NOW, ttl_seconds=1)
    await revocation_store.revoke_token("long-jti", ttl_seconds=HOUR)
    await revocation_store.revoke_token("long-jti", ttl_seconds=1)
    await revocation_store.revoke_user_tokens_before("long-user", NOW, ttl_seconds=HOUR)
    await revocation_store.revoke_user_tokens_before("long-user", NOW - 10, ttl_seconds=1)
    assert await _revoked(revocation_store, jti="short-jti")
    assert await _revoked(revocation_store, sid="short-sid")
    assert await _revoked(revocation_store, user_id="short-user", issued_at=NOW - 1)

    await asyncio.sleep(1.1)

    assert not await _revoked(revocation_store, jti="short-jti")
    assert not await _revoked(revocation_store, sid="short-sid")
    assert not await _revoked(revocation_store, user_id="short-user", issued_at=NOW - 1)
    assert await _revoked(revocation_store, jti="long-jti")
    assert await _revoked(revocation_store, user_id="long-user", issued_at=NOW - 1)


@pytest.mark.parametrize("ttl", [0, -5])
async def test_a_ttl_must_be_positive(revocation_store: RevocationStore, ttl: int) -> None:
    with pytest.raises(ValueError, match="ttl_seconds"):
        await revocation_store.revoke_token("jti-1", ttl_seconds=ttl)
    assert not await _revoked(revocation_store, jti="jti-1")


# --- the memory store's bound ----------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """Replaces only the module's view of ``time``, not the event loop's clock."""
    fake = FakeClock()
    monkeypatch.setattr(revocations, "time", fake)
    return fake


async def test_the_memory_store_never_grows_past_its_bound() -> None:
    store = MemoryRevocationStore(max_entries=10_000)
    # Long-lived entries added first must outlive the flood: eviction goes by expiry, not age.
    await store.revoke_session("day-long", ttl_seconds=24 * HOUR)
    await store.revoke_user_tokens_before("day-long", NOW, ttl_seconds=24 * HOUR)
    for number in range(100_000):
        await store.revoke_token(f"jti-{number}", ttl_seconds=HOUR)
        assert len(store) <= 10_000
    assert len(store) == 10_000
    assert len(store._heap) <= 2 * 10_000 + 64
    for number in range(100_000 - 9_998, 100_000):
        assert await _revoked(store, jti=f"jti-{number}")
    assert not await _revoked(store, jti="jti-0")
    assert not await _revoked(store, jti=f"jti-{100_000 - 9_999}")
    assert await _revoked(store, sid="day-long")
    assert await _revoked(store, user_id="day-long", issued_at=NOW - 1)


async def test_a_full_memory_store_prunes_expired_entries_before_evicting_live_ones(
    clock: FakeClock,
) -> None:
    store = MemoryRevocationStore(max_entries=4)
    await store.revoke_token("expiring-1", ttl_seconds=10)
    await store.revoke_token("expiring-2", ttl_seconds=10)
    await store.revoke_token("live-1", ttl_seconds=HOUR)
    await store.revoke_user_tokens_before("live-user", NOW, ttl_seconds=HOUR)
    clock.now += 11
    await store.revoke_token("new-1", ttl_seconds=60)
    await store.revoke_token("new-2", ttl_seconds=60)
    assert len(store) == 4
    for jti in ("live-1", "new-1", "new-2"):
        assert await _revoked(store, jti=jti)
    assert await _revoked(store, user_id="live-user", issued_at=NOW - 1)

    await store.revoke_token("new-3", ttl_seconds=120)
    assert len(store) == 4
    assert not await _revoked(store, jti="new-1")  # the soonest to expire went
    assert await _revoked(store, jti="new-3")
    assert await _revoked(store, jti="live-1")


async def test_memory_entries_expire_on_the_monotonic_clock(clock: FakeClock) -> None:
    store = MemoryRevocationStore()
    await store.revoke_user_tokens_before("user-1", NOW, ttl_seconds=60)
    clock.now += 59
    assert await _revoked(store, user_id="user-1", issued_at=NOW - 1)
    clock.now += 1
    assert not await _revoked(store, user_id="user-1", issued_at=NOW - 1)
    assert len(store) == 0
    await store.revoke_user_tokens_before("user-1", NOW - 100, ttl_seconds=60)
    assert not await _revoked(store, user_id="user-1", issued_at=NOW - 1)  # old cutoff gone


# --- Redis going away --------------------------------------------------------------------


async def test_redis_down_fails_closed_fast_and_recovers_with_the_same_client(
    own_redis: RedisServer,
) -> None:
    store = RedisRevocationStore(redis_client_from_url(own_redis.url))
    try:
        await store.revoke_token("jti-1", ttl_seconds=HOUR)
        assert await _revoked(store, jti="jti-1")

        own_redis.stop()
        started = time.monotonic()
        with pytest.raises(StorageUnavailable):
            await _revoked(store, jti="jti-2")
        assert time.monotonic() - started < 3
        with pytest.raises(StorageUnavailable):
            await store.revoke_token("jti-2", ttl_seconds=HOUR)
        assert not await store.ping()

        own_redis.start()
        assert await store.ping()
        assert not await _revoked(store, jti="jti-2")  # no persistence: the data died with it
        await store.revoke_token("jti-2", ttl_seconds=HOUR)
        assert await _revoked(store, jti="jti-2")
    finally:
        await store.close()


async def test_a_redis_that_answers_the_connect_but_not_info_fails_closed_for_both_stores(
    own_redis: RedisServer,
) -> None:
    """Each new connection asks ``INFO server`` for the server's run_id before its command;
    a refused INFO (here an ACL) fails that command, for the revocations and the rate-limit
    counters sharing the client, and never lets one through."""
    client = redis_client_from_url(own_redis.url)
    store, counters = RedisRevocationStore(client), RedisRateLimitStore(client)
    admin = redis.asyncio.Redis.from_url(own_redis.url)
    try:
        await store.revoke_token("jti-1", ttl_seconds=HOUR)
        assert await _revoked(store, jti="jti-1")
        assert (await counters.hit("k", amount=5, window=60)).allowed

        await admin.execute_command("ACL", "SETUSER", "default", "-info")  # type: ignore[no-untyped-call]
        await client.connection_pool.disconnect()  # the next commands open new connections
        with pytest.raises(StorageUnavailable):
            await _revoked(store, jti="jti-1")
        with pytest.raises(StorageUnavailable):
            await counters.hit("k", amount=5, window=60)
        with pytest.raises(StorageUnavailable):
            await store.revoke_token("jti-2", ttl_seconds=HOUR)
        assert not await store.ping()

        await admin.execute_command("ACL", "SETUSER", "default", "+info")  # type: ignore[no-untyped-call]
        assert await store.ping()
        assert await _revoked(store, jti="jti-1")
        assert (await counters.hit("k", amount=5, window=60)).current == 2
    finally:
        await admin.aclose()
        await store.close()


async def test_a_restore_that_redis_restarts_during_is_done_again_before_answering(
    own_redis: RedisServer,
) -> None:
    """The first restore's write goes to a Redis that then restarts empty: its marker names
    that server, so the check restores again; a Redis that restarts during every restore
    gets a 503, not an answer."""
    store = RedisRevocationStore(redis_client_from_url(own_redis.url))
    restarts_left = 1
    restores = 0

    async def restorer() -> None:
        nonlocal restarts_left, restores
        restores += 1
        target = await store.begin_restore()
        await store.revoke_token("jti-1", ttl_seconds=HOUR)
        if restarts_left:
            restarts_left -= 1
            own_redis.stop()  # no persistence: the write above is lost
            own_redis.start()
        await store.mark_restored(target)

    store.restore_with(restorer)
    try:
        assert await _revoked(store, jti="jti-1")
        assert restores == 2
        assert await _revoked(store, jti="jti-1")
        assert restores == 2

        restarts_left = 10
        own_redis.stop()
        own_redis.start()
        with pytest.raises(StorageUnavailable):
            await _revoked(store, jti="jti-1")
        assert restores == 4
    finally:
        await store.close()


async def test_a_redis_that_never_answers_fails_closed_within_the_timeout() -> None:
    # Accepts connections (the kernel completes the handshake) but never replies.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        store = RedisRevocationStore(redis_client_from_url(f"redis://127.0.0.1:{port}/0"))
        try:
            started = time.monotonic()
            with pytest.raises(StorageUnavailable):
                await _revoked(store, jti="jti-1")
            assert time.monotonic() - started < 3
        finally:
            await store.close()


async def test_settings_choose_redis_for_both_stores_when_a_url_is_set(tmp_path: Path) -> None:
    revocations, counters = shared_stores(make_settings(tmp_path))
    assert isinstance(revocations, MemoryRevocationStore)
    assert isinstance(counters, MemoryRateLimitStore)
    revocations, counters = shared_stores(
        make_settings(tmp_path, redis_url="redis://127.0.0.1:1/0")
    )
    assert isinstance(revocations, RedisRevocationStore)
    assert isinstance(counters, RedisRateLimitStore)
    # One client, so one connection pool, for both.
    assert counters.client is revocations.client
    await revocations.close()


async def test_evictions_are_logged_at_most_once_a_minute(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    store = MemoryRevocationStore(max_entries=2)
    for number in range(10):
        await store.revoke_token(f"jti-{number}", ttl_seconds=HOUR)
    clock.now += 60
    await store.revoke_token("jti-late", ttl_seconds=HOUR)
    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert warnings == [
        "revocation store full (2 entries): evicted 1 soonest-expiring entries",
        "revocation store full (2 entries): evicted 8 soonest-expiring entries",
    ]
