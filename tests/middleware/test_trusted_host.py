"""TrustedHostMiddleware: any Host not on the list, or not exactly one, gets 400 problem+json."""

from __future__ import annotations

import json
from typing import Any

import pytest
from starlette.types import Message, Receive, Scope, Send

from bastion.middleware import TrustedHostMiddleware
from bastion.middleware.request_id import REQUEST_ID_SCOPE_KEY
from bastion.middleware.trusted_host import MAX_KNOWN_GOOD_HOSTS, host_name

ALLOWED = ["api.example.com", "LocalHost", "127.0.0.1", "[::1]", "2001:DB8::1", "*.example.org"]


async def _call(
    host_headers: list[bytes], *, allowed: list[str] = ALLOWED, kind: str = "http"
) -> tuple[bool, list[Message]]:
    """(whether the app ran, what was sent) for a request with these Host header values."""
    ran: list[bool] = []
    sent: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        ran.append(True)

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        sent.append(message)

    scope: dict[str, Any] = {
        "type": kind,
        "method": "GET",
        "path": "/",
        "headers": [(b"host", value) for value in host_headers],
        REQUEST_ID_SCOPE_KEY: "req-1",
    }
    await TrustedHostMiddleware(app, allowed_hosts=allowed)(scope, receive, send)
    return bool(ran), sent


@pytest.mark.parametrize(
    "host",
    [
        b"api.example.com",
        b"API.Example.COM",
        b"api.example.com:8443",
        b"api.example.com.",  # the same name, fully qualified
        b"api.example.com:",  # empty port: the default
        b"localhost",
        b"localhost:8000",
        b"127.0.0.1:8000",
        b"[::1]",
        b"[::1]:8000",
        b"[2001:db8::1]:443",
        b"a.example.org",
        b"deep.a.example.org:8080",
    ],
)
async def test_allowed_hosts_pass(host: bytes) -> None:
    ran, sent = await _call([host])
    assert ran
    assert sent == []


@pytest.mark.parametrize(
    "host",
    [
        b"evil.example",
        b"api.example.com.evil.example",
        b"evilapi.example.com",
        b"example.org",  # the wildcard is for subdomains only
        b"evil-example.org",
        b".example.org",
        b"a..example.org",
        b"a b.example.org",
        b"127.0.0.2",
        b"[::2]",
        b"::1",  # an IPv6 literal must be bracketed
        b"[::1",
        b"[::1]x",
        b"api.example.com:http",
        b"api.example.com:123456",
        b"api.example.com:99999",  # no such port
        b"[::1]:65536",
        b"api.example.com@evil.example",
        b"",
        b"<script>alert(1)</script>",
        "api.example.com\u0130".encode(),
    ],
)
async def test_other_hosts_get_a_400_problem_that_does_not_echo_them(host: bytes) -> None:
    ran, sent = await _call([host])
    assert not ran
    _assert_invalid_host_problem(sent, host)


async def test_a_missing_host_is_refused() -> None:
    ran, sent = await _call([])
    assert not ran
    _assert_invalid_host_problem(sent, b"")


async def test_two_host_headers_are_refused_even_when_both_are_allowed() -> None:
    ran, sent = await _call([b"api.example.com", b"api.example.com"])
    assert not ran
    _assert_invalid_host_problem(sent, b"api.example.com")


async def test_star_allows_every_host() -> None:
    ran, sent = await _call([b"anything.example"], allowed=["*"])
    assert ran
    assert sent == []


async def test_websocket_handshakes_for_other_hosts_are_closed() -> None:
    ran, sent = await _call([b"evil.example"], kind="websocket")
    assert not ran
    assert sent == [{"type": "websocket.close", "code": 1008}]
    ran, _ = await _call([b"api.example.com"], kind="websocket")
    assert ran


async def test_lifespan_passes() -> None:
    ran, _ = await _call([], kind="lifespan")
    assert ran


async def test_an_entry_with_a_port_allows_its_host_on_any_port() -> None:
    """The port is ignored on both sides, for IPv6 literals as for names."""
    for host in (b"[::1]", b"[::1]:9000", b"localhost:9000"):
        ran, _ = await _call([host], allowed=["[::1]:8000", "localhost:8000"])
        assert ran


@pytest.mark.parametrize(
    "entry", ["api.*.example.com", "*example.com", "bad host", "[1.2.3.4]", "[::1]:http"]
)
def test_unsupported_entries_are_refused_at_start(entry: str) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise AssertionError

    with pytest.raises(ValueError, match=r"wildcard|not a host name"):
        TrustedHostMiddleware(app, allowed_hosts=[entry])


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Example.COM:80", "example.com"),
        ("[2001:DB8::1]:80", "[2001:db8::1]"),
        ("example.com:x", None),
        ("", None),
        (":80", None),
    ],
)
def test_host_name(value: str, expected: str | None) -> None:
    assert host_name(value) == expected


def _assert_invalid_host_problem(sent: list[Message], host: bytes) -> None:
    start, body = sent
    assert start["status"] == 400
    assert dict(start["headers"])[b"content-type"] == b"application/problem+json"
    problem = json.loads(body["body"])
    assert problem["status"] == 400
    assert problem["request_id"] == "req-1"
    assert "invalid host" in problem["detail"].lower()
    if host:
        assert host.decode("latin-1") not in body["body"].decode()


async def test_the_remembered_hosts_are_allowed_ones_and_bounded() -> None:
    """Allowed Host values skip parsing next time; refused ones are never remembered, and a
    client sending endless allowed subdomains cannot grow the set past its bound."""
    ran: list[bytes] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        ran.append(scope["headers"][0][1])

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        return None

    middleware = TrustedHostMiddleware(app, allowed_hosts=ALLOWED)

    async def passes(host: bytes) -> bool:
        scope = {"type": "http", "method": "GET", "path": "/", "headers": [(b"host", host)]}
        await middleware(scope, receive, send)
        return bool(ran) and ran.pop() == host

    assert await passes(b"api.example.com")
    assert not await passes(b"evil.example.com")
    assert not await passes(b"evil.example.com")
    assert middleware.known_good == {b"api.example.com"}
    assert await passes(b"api.example.com")
    for number in range(MAX_KNOWN_GOOD_HOSTS * 2):
        assert await passes(b"h%d.example.org" % number)
    assert len(middleware.known_good) == MAX_KNOWN_GOOD_HOSTS
    assert not await passes(b"example.org")  # the wildcard's name itself is not allowed
    assert b"example.org" not in middleware.known_good
