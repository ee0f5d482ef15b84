"""The one Redis client of a process, shared by the revocation and rate-limit stores.

It answers or fails within about two seconds and never hangs: a store that cannot reach
Redis turns the errors below into ``StorageUnavailable`` (503), never into an "allow".

Every connection it opens first asks the server for its ``run_id`` (``INFO server``; see
``ServerIdentity``): the revocation store compares it with its marker key to notice a Redis
that restarted (from an older snapshot) or failed over, without a round trip per check.
"""

from __future__ import annotations

from typing import Final

import redis.asyncio
from redis.asyncio.connection import AbstractConnection
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


class ServerIdentityUnknown(RedisConnectionError):
    """The server accepted the connection but did not say which instance it is."""


class ServerIdentity:
    """The ``run_id`` of the Redis server this client's connections reach.

    ``connected`` is the connection pool's ``redis_connect_func``: each new connection does the
    usual handshake (``AUTH``, ``SELECT``, ...), then ``INFO server``, and records the
    ``run_id`` before the command it was opened for is sent. A Redis server gets a new
    ``run_id`` at every start, and a replica has its own, so the value changes when Redis
    restarts (with or without its data) or fails over; since either drops every connection,
    the first command afterwards goes through a new connection and updates it first.

    A connection whose ``INFO`` fails (an error, a timeout, an ACL without ``+info``, no
    ``run_id`` in the answer) is closed and the command fails with a Redis error, which the
    stores turn into ``StorageUnavailable``: never a connection of unknown identity.
    """

    def __init__(self) -> None:
        self.run_id: str | None = None

    async def connected(self, connection: AbstractConnection) -> None:
        """Replaces redis-py's ``on_connect`` (which it calls first)."""
        try:
            await connection.on_connect()
            await connection.send_command("INFO", "server", check_health=False)
            self.run_id = run_id_in(await connection.read_response())
        except BaseException:
            # redis-py closes the connection on a RedisError only; a cancellation or any
            # other error must not leave it open with its handshake half done either.
            await connection.disconnect(nowait=True)
            raise

    async def ask(self, client: redis.asyncio.Redis) -> str:
        """The ``run_id`` of the server a command of ``client`` reaches now (one ``INFO``
        round trip), remembered as the current one."""
        pool = client.connection_pool
        connection: AbstractConnection = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            await connection.send_command("INFO", "server")
            # Raw: the client's INFO parser would turn an all-digit run_id into an int.
            run_id = run_id_in(await connection.read_response())
        finally:
            await pool.release(connection)
        self.run_id = run_id
        return run_id


def run_id_in(info: object) -> str:
    """The ``run_id`` line of a raw ``INFO server`` answer (bytes or text)."""
    text = info.decode("utf-8", "replace") if isinstance(info, bytes) else str(info)
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name == "run_id" and value.strip():
            return value.strip()
    raise ServerIdentityUnknown("INFO server names no run_id")


def server_identity(client: redis.asyncio.Redis) -> ServerIdentity:
    """The ``ServerIdentity`` of ``client``'s connection pool, installed if it has none
    (connections the pool opened before then are not asked)."""
    kwargs = client.connection_pool.connection_kwargs
    connect_func = kwargs.get("redis_connect_func")
    if connect_func is None:
        identity = ServerIdentity()
        kwargs["redis_connect_func"] = identity.connected
        return identity
    installed = getattr(connect_func, "__self__", None)
    if not isinstance(installed, ServerIdentity):
        raise TypeError("the Redis client already has another connect function")
    return installed


def redis_client_from_url(url: str) -> redis.asyncio.Redis:
    """A client with short timeouts, one immediate retry on a connection error, and a
    ``ServerIdentity`` learning each new connection's server.

    The retry covers a pooled connection that Redis closed (a restart, an idle timeout); a
    timeout is not retried, since it would only double the wait. Revocations are idempotent;
    a rate-limit hit retried after a lost reply may count twice, which errs on the strict side.
    """
    return redis.asyncio.Redis.from_url(
        url,
        socket_connect_timeout=REDIS_CONNECT_TIMEOUT,
        socket_timeout=REDIS_READ_TIMEOUT,
        retry=Retry(NoBackoff(), retries=1, supported_errors=(RedisConnectionError,)),
        # A coroutine function (a bound method), which redis-py awaits; not a callable object.
        redis_connect_func=ServerIdentity().connected,
    )


async def redis_answers(client: redis.asyncio.Redis) -> bool:
    """Whether Redis answers a PING (readiness); its failures are a False, never a raise."""
    try:
        return bool(await client.ping())
    except REDIS_UNAVAILABLE:
        return False
