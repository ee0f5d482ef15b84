"""Where rate-limit counters live: in process (bounded) or in Redis (shared by every worker).

One call per request does both jobs, counting the hit and reporting what the ``RateLimit``
headers need, so Redis costs one round trip (one ``EVALSHA``), not a second one for the
headers. That is why these stores are not the ``limits`` library's: its strategies need a
``hit`` and then a ``get_window_stats`` call, and its in-memory storage grows by one entry
per client key without any bound. The arithmetic is the sliding-window counter of
``bastion.security.ratelimits``; the Redis script decides with the same expression.

Both stores take the time from one clock: Redis's own ``TIME`` (so hosts with skewed clocks
still share windows), or ``time.time`` in process.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol

import redis.asyncio

from bastion.security.ratelimits import weighted_usage
from bastion.storage.database import StorageUnavailable
from bastion.storage.redis_client import REDIS_UNAVAILABLE, redis_answers

DEFAULT_MAX_KEYS: Final = 50_000


@dataclass(frozen=True, slots=True)
class Counted:
    """What a store reports for one hit: the decision, the two window counters (the
    current one including this hit when allowed) and the seconds into the current window."""

    allowed: bool
    previous: int
    current: int
    elapsed: float


class RateLimitStore(Protocol):
    async def hit(self, key: str, *, amount: int, window: int) -> Counted:
        """Count one request against ``key`` unless that would exceed ``amount`` per
        ``window`` seconds; raises ``StorageUnavailable`` when the store does not answer."""

    async def ping(self) -> bool:
        """Whether the store answers (readiness)."""

    async def close(self) -> None:
        """Release connections."""


class MemoryRateLimitStore:
    """Counters in this process, at most ``max_keys`` of them.

    A client rotating addresses creates a key per address; past ``max_keys`` the least
    recently used key is dropped, so memory stays bounded (about 200 bytes a key) whatever
    the attack. Dropping a key forgets that client's count, which gives an attacker nothing
    the fresh addresses did not already give them. IPv6 clients are keyed per /64 (see
    ``client_key``), so rotation needs many networks, not many addresses.

    Each hit runs without an ``await`` in between reading and writing, so concurrent
    requests on the event loop cannot both take the last unit.
    """

    def __init__(
        self, max_keys: int = DEFAULT_MAX_KEYS, clock: Callable[[], float] = time.time
    ) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self.max_keys = max_keys
        self.clock = clock
        # key -> [window index, current count, previous count]
        self._windows: OrderedDict[str, list[int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._windows)

    async def hit(self, key: str, *, amount: int, window: int) -> Counted:
        now = self.clock()
        index, elapsed = divmod(now, window)
        windows = self._windows
        entry = windows.get(key)
        if entry is None:
            entry = [int(index), 0, 0]
            windows[key] = entry
            if len(windows) > self.max_keys:
                windows.popitem(last=False)
        else:
            windows.move_to_end(key)
            if entry[0] != index:
                entry[2] = entry[1] if entry[0] == index - 1 else 0
                entry[1] = 0
                entry[0] = int(index)
        current, previous = entry[1], entry[2]
        used = weighted_usage(previous, current, elapsed, window)
        allowed = used + 1 <= amount
        if allowed:
            current += 1
            entry[1] = current
        return Counted(allowed=allowed, previous=previous, current=current, elapsed=elapsed)

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        self._windows.clear()


# KEYS[1] the client's hash {i: window index, c: current count, p: previous count};
# ARGV quota, window (ms). Returns {allowed, previous, current, elapsed ms}.
_HIT_SCRIPT = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local quota = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local index = math.floor(now / window)
local stored = redis.call('HMGET', KEYS[1], 'i', 'c', 'p')
local stored_index = tonumber(stored[1])
local current = tonumber(stored[2]) or 0
local previous = tonumber(stored[3]) or 0
if stored_index ~= index then
  if stored_index == index - 1 then previous = current else previous = 0 end
  current = 0
end
local elapsed = now - index * window
local used = math.ceil(previous * (window - elapsed) / window) + current
local allowed = 0
if used + 1 <= quota then
  allowed = 1
  current = current + 1
  redis.call('HSET', KEYS[1], 'i', index, 'c', current, 'p', previous)
  redis.call('PEXPIRE', KEYS[1], (index + 2) * window - now)
end
return {allowed, previous, current, elapsed}
"""


class RedisRateLimitStore:
    """Counters in Redis, shared by every worker and host: one hash per key that expires
    when it can no longer count, one script run per request.

    Keys are ``<prefix><policy>:<route>:<client>``; a client's key is one hash, so the
    script touches only the key it is given (Redis Cluster safe).
    """

    def __init__(self, client: redis.asyncio.Redis, *, prefix: str = "bastion:rl:") -> None:
        self.client = client
        self.prefix = prefix
        self._script = client.register_script(_HIT_SCRIPT)

    async def hit(self, key: str, *, amount: int, window: int) -> Counted:
        try:
            allowed, previous, current, elapsed_ms = await self._script(
                keys=[self.prefix + key], args=[amount, window * 1000]
            )
        except REDIS_UNAVAILABLE as error:
            raise StorageUnavailable("rate-limit store unavailable") from error
        return Counted(
            allowed=bool(allowed),
            previous=int(previous),
            current=int(current),
            elapsed=int(elapsed_ms) / 1000,
        )

    async def ping(self) -> bool:
        return await redis_answers(self.client)

    async def close(self) -> None:
        await self.client.aclose()
