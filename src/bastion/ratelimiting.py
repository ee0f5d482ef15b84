"""Per-request rate limiting: the route's declared ``RateLimit``, counted once per request.

The check runs inside the route-policy dependency (``bastion.dependencies``) rather than in
a middleware of its own: that is the first point of a request where the route template (the
key's route part) and, for guarded routes, the user are known, and it costs no extra
dependency. It runs before the body is handed to the endpoint, so a login flood is refused
before any password is hashed.

The ``RateLimit-Policy`` and ``RateLimit`` fields go into the scope; the secure-headers
middleware adds them to whatever response is sent, a 429 or a 404 from the route included.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping, MutableMapping
from typing import Any, Final

from bastion.config import Settings
from bastion.errors import RateLimited
from bastion.logs import get_logger
from bastion.middleware.route_template import route_template
from bastion.middleware.secure_headers import EXTRA_HEADERS_SCOPE_KEY
from bastion.security.client_ip import client_address
from bastion.security.ratelimits import (
    DEFAULT_POLICY,
    LOGIN_POLICY,
    MAIL_POLICY,
    REGISTER_POLICY,
    Quota,
    RateLimit,
    client_key,
    parse_limit,
    rate_limit_key,
    window_state,
)
from bastion.storage import StorageUnavailable
from bastion.storage.ratelimits import RateLimitStore

log = get_logger("bastion.ratelimits")

# Set once the request has been counted: a route whose policy dependency runs twice (a
# router-level ``require`` and a ``CurrentPrincipal`` parameter) still counts once.
COUNTED_SCOPE_KEY: Final = "bastion.rate_limited"
_POLICY_HEADER: Final = b"ratelimit-policy"
_STATE_HEADER: Final = b"ratelimit"
_HEADER_DOC = {"schema": {"type": "string"}}
# The OpenAPI description of what every rate-limited route may answer (routers add it).
RATE_LIMITED_RESPONSES: dict[int | str, dict[str, Any]] = {
    429: {
        "description": (
            "Too many requests for this route's quota (problem details); retry after "
            "Retry-After seconds. Every counted response carries RateLimit-Policy and RateLimit."
        ),
        "content": {"application/problem+json": {}},
        "headers": {
            "Retry-After": {
                "description": "seconds until the next request would be allowed",
                "schema": {"type": "integer"},
            },
            "RateLimit-Policy": {
                "description": '"<name>";q=<quota>;w=<window seconds>',
                **_HEADER_DOC,
            },
            "RateLimit": {
                "description": '"<name>";r=<remaining>;t=<seconds until more fits>',
                **_HEADER_DOC,
            },
        },
    }
}
# Parsing the address (an IPv6 one reduced to its /64) costs more than the count itself; a
# server sees the same clients again and again. Bounded: rotating addresses only evicts.
_client_key = functools.lru_cache(maxsize=4096)(client_key)
# At most one "failing open" warning per this many seconds: an outage must not flood the log.
FAIL_OPEN_LOG_INTERVAL: Final = 10.0


class RateLimiter:
    """Counts requests against the configured quotas in one store (memory or Redis).

    Redis failure policy: a quota declared ``fail_closed`` (login) always answers 503 when
    the store does not; other quotas answer 503 too unless ``fail_open`` is set, in which
    case the request passes uncounted and a warning is logged.
    """

    def __init__(
        self,
        store: RateLimitStore,
        *,
        configured: Mapping[str, str],
        enabled: bool = True,
        fail_open: bool = False,
        uncounted: frozenset[str] = frozenset(),
    ) -> None:
        """``uncounted``: names whose routes are not counted unless they give their own
        limit (a toolkit app with ``rate_limit=None`` leaves its default quota off, while
        a route's explicit ``RateLimit(name, limit=...)`` still counts)."""
        self.store = store
        self.enabled = enabled
        self.fail_open = fail_open
        self.uncounted = uncounted
        self._configured = {name: parse_limit(text) for name, text in configured.items()}
        self._quotas: dict[RateLimit, Quota] = {}
        self._last_fail_open_log = 0.0

    @classmethod
    def from_settings(cls, settings: Settings, store: RateLimitStore) -> RateLimiter:
        return cls(
            store,
            configured={
                DEFAULT_POLICY: settings.rate_limit_default,
                LOGIN_POLICY: settings.rate_limit_login,
                REGISTER_POLICY: settings.rate_limit_register,
                MAIL_POLICY: settings.rate_limit_mail,
            },
            enabled=settings.rate_limits_enabled,
            fail_open=settings.rate_limit_fail_open,
        )

    def counts(self, rate_limit: RateLimit) -> bool:
        return self.enabled and (
            rate_limit.item is not None or rate_limit.name not in self.uncounted
        )

    def quota(self, rate_limit: RateLimit) -> Quota:
        """The declaration resolved against the settings (memoised: declarations are few)."""
        quota = self._quotas.get(rate_limit)
        if quota is None:
            item = rate_limit.item or self._configured.get(rate_limit.name)
            if item is None:
                raise LookupError(
                    f"rate limit {rate_limit.name!r} names no configured limit and gives none"
                )
            quota = self._quotas[rate_limit] = Quota.of(rate_limit, item)
        return quota

    async def check(
        self, scope: MutableMapping[str, Any], rate_limit: RateLimit, *, user_id: str | None
    ) -> None:
        """Counts the request; raises ``RateLimited`` (429) past the quota."""
        if COUNTED_SCOPE_KEY in scope or not self.counts(rate_limit):
            return
        scope[COUNTED_SCOPE_KEY] = True
        quota = self.quota(rate_limit)
        if user_id is not None and not quota.by_ip:
            client = "user:" + user_id
        else:
            client = "ip:" + _client_key(client_address(scope))
        # HEAD is answered by the GET route: one count for both, or alternating them would
        # double the quota. Policies run only on matched routes, so a template exists.
        method = "GET" if scope["method"] == "HEAD" else scope["method"]
        route_name = f"{method} {route_template(scope)}"
        key = rate_limit_key(quota, route_name, client)
        try:
            counted = await self.store.hit(key, amount=quota.amount, window=quota.window)
        except StorageUnavailable:
            if quota.fail_closed or not self.fail_open:
                raise
            self._log_fail_open()
            return
        state = window_state(
            allowed=counted.allowed,
            previous=counted.previous,
            current=counted.current,
            elapsed=counted.elapsed,
            quota=quota.amount,
            window=quota.window,
        )
        headers = scope.setdefault(EXTRA_HEADERS_SCOPE_KEY, [])
        headers.append((_POLICY_HEADER, quota.policy_header))
        headers.append((_STATE_HEADER, state.header(quota)))
        if not counted.allowed:
            raise RateLimited(state.retry_after)

    def _log_fail_open(self) -> None:
        now = time.monotonic()
        if now - self._last_fail_open_log >= FAIL_OPEN_LOG_INTERVAL:
            self._last_fail_open_log = now
            log.warning("rate_limit_store_unavailable_failing_open")

    async def close(self) -> None:
        await self.store.close()
