"""The one Redis client of a process, shared by the revocation and rate-limit stores.

It answers or fails within about two seconds and never hangs: a store that cannot reach
Redis turns the errors below into ``StorageUnavailable`` (503), never into an "allow".
"""

from __future__ import annotations

from typing import Final

import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import BusyLoadingError, ReadOnlyError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

REDIS_CONNECT_TIMEOUT: Final = 2.0
REDIS_READ_TIMEOUT: Final = 2.0

# Connection refused, reset, a replica promoted mid-failover, a server still loading its data:
# the store cannot answer, which is a 503, not a 500 and never an "allow".
# ResponseError covers a full Redis refusing writes (OOM under noeviction): fail closed.
REDIS_UNAVAILABLE = (
    RedisConnectionError,
    RedisTimeoutError,
    BusyLoadingError,
    ReadOnlyError,
    ResponseError,
    OSError,
)


def redis_client_from_url(url: str) -> redis.asyncio.Redis:
    """A client with short timeouts and one immediate retry on a connection error.

    The retry covers a pooled connection that Redis closed (a restart, an idle timeout); a
    timeout is not retried, since it would only double the wait. Revocations are idempotent;
    a rate-limit hit retried after a lost reply may count twice, which errs on the strict side.
    """
    return redis.asyncio.Redis.from_url(
        url,
        socket_connect_timeout=REDIS_CONNECT_TIMEOUT,
        socket_timeout=REDIS_READ_TIMEOUT,
        retry=Retry(NoBackoff(), retries=1, supported_errors=(RedisConnectionError,)),
    )


async def redis_answers(client: redis.asyncio.Redis) -> bool:
    """Whether Redis answers a PING (readiness); its failures are a False, never a raise."""
    try:
        return bool(await client.ping())
    except REDIS_UNAVAILABLE:
        return False
