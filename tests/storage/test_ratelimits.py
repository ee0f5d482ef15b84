"""Rate-limit counters: one contract over memory and a real Redis, the memory bound, and
Redis going away."""

from __future__ import annotations

import asyncio
import time
import tracemalloc

import pytest

from bastion.security.ratelimits import weighted_usage
from bastion.storage import StorageUnavailable
from bastion.storage.ratelimits import MemoryRateLimitStore, RateLimitStore, RedisRateLimitStore
from bastion.storage.redis_client import redis_client_from_url
from tests.servers.postgres import free_port
from tests.servers.redis import RedisServer


async def test_exactly_the_quota_passes_under_concurrency(rate_limit_store: RateLimitStore) -> None:
    results = await asyncio.gather(
        *(
            rate_limit_store.hit("default:GET /x:ip:192.0.2.1", amount=20, window=3600)
            for _ in range(60)
        )
    )
    assert sum(result.allowed for result in results) == 20
    refused = [result for result in results if not result.allowed]
    assert all(result.current == 20 for result in refused)


async def test_keys_count_apart(rate_limit_store: RateLimitStore) -> None:
    for _ in range(3):
        assert (await rate_limit_store.hit("k:a", amount=3, window=3600)).allowed
    assert not (await rate_limit_store.hit("k:a", amount=3, window=3600)).allowed
    assert (await rate_limit_store.hit("k:b", amount=3, window=3600)).allowed


async def test_a_hit_reports_the_counters_the_headers_need(
    rate_limit_store: RateLimitStore,
) -> None:
    first = await rate_limit_store.hit("k", amount=5, window=3600)
    second = await rate_limit_store.hit("k", amount=5, window=3600)
    assert (first.allowed, first.previous, first.current) == (True, 0, 1)
    assert (second.previous, second.current) == (0, 2)
    assert 0 <= second.elapsed < 3600


async def test_the_window_slides(rate_limit_store: RateLimitStore) -> None:
    """A one-second window: spent now, and free again two windows on."""
    assert (await rate_limit_store.hit("k", amount=1, window=1)).allowed
    assert not (await rate_limit_store.hit("k", amount=1, window=1)).allowed
    await asyncio.sleep(2.05)
    assert (await rate_limit_store.hit("k", amount=1, window=1)).allowed


@pytest.mark.parametrize(
    ("previous", "current", "elapsed"),
    [
        (10, 0, 0.0),
        (10, 0, 0.01),
        (10, 0, 6.0),
        (10, 0, 5.99),
        (9, 1, 30.0),
        (4, 5, 59.99),
        (0, 9, 1.0),
        (0, 10, 1.0),
        (3, 7, 45.0),
    ],
)
async def test_the_memory_store_decides_with_the_shared_arithmetic(
    previous: int, current: int, elapsed: float
) -> None:
    """The in-process store decides with ``weighted_usage``, anywhere in the window."""
    index = 28_000_000
    store = MemoryRateLimitStore(clock=FakeClock(index * 60 + elapsed))
    store._windows["k"] = [index, current, previous]
    result = await store.hit("k", amount=10, window=60)
    expected = weighted_usage(previous, current, elapsed, 60) + 1 <= 10
    assert result.allowed is expected
    assert result.current == current + expected


async def test_the_memory_store_stays_bounded_under_100_000_addresses() -> None:
    store = MemoryRateLimitStore(max_keys=10_000)
    tracemalloc.start()
    try:
        for number in range(10_000):
            await store.hit(_address_key(number), amount=5, window=60)
        baseline, _ = tracemalloc.get_traced_memory()
        for number in range(10_000, 110_000):
            await store.hit(_address_key(number), amount=5, window=60)
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(store) == 10_000
    # Ten times the keys went through; the memory held did not grow with them.
    assert after - baseline < 1_000_000, after - baseline


async def test_the_least_recently_used_key_is_the_one_dropped() -> None:
    store = MemoryRateLimitStore(max_keys=2)
    await store.hit("busy", amount=1, window=3600)
    await store.hit("idle", amount=1, window=3600)
    await store.hit("busy", amount=1, window=3600)  # refused, but used: moves to the back
    await store.hit("new", amount=1, window=3600)
    assert not (await store.hit("busy", amount=1, window=3600)).allowed
    assert (await store.hit("idle", amount=1, window=3600)).allowed  # forgotten


async def test_an_unreachable_redis_is_unavailable_fast_never_allowed() -> None:
    store = RedisRateLimitStore(redis_client_from_url(f"redis://127.0.0.1:{free_port()}/0"))
    try:
        started = time.monotonic()
        with pytest.raises(StorageUnavailable):
            await store.hit("k", amount=10, window=60)
        assert time.monotonic() - started < 3
        assert not await store.ping()
    finally:
        await store.close()


async def test_redis_counts_again_once_it_is_back(own_redis: RedisServer) -> None:
    store = RedisRateLimitStore(redis_client_from_url(own_redis.url))
    try:
        assert (await store.hit("k", amount=10, window=60)).allowed
        own_redis.stop()
        with pytest.raises(StorageUnavailable):
            await store.hit("k", amount=10, window=60)
        own_redis.start()
        assert (await store.hit("k", amount=10, window=60)).allowed
    finally:
        await store.close()


def _address_key(number: int) -> str:
    return f"default:GET /x:ip:10.{number >> 16}.{number >> 8 & 255}.{number & 255}"


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
