"""Revocations in Redis, shared by every process: one ``MGET`` answers a token check.

Redis not answering becomes ``StorageUnavailable`` (503) within the socket timeout, so a
token is never accepted because its revocation could not be looked up. A Redis that lost its
contents (restarted without persistence, flushed, failed over to an empty replica) is
noticed by a missing marker key and restored from the database before it answers.
"""

from __future__ import annotations

import asyncio
import logging

import redis.asyncio

from bastion.storage.database import StorageUnavailable
from bastion.storage.redis_client import REDIS_UNAVAILABLE, redis_answers
from bastion.storage.revocation_store import Kind, Restorer, checked_ttl

# The revocation log's name, wherever in bastion.storage the store is defined.
logger = logging.getLogger("bastion.storage.revocations")


# Keeps the higher value and the later expiry, atomically: a revocation is never weakened by
# a later, weaker one. KEYS[1] the entry; ARGV[1] its value (an integer); ARGV[2] its TTL in ms.
_REVOKE_SCRIPT = """
local value = ARGV[1]
local ttl = tonumber(ARGV[2])
local current = redis.call('GET', KEYS[1])
if current and tonumber(current) > tonumber(value) then value = current end
local remaining = redis.call('PTTL', KEYS[1])
if remaining == -1 then
  redis.call('SET', KEYS[1], value, 'KEEPTTL')
  return 0
end
if remaining > ttl then ttl = remaining end
redis.call('SET', KEYS[1], value, 'PX', ttl)
return 1
"""


class RedisRevocationStore:
    """Revocations shared by every process, as Redis keys that expire with their tokens.

    Keys: ``<prefix>sid:<sid>`` and ``<prefix>jti:<jti>`` (value 1) and
    ``<prefix>user:<user_id>`` (value: the cut-off, Unix seconds). The kind comes before the
    identifier, so identifiers containing ``:`` cannot collide across kinds.
    """

    def __init__(self, client: redis.asyncio.Redis, *, prefix: str = "bastion:revoked:") -> None:
        self.client = client
        self.prefix = prefix
        self._revoke = client.register_script(_REVOKE_SCRIPT)
        # Present while Redis holds the database's record. A Redis restarted without
        # persistence, flushed or failed over to an empty replica loses it, and with it
        # every revocation: the marker's absence is how a check notices and restores.
        self._marker = f"{prefix}restored"
        self._restorer: Restorer | None = None
        self._restoring = asyncio.Lock()

    def restore_with(self, restorer: Restorer) -> None:
        self._restorer = restorer

    async def mark_restored(self) -> None:
        try:
            await self.client.set(self._marker, "1")
        except REDIS_UNAVAILABLE as error:
            raise StorageUnavailable from error

    async def _restore_after_wipe(self) -> None:
        if self._restorer is None:
            return
        async with self._restoring:
            try:
                restored = await self.client.exists(self._marker)
            except REDIS_UNAVAILABLE as error:
                raise StorageUnavailable from error
            if not restored:  # not already done by a concurrent check
                logger.warning("revocations missing from Redis: restoring from the database")
                await self._restorer()

    def _key(self, kind: Kind, identifier: str) -> str:
        return f"{self.prefix}{kind}:{identifier}"

    async def _set(self, key: str, value: int, ttl_seconds: int) -> None:
        try:
            await self._revoke(keys=[key], args=[value, checked_ttl(ttl_seconds) * 1000])
        except REDIS_UNAVAILABLE as error:
            raise StorageUnavailable from error

    async def revoke_session(self, sid: str, *, ttl_seconds: int) -> None:
        await self._set(self._key("sid", sid), 1, ttl_seconds)

    async def revoke_token(self, jti: str, *, ttl_seconds: int) -> None:
        await self._set(self._key("jti", jti), 1, ttl_seconds)

    async def revoke_user_tokens_before(
        self, user_id: str, issued_before: int, *, ttl_seconds: int
    ) -> None:
        await self._set(self._key("user", user_id), issued_before, ttl_seconds)

    async def is_revoked(self, *, jti: str, sid: str, user_id: str, issued_at: int) -> bool:
        keys = [
            self._key("jti", jti),
            self._key("sid", sid),
            self._key("user", user_id),
            self._marker,
        ]
        try:
            token, session, cutoff, restored = await self.client.mget(keys)
        except REDIS_UNAVAILABLE as error:
            raise StorageUnavailable from error
        if restored is None and self._restorer is not None:
            await self._restore_after_wipe()
            try:
                token, session, cutoff, _ = await self.client.mget(keys)
            except REDIS_UNAVAILABLE as error:
                raise StorageUnavailable from error
        if token is not None or session is not None:
            return True
        return cutoff is not None and issued_at < int(cutoff)

    async def ping(self) -> bool:
        return await redis_answers(self.client)

    async def close(self) -> None:
        await self.client.aclose()
