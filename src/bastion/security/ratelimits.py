"""Rate-limit policies, the sliding-window arithmetic and the IETF ``RateLimit`` fields.

Pure: no I/O, no clock of its own. The stores (``bastion.storage.ratelimits``) keep two
counters per key and call ``window_state`` with what they hold; a route declares which
``RateLimit`` applies next to its access policy (``bastion.dependencies``).

The algorithm is the sliding-window counter that the ``limits`` library calls
``sliding-window-counter``: a counter for the current fixed window and one for the previous,
the previous one weighted by how much of it still overlaps the sliding window. Two integers
per client whatever the quota (a moving window keeps one timestamp per request: 600 of them
per client at the default quota), and unlike a fixed window no double burst at a boundary.
One difference from ``limits``: the previous window's weighted count is rounded *up*, so a
client that spent its quota just before a boundary does not get a request back at once.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass, field
from functools import lru_cache

import limits

DEFAULT_POLICY = "default"
LOGIN_POLICY = "login"
REGISTER_POLICY = "register"
MAIL_POLICY = "mail"
# IPv6 clients are counted per /64: one subscriber usually gets a whole /64 (RFC 6177), so
# counting single addresses would hand an attacker 2**64 fresh quotas.
IPV6_CLIENT_PREFIX = 64


@dataclass(frozen=True, slots=True)
class RateLimit:
    """What a route declares: which limit applies, and to whom it counts.

    ``limit`` None takes the quota from the setting of the same name (``default``, ``login``
    and ``register`` from ``BASTION_RATE_LIMIT_DEFAULT``, ``_LOGIN`` and ``_REGISTER``);
    otherwise it is a ``limits`` string such as ``"30/minute"`` or ``"5 per 10 seconds"``.

    ``per_route``: each route has its own counter per client; otherwise every route that
    declares this limit shares one (an attacker must not double the login rate by alternating
    two login endpoints). ``by_ip``: always count per client address, even for a known user.
    ``fail_closed``: refuse with 503 when the shared store does not answer, whatever
    ``BASTION_RATE_LIMIT_FAIL_OPEN`` says.
    """

    name: str
    limit: str | None = None
    per_route: bool = True
    by_ip: bool = False
    fail_closed: bool = False
    item: limits.RateLimitItem | None = field(default=None, init=False, compare=False)

    def __post_init__(self) -> None:
        if not self.name.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"rate-limit name must be [A-Za-z0-9_-]: {self.name!r}")
        if self.limit is not None:
            object.__setattr__(self, "item", parse_limit(self.limit))


DEFAULT_LIMIT = RateLimit(DEFAULT_POLICY)
LOGIN_LIMIT = RateLimit(LOGIN_POLICY, per_route=False, by_ip=True, fail_closed=True)
# Each registration hashes a password (~20 ms of CPU at OWASP's parameters): far fewer per
# address than the default quota.
REGISTER_LIMIT = RateLimit(REGISTER_POLICY, by_ip=True, fail_closed=True)
# Each request may send a mail: forgot-password per address (a public route), a verification
# request per user, each route its own counter. Fails closed: an unmetered outage is a mail
# bomb. (The per-account throttle in identity.email_flows bounds many addresses together.)
MAIL_LIMIT = RateLimit(MAIL_POLICY, fail_closed=True)


def parse_limit(text: str) -> limits.RateLimitItem:
    """One limit in ``limits``' notation (``"600/minute"``); ValueError for anything else,
    including several limits at once (a route has one quota, so its headers have one)."""
    try:
        items = limits.parse_many(text)
    except ValueError:
        raise ValueError(f"not a rate limit such as '600/minute': {text!r}") from None
    if len(items) != 1:
        raise ValueError(f"exactly one rate limit expected: {text!r}")
    item = items[0]
    if item.amount < 1:
        raise ValueError(f"a rate limit needs a quota of at least 1: {text!r}")
    return item


@dataclass(frozen=True, slots=True)
class Quota:
    """A resolved limit: its name for the headers, the quota and the window in seconds."""

    name: str
    amount: int
    window: int
    per_route: bool
    by_ip: bool
    fail_closed: bool
    policy_header: bytes

    @classmethod
    def of(cls, rate_limit: RateLimit, item: limits.RateLimitItem) -> Quota:
        window = int(item.get_expiry())
        header = f'"{rate_limit.name}";q={item.amount};w={window}'.encode()
        return cls(
            name=rate_limit.name,
            amount=item.amount,
            window=window,
            per_route=rate_limit.per_route,
            by_ip=rate_limit.by_ip,
            fail_closed=rate_limit.fail_closed,
            policy_header=header,
        )


@dataclass(frozen=True, slots=True)
class WindowState:
    """The outcome of one hit: allowed or not, what is left, and when more becomes free."""

    allowed: bool
    remaining: int
    # Seconds until at least one more request is allowed than now (0: nothing is used).
    reset: int
    # Seconds until the next request would be allowed (0 when it would be now).
    retry_after: int

    def header(self, quota: Quota) -> bytes:
        """The ``RateLimit`` field: ``"<name>";r=<remaining>;t=<seconds>``."""
        return f'"{quota.name}";r={self.remaining};t={self.reset}'.encode()


def weighted_usage(previous: int, current: int, elapsed: float, window: float) -> int:
    """Requests counted against the sliding window ``elapsed`` seconds into the current
    fixed window. The Redis script computes the same expression in Lua."""
    return math.ceil(previous * (window - elapsed) / window) + current


def window_state(
    *, allowed: bool, previous: int, current: int, elapsed: float, quota: int, window: float
) -> WindowState:
    """The state after a hit; ``current`` already includes the hit when it was allowed."""
    used = weighted_usage(previous, current, elapsed, window)
    remaining = max(0, quota - used)
    reset = (
        _seconds_until_usage_at_most(used - 1, previous, current, elapsed, window) if used else 0
    )
    retry_after = _seconds_until_usage_at_most(quota - 1, previous, current, elapsed, window)
    return WindowState(
        allowed=allowed,
        remaining=remaining,
        reset=math.ceil(reset),
        retry_after=math.ceil(retry_after),
    )


def _seconds_until_usage_at_most(
    target: int, previous: int, current: int, elapsed: float, window: float
) -> float:
    """How long, without further requests, until the weighted usage is at most ``target``.

    Within this window the previous count decays: ``ceil(p * (w - e) / w) <= k`` holds once
    ``e >= w - k * w / p``. In the next window today's count becomes the previous one and
    decays the same way from the window's start.
    """
    if target < 0:
        target = 0
    allowance = target - current
    if allowance >= 0:
        if previous == 0:
            return 0.0
        needed = window - allowance * window / previous
        if needed <= elapsed:
            return 0.0
        if needed < window:
            return needed - elapsed
    until_next_window = window - elapsed
    if current <= target:
        return until_next_window
    return until_next_window + window - target * window / current


@lru_cache(maxsize=4096)
def client_key(address: str | None) -> str:
    """The client part of a key: the address, an IPv6 address reduced to its /64."""
    if not address:
        return "unknown"
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        network = ipaddress.IPv6Network((parsed, IPV6_CLIENT_PREFIX), strict=False)
        return f"{network.network_address}/{IPV6_CLIENT_PREFIX}"
    return str(parsed)


def rate_limit_key(quota: Quota, route: str, client: str) -> str:
    """``<policy>:<route>:<client>``; the route is ``METHOD /template`` (never the raw
    path, whose every variant would be a fresh quota), left out for shared limits."""
    if quota.per_route:
        return f"{quota.name}:{route}:{client}"
    return f"{quota.name}:{client}"
