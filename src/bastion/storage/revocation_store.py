"""What a revocation store promises, whatever holds it: the ``RevocationStore`` protocol.

The memory store (``revocations``) and the Redis store (``redis_revocations``) both satisfy
it, and one contract test suite runs unchanged over both.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Literal, Protocol

Restorer = Callable[[], Awaitable[None]]
Kind = Literal["sid", "jti", "user"]


class RevocationStore(Protocol):
    """Which sessions, tokens and users' older tokens are revoked, until they would expire.

    The database is the record of every revocation; a store only makes them effective
    without a query per request. ``restore_with`` names the function that re-applies the
    database's record: run at start-up, and again by a store that finds it may have lost
    revocations (wiped, or restarted or failed over to a server that may have missed some).
    """

    def restore_with(self, restorer: Restorer) -> None:
        """Use ``restorer`` when the store has lost its contents."""

    async def begin_restore(self) -> str:
        """A restore starts: which contents it writes into, for ``mark_restored``.

        For Redis, the server's ``run_id``: if Redis restarts during the restore, the marker
        names the server that lost the first writes, so the one that came back is restored
        again.
        """

    async def mark_restored(self, target: str) -> None:
        """The record has been re-applied to ``target`` (from ``begin_restore``); until the
        store loses it, or is no longer ``target``, no restore is needed."""

    async def revoke_session(self, sid: str, *, ttl_seconds: int) -> None:
        """Revoke every access token of session ``sid``."""

    async def revoke_token(self, jti: str, *, ttl_seconds: int) -> None:
        """Revoke the one access token ``jti``."""

    async def revoke_user_tokens_before(
        self, user_id: str, issued_before: int, *, ttl_seconds: int
    ) -> None:
        """Revoke every token of ``user_id`` with ``iat < issued_before`` (a Unix time).

        Used when an account is disabled or its roles change. The highest cut-off ever given
        is kept: a later call with a lower one never re-enables a token.
        """

    async def is_revoked(self, *, jti: str, sid: str, user_id: str, issued_at: int) -> bool:
        """One look-up answering for the token, its session and its user's cut-off."""

    async def ping(self) -> bool:
        """True when the store can answer now."""

    async def close(self) -> None:
        """Release connections; the store is not used afterwards."""


def checked_ttl(ttl_seconds: int) -> int:
    """``ttl_seconds`` when positive; an entry that expires at once would revoke nothing."""
    if ttl_seconds <= 0:
        raise ValueError("ttl_seconds must be positive")
    return ttl_seconds
