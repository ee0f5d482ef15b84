"""Revocations in Redis, shared by every process: one ``MGET`` answers a token check.

Redis not answering becomes ``StorageUnavailable`` (503) within the socket timeout, so a
token is never accepted because its revocation could not be looked up. A Redis that may have
lost revocations is restored from the database before it answers: one that lost everything
(restarted without persistence, flushed, failed over to an empty replica) has no marker key,
and one that restarted from an older snapshot or failed over to a replica that missed the
last writes has a marker naming another server (see ``RedisRevocationStore``).
"""

from __future__ import annotations

import asyncio
import logging

import redis.asyncio

from bastion.storage.database import StorageUnavailable
from bastion.storage.outages import Outage
from bastion.storage.redis_client import (
    REDIS_UNAVAILABLE,
    redis_answers,
    server_identity,
)
from bastion.storage.revocation_store import Kind, Restorer, checked_ttl

# The revocation log's name, wherever in bastion.storage the store is defined.
logger = logging.getLogger("bastion.storage.revocations")


# A check restores at most this often before it answers 503: each restore is followed by a
# look-up that must find the marker of the server it reads from, or Redis changed meanwhile.
RESTORE_ATTEMPTS = 2
RECORD_NOT_RESTORED = Outage("redis", "RecordNotRestored")


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

    The marker key ``<prefix>restored`` holds the ``run_id`` of the Redis server the
    database's record was last restored into. The client learns the ``run_id`` of the server
    it talks to whenever it opens a connection (``ServerIdentity``), so the marker read with a
    check's ``MGET`` tells, at no extra round trip, whether this server holds the record:

    - no marker: Redis lost everything (no persistence, ``FLUSHALL``, an empty replica);
    - a marker naming another server: Redis restarted (its ``run_id`` changes at every start)
      possibly from an older snapshot, or a replica that may have missed the last writes took
      over. Either may have lost the newest revocations while keeping the marker.

    Either way the check restores the record before it answers. A restart that kept
    everything (AOF, a clean shutdown's snapshot) costs one needless restore, of the
    revocations still alive, by the first process to check. A marker ``1`` (written by
    earlier versions) names no server, so it too is restored over once.

    This assumes that all connections of a process reach one server at a time, as with a
    direct connection or a failover that closes the old primary's connections.
    """

    def __init__(self, client: redis.asyncio.Redis, *, prefix: str = "bastion:revoked:") -> None:
        self.client = client
        self.prefix = prefix
        self._revoke = client.register_script(_REVOKE_SCRIPT)
        self._server = server_identity(client)
        self._marker = f"{prefix}restored"
        self._restorer: Restorer | None = None
        self._restoring = asyncio.Lock()

    def restore_with(self, restorer: Restorer) -> None:
        self._restorer = restorer

    async def begin_restore(self) -> str:
        """The ``run_id`` of the server the restore now starting writes into.

        Asked with a command of its own (rather than the last connection's), and passed to
        ``mark_restored`` afterwards: if Redis restarts during the restore, the marker then
        names the server that took the first writes and lost them, so the one that came back
        is not taken for restored.
        """
        try:
            return await self._server.ask(self.client)
        except REDIS_UNAVAILABLE as error:
            raise StorageUnavailable from error

    async def mark_restored(self, target: str) -> None:
        try:
            await self.client.set(self._marker, target)
        except REDIS_UNAVAILABLE as error:
            raise StorageUnavailable from error

    def _holds_record(self, marker: object) -> bool:
        """Whether ``marker`` (the marker key's value) says this server holds the record."""
        run_id = self._server.run_id
        if marker is None or run_id is None:
            return False
        text = marker.decode("utf-8", "replace") if isinstance(marker, bytes) else str(marker)
        return text == run_id

    async def _restore_record(self) -> None:
        if self._restorer is None:
            return
        async with self._restoring:
            try:
                marker = await self.client.get(self._marker)
            except REDIS_UNAVAILABLE as error:
                raise StorageUnavailable from error
            if not self._holds_record(marker):  # not already done by a concurrent check
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
        for attempt in range(RESTORE_ATTEMPTS + 1):
            try:
                token, session, cutoff, restored = await self.client.mget(keys)
            except REDIS_UNAVAILABLE as error:
                raise StorageUnavailable from error
            if self._restorer is None or self._holds_record(restored):
                break
            if attempt == RESTORE_ATTEMPTS:
                # Redis changed again during each restore: no answer is safe yet.
                raise StorageUnavailable(outage=RECORD_NOT_RESTORED)
            await self._restore_record()
        if token is not None or session is not None:
            return True
        return cutoff is not None and issued_at < int(cutoff)

    async def ping(self) -> bool:
        return await redis_answers(self.client)

    async def close(self) -> None:
        await self.client.aclose()
