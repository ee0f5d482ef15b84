"""Revocation state that every access-token check consults: sessions, tokens, and per-user cut-offs.

Access tokens are checked on every request, so this is a key-value lookup, never a database
query: one dict lookup per kind in process (``MemoryRevocationStore``), or one ``MGET`` round
trip to Redis (``RedisRevocationStore``). Each entry expires when the tokens it concerns
would have expired anyway; callers pass that remaining lifetime as ``ttl_seconds``.

Both stores fail closed. Redis not answering becomes ``StorageUnavailable`` (503) within the
socket timeout, so a token is never accepted because its revocation could not be looked up.
Re-revoking never weakens an entry: the later expiry and the higher user cut-off are kept.

This module holds the memory store; the protocol is ``revocation_store`` and the Redis store
``redis_revocations``, both also importable from here.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import time
from typing import Final

from bastion.storage.redis_revocations import RedisRevocationStore
from bastion.storage.revocation_store import Kind, Restorer, RevocationStore, checked_ttl

logger = logging.getLogger(__name__)

DEFAULT_MAX_ENTRIES: Final = 100_000

_Key = tuple[Kind, str]


class MemoryRevocationStore:
    """In-process revocations for a single-process deployment (no Redis configured).

    Expiry uses ``time.monotonic()``: a wall-clock step (NTP, an operator's ``date``) can
    neither expire an entry early nor keep it forever. The user cut-offs themselves are Unix
    times compared with the tokens' ``iat``; only their lifetime is monotonic.

    Bounded at ``max_entries`` entries in all. When a new entry would exceed it, expired
    entries are pruned first; if it is still full, the entries that expire soonest are
    evicted (and a warning is logged). An evicted entry can only re-enable tokens that would
    expire before those of every entry kept, so the window an eviction re-opens is the
    smallest possible. Refusing new revocations instead would let whoever fills the store
    block the revocation that matters most, the newest (an account being disabled now).
    Size ``max_entries`` above the revocations expected within one token lifetime, or use
    Redis, which is also the only choice with more than one process.

    ``is_revoked`` is three dict look-ups; writes are O(log n) amortised through a heap of
    expiry times whose stale entries are dropped lazily and compacted when they dominate.
    """

    def restore_with(self, restorer: Restorer) -> None:
        """An in-process store is only lost with its process, whose start-up restores."""

    async def begin_restore(self) -> str:
        return "memory"

    async def mark_restored(self, target: str) -> None:
        del target  # nothing to mark: this store is lost only with its process

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self._expiry: dict[_Key, float] = {}
        self._cutoffs: dict[str, int] = {}
        # (expires_at, insertion number, key): of equal expiries the older goes first. An item
        # is stale, and skipped when popped, unless _expiry[key] still equals its expires_at.
        self._heap: list[tuple[float, int, _Key]] = []
        self._counter = itertools.count()
        self._evicted_unreported = 0
        self._last_eviction_warning: float | None = None

    def __len__(self) -> int:
        return len(self._expiry)

    async def revoke_session(self, sid: str, *, ttl_seconds: int) -> None:
        self._put(("sid", sid), checked_ttl(ttl_seconds))

    async def revoke_token(self, jti: str, *, ttl_seconds: int) -> None:
        self._put(("jti", jti), checked_ttl(ttl_seconds))

    async def revoke_user_tokens_before(
        self, user_id: str, issued_before: int, *, ttl_seconds: int
    ) -> None:
        self._put(("user", user_id), checked_ttl(ttl_seconds))  # evicts others, never this key
        self._cutoffs[user_id] = max(issued_before, self._cutoffs.get(user_id, issued_before))

    async def is_revoked(self, *, jti: str, sid: str, user_id: str, issued_at: int) -> bool:
        now = time.monotonic()
        if self._live(("jti", jti), now) or self._live(("sid", sid), now):
            return True
        return self._live(("user", user_id), now) and issued_at < self._cutoffs[user_id]

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        self._expiry.clear()
        self._cutoffs.clear()
        self._heap.clear()

    def _live(self, key: _Key, now: float) -> bool:
        expires_at = self._expiry.get(key)
        if expires_at is None:
            return False
        if expires_at <= now:
            self._delete(key)
            return False
        return True

    def _put(self, key: _Key, ttl_seconds: int) -> None:
        now = time.monotonic()
        self._prune_expired(now)
        expires_at = now + ttl_seconds
        current = self._expiry.get(key)
        if current is not None and current >= expires_at:
            return
        if current is None and len(self._expiry) >= self.max_entries:
            self._evict_soonest(len(self._expiry) - self.max_entries + 1)
        self._expiry[key] = expires_at
        heapq.heappush(self._heap, (expires_at, next(self._counter), key))
        if len(self._heap) > 2 * len(self._expiry) + 64:
            # Dict order is first-revocation order, so ties still go oldest first.
            self._heap = [(when, next(self._counter), item) for item, when in self._expiry.items()]
            heapq.heapify(self._heap)

    def _prune_expired(self, now: float) -> None:
        while self._heap and self._heap[0][0] <= now:
            expires_at, _, key = heapq.heappop(self._heap)
            if self._expiry.get(key) == expires_at:
                self._delete(key)

    def _evict_soonest(self, count: int) -> None:
        evicted = 0
        while evicted < count and self._heap:
            expires_at, _, key = heapq.heappop(self._heap)
            if self._expiry.get(key) == expires_at:
                self._delete(key)
                evicted += 1
        self._evicted_unreported += evicted
        now = time.monotonic()
        # A flood evicts on every write; one line a minute says so without drowning the log.
        if self._last_eviction_warning is None or now - self._last_eviction_warning >= 60:
            logger.warning(
                "revocation store full (%d entries): evicted %d soonest-expiring entries",
                self.max_entries,
                self._evicted_unreported,
            )
            self._last_eviction_warning = now
            self._evicted_unreported = 0

    def _delete(self, key: _Key) -> None:
        del self._expiry[key]
        if key[0] == "user":
            del self._cutoffs[key[1]]


__all__ = [
    "DEFAULT_MAX_ENTRIES",
    "MemoryRevocationStore",
    "RedisRevocationStore",
    "Restorer",
    "RevocationStore",
]
