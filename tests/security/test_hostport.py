"""parse_host_port: the one host[:port] syntax behind Host, forwarded hops and origins."""

from __future__ import annotations

import pytest

from bastion.security.hostport import HostPort, is_port, parse_host_port


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("example.com", HostPort("example.com", None)),
        ("Example.COM:8443", HostPort("Example.COM", 8443)),
        ("  example.com:80 ", HostPort("example.com", 80)),
        ("1.2.3.4", HostPort("1.2.3.4", None)),
        ("1.2.3.4:5678", HostPort("1.2.3.4", 5678)),
        ("[::1]", HostPort("::1", None, bracketed=True)),
        ("[::1]:8000", HostPort("::1", 8000, bracketed=True)),
        ("[2001:DB8::1]:65535", HostPort("2001:DB8::1", 65535, bracketed=True)),
        ("[fe80::1%eth0]:1", HostPort("fe80::1%eth0", 1, bracketed=True)),
        ("example.com:0", HostPort("example.com", 0)),
        ("example.com:00080", HostPort("example.com", 80)),
    ],
)
def test_hosts_and_ports_are_split(text: str, expected: HostPort) -> None:
    assert parse_host_port(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        ":80",
        "[]",
        "[]:80",
        "[::1",
        "[::1]x",
        "[::1]:x",
        "[::1]:65536",
        "example.com:65536",
        "example.com:99999",
        "example.com:123456",
        "example.com:http",
        "example.com:-1",
        "example.com:+80",
        "example.com:8\u0660",  # a non-ASCII digit
        "example.com:\u00b2",
        "example.com:",  # empty port: only when allowed
        "[::1]:",
        "::1",  # bare IPv6: only when allowed
        "2001:db8::1",
        "a:b:c",
    ],
)
def test_anything_else_is_refused(text: str) -> None:
    assert parse_host_port(text) is None


def test_an_empty_port_is_the_default_when_allowed() -> None:
    assert parse_host_port("example.com:", empty_port=True) == HostPort("example.com", None)
    assert parse_host_port("[::1]:", empty_port=True) == HostPort("::1", None, bracketed=True)
    assert parse_host_port(":", empty_port=True) is None


def test_a_bare_ipv6_is_a_host_without_a_port_when_allowed() -> None:
    assert parse_host_port("2001:db8::1", bare_ipv6=True) == HostPort("2001:db8::1", None)
    assert parse_host_port("::ffff:1.2.3.4", bare_ipv6=True) == HostPort("::ffff:1.2.3.4", None)
    # One colon is always host:port, never a bare IPv6.
    assert parse_host_port("1.2.3.4:80", bare_ipv6=True) == HostPort("1.2.3.4", 80)
    assert parse_host_port("[::1]:80", bare_ipv6=True) == HostPort("::1", 80, bracketed=True)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1", True), ("65535", True), ("0", True), ("65536", False), ("", False), ("123456", False)],
)
def test_is_port(text: str, expected: bool) -> None:
    assert is_port(text) is expected
