"""The store contract suites' fixtures: each store once in memory, once on a real Redis."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Protocol, TypeVar

import pytest

from bastion.storage.ratelimits import (
    MemoryRateLimitStore,
    RateLimitStore,
    RedisRateLimitStore,
)
from bastion.storage.redis_client import redis_client_from_url
from bastion.storage.revocations import (
    MemoryRevocationStore,
    RedisRevocationStore,
    RevocationStore,
)
from tests.servers.redis import RedisServer

STORE_BACKENDS = ["memory", "redis"]


class _Closable(Protocol):
    async def close(self) -> None: ...


Store = TypeVar("Store", bound=_Closable)


@contextlib.asynccontextmanager
async def _memory_or_redis(
    request: pytest.FixtureRequest, memory: Callable[[], Store], redis: Callable[..., Store]
) -> AsyncIterator[Store]:
    """The store the fixture's parameter names, closed after the test."""
    if request.param == "memory":
        store = memory()
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        # A fresh prefix per test keeps tests independent on the worker's shared server.
        store = redis(redis_client_from_url(server.url), prefix=f"test:{uuid.uuid4().hex}:")
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture(params=STORE_BACKENDS)
async def rate_limit_store(request: pytest.FixtureRequest) -> AsyncIterator[RateLimitStore]:
    stores: contextlib.AbstractAsyncContextManager[RateLimitStore] = _memory_or_redis(
        request, MemoryRateLimitStore, RedisRateLimitStore
    )
    async with stores as store:
        yield store


@pytest.fixture(params=STORE_BACKENDS)
async def revocation_store(request: pytest.FixtureRequest) -> AsyncIterator[RevocationStore]:
    stores: contextlib.AbstractAsyncContextManager[RevocationStore] = _memory_or_redis(
        request, MemoryRevocationStore, RedisRevocationStore
    )
    async with stores as store:
        yield store
