"""The sliding-window arithmetic, the header fields and the keys, without any store."""

from __future__ import annotations

import pytest

from bastion.security.ratelimits import (
    DEFAULT_LIMIT,
    LOGIN_LIMIT,
    Quota,
    RateLimit,
    client_key,
    parse_limit,
    rate_limit_key,
    weighted_usage,
    window_state,
)


def test_a_limit_string_parses_to_one_quota() -> None:
    item = parse_limit("600/minute")
    assert (item.amount, item.get_expiry()) == (600, 60)
    assert parse_limit("5 per 10 seconds").get_expiry() == 10


@pytest.mark.parametrize(
    "text", ["", "lots", "600/fortnight", "10/minute;20/hour", "0/minute", "-1/second"]
)
def test_anything_but_one_positive_limit_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="rate limit"):
        parse_limit(text)


def test_a_literal_limit_is_checked_when_declared() -> None:
    assert RateLimit("notes-write", "30/minute").item is not None
    with pytest.raises(ValueError):
        RateLimit("notes-write", "thirty a minute")
    with pytest.raises(ValueError, match="name"):
        RateLimit('x";q=1', "30/minute")  # the name goes into a header field


def test_the_policy_field_names_quota_and_window() -> None:
    quota = Quota.of(DEFAULT_LIMIT, parse_limit("600/minute"))
    assert quota.policy_header == b'"default";q=600;w=60'


def test_the_previous_window_counts_by_its_overlap_rounded_up() -> None:
    assert weighted_usage(previous=10, current=0, elapsed=0.0, window=60) == 10
    assert weighted_usage(previous=10, current=0, elapsed=30.0, window=60) == 5
    # 10 * 59.9 / 60 = 9.98: rounding down would hand back a request at the boundary.
    assert weighted_usage(previous=10, current=0, elapsed=0.1, window=60) == 10
    assert weighted_usage(previous=10, current=3, elapsed=59.9, window=60) == 4
    assert weighted_usage(previous=0, current=7, elapsed=12.0, window=60) == 7


def test_a_fresh_client_sees_the_quota_minus_its_request() -> None:
    state = window_state(allowed=True, previous=0, current=1, elapsed=10.0, quota=5, window=60)
    assert (state.allowed, state.remaining, state.retry_after) == (True, 4, 0)
    # The one request made counts until the end of the next window's decay reaches it:
    # at the next window's start it weighs 1 (ceil), and it is gone at that window's end.
    assert state.reset == 50 + 60
    quota = Quota.of(DEFAULT_LIMIT, parse_limit("5/minute"))
    assert state.header(quota) == b'"default";r=4;t=110'


def test_a_spent_quota_says_when_the_next_request_fits() -> None:
    # Five requests in this window, quota five: the next window starts with all five
    # weighted fully and one comes free once a fifth of that window has passed.
    state = window_state(allowed=False, previous=0, current=5, elapsed=20.0, quota=5, window=60)
    assert (state.allowed, state.remaining) == (False, 0)
    assert state.retry_after == 40 + 12
    assert state.reset == state.retry_after


def test_the_previous_windows_decay_frees_requests_within_this_window() -> None:
    # 10 last window, 0 now, quota 10, 6 s in: usage ceil(10 * 54/60) = 9, so one is free.
    free = window_state(allowed=True, previous=10, current=1, elapsed=6.0, quota=10, window=60)
    assert free.remaining == 0
    # Next unit frees when ceil(10 * (60 - e) / 60) <= 8, i.e. at e = 12.
    assert free.retry_after == 6


def test_retry_after_is_honest() -> None:
    """Waiting Retry-After seconds (and no other request) really makes room."""
    for previous in range(0, 12):
        for current in range(0, 11):
            for elapsed in (0.0, 0.5, 13.7, 30.0, 59.5):
                quota = 10
                state = window_state(
                    allowed=False,
                    previous=previous,
                    current=current,
                    elapsed=elapsed,
                    quota=quota,
                    window=60,
                )
                later = elapsed + state.retry_after
                if later < 60:
                    used = weighted_usage(previous, current, later, 60)
                else:
                    used = weighted_usage(current, 0, later - 60, 60)
                assert used + 1 <= quota, (previous, current, elapsed, state)


def test_ipv6_clients_are_counted_per_64() -> None:
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:ffff::9")
    assert client_key("2001:db8:1:2::1") == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert client_key("192.0.2.7") == "192.0.2.7"
    assert client_key(None) == "unknown"


def test_keys_name_the_route_template_or_only_the_client_for_shared_quotas() -> None:
    default = Quota.of(DEFAULT_LIMIT, parse_limit("600/minute"))
    login = Quota.of(LOGIN_LIMIT, parse_limit("10/minute"))
    route = "GET /notes/{note_id}"
    assert rate_limit_key(default, route, "ip:192.0.2.7") == f"default:{route}:ip:192.0.2.7"
    assert rate_limit_key(login, "POST /auth/token", "ip:192.0.2.7") == "login:ip:192.0.2.7"
