"""Client address from forwarded headers: believed only through trusted proxies.

Each case is an attack or a real proxy set-up: the client's own entries (left of what a
trusted proxy added) must never decide the address, and garbage must never become one.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from bastion.security.client_ip import ClientResolver, ForwardedClient, ProxyHeader, client_address
from bastion.security.forwarded import ForwardedElement, forwarded_elements, x_forwarded_for_hops
from bastion.security.trusted_proxies import TrustedProxies, normalize_address

TRUSTED = TrustedProxies(["10.0.0.0/8", "127.0.0.1", "2001:db8:ffff::/48"])
PROXY = "10.0.0.9"
CLIENT = "203.0.113.7"
ATTACKER_CHOICE = "6.6.6.6"

Headers = list[tuple[str, str]]


def resolve(
    headers: Headers, *, peer: str | None = PROXY, header: ProxyHeader = "x-forwarded-for"
) -> ForwardedClient | None:
    raw = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers]
    return ClientResolver(TRUSTED, header).resolve(peer, raw)


def xff(*values: str) -> Headers:
    return [("X-Forwarded-For", value) for value in values]


def fwd(*values: str) -> Headers:
    return [("Forwarded", value) for value in values]


# --- X-Forwarded-For ------------------------------------------------------------------------

XFF_CASES: list[tuple[str, Headers, str]] = [
    ("one proxy", xff(CLIENT), CLIENT),
    ("spoofed left-most entry", xff(f"{ATTACKER_CHOICE}, {CLIENT}"), CLIENT),
    ("several spoofed entries", xff(f"1.1.1.1, {ATTACKER_CHOICE}, {CLIENT}"), CLIENT),
    ("spoofed trusted-looking entry", xff(f"10.0.0.1, {CLIENT}"), CLIENT),
    ("chain of trusted proxies", xff(f"{ATTACKER_CHOICE}, {CLIENT}, 10.0.0.2, 10.0.0.3"), CLIENT),
    ("every hop trusted: the left-most", xff("10.0.0.1, 10.0.0.2"), "10.0.0.1"),
    ("lines joined in order", xff(ATTACKER_CHOICE, f"{CLIENT}, 10.0.0.2"), CLIENT),
    ("empty elements ignored", xff(f"{ATTACKER_CHOICE},, {CLIENT}, "), CLIENT),
    ("no header: the proxy itself", [], PROXY),
    ("garbage hop: the proxy that reported it", xff(f"{CLIENT}, unknown"), PROXY),
    ("garbage behind a trusted hop", xff(f"{CLIENT}, garbage, 10.0.0.2"), "10.0.0.2"),
    ("obfuscated hop", xff("_hidden"), PROXY),
    ("a host name is not an address", xff("evil.example"), PROXY),
    ("leading zeros are not an address", xff("203.0.113.007"), PROXY),
    ("huge garbage", xff("x" * 5000), PROXY),
    ("IPv4 with port", xff(f"{CLIENT}:5678"), CLIENT),
    ("IPv6 with brackets and port", xff("[2001:db8::1]:4711"), "2001:db8::1"),
    ("IPv6 in brackets", xff("[2001:db8::1]"), "2001:db8::1"),
    ("IPv6 normalised", xff("2001:DB8:0:0::1"), "2001:db8::1"),
    ("IPv4-mapped IPv6 becomes IPv4", xff(f"::ffff:{CLIENT}"), CLIENT),
    ("IPv6 zone dropped", xff("fe80::1%eth0"), "fe80::1"),
    ("bad port", xff(f"{CLIENT}:http"), PROXY),
    ("bracket never closed", xff("[2001:db8::1"), PROXY),
    ("junk after the bracket", xff("[2001:db8::1]x"), PROXY),
    ("Forwarded is ignored in this mode", fwd(f"for={ATTACKER_CHOICE}"), PROXY),
    (
        "Forwarded ignored even beside X-Forwarded-For",
        [*fwd(f"for={ATTACKER_CHOICE}"), *xff(CLIENT)],
        CLIENT,
    ),
]


@pytest.mark.parametrize(
    ("headers", "expected"),
    [case[1:] for case in XFF_CASES],
    ids=[case[0] for case in XFF_CASES],
)
def test_x_forwarded_for(headers: Headers, expected: str) -> None:
    found = resolve(headers)
    assert found is not None
    assert found.address == expected


@pytest.mark.parametrize("peer", [CLIENT, "192.0.2.1", "::1", "not-an-ip", ""])
def test_an_untrusted_peer_is_the_client_whatever_it_sends(peer: str) -> None:
    headers = [*xff("10.0.0.1"), ("X-Forwarded-Proto", "https")]
    assert resolve(headers, peer=peer) is None
    assert resolve(fwd("for=10.0.0.1;proto=https"), peer=peer, header="forwarded") is None


def test_no_peer_at_all_is_not_trusted() -> None:
    assert resolve(xff(ATTACKER_CHOICE), peer=None) is None


@pytest.mark.parametrize(
    "peer", ["127.0.0.1", "::ffff:127.0.0.1", "10.200.0.1", "2001:db8:ffff::5"]
)
def test_trusted_peers_in_every_spelling(peer: str) -> None:
    found = resolve(xff(f"{ATTACKER_CHOICE}, {CLIENT}"), peer=peer)
    assert found == ForwardedClient(CLIENT, None)


def test_a_trusted_peer_without_a_header_is_itself_normalised() -> None:
    assert resolve([], peer="::ffff:10.0.0.9") == ForwardedClient(PROXY, None)


@pytest.mark.parametrize(
    ("protos", "scheme"),
    [
        (["https"], "https"),
        (["HTTPS"], "https"),
        (["http"], "http"),
        (["http, https"], "https"),  # the right-most: what the nearest proxy wrote
        (["https", "http"], "http"),
        (["https, "], "https"),
        (["ftp"], None),
        (["javascript"], None),
        ([], None),
    ],
)
def test_x_forwarded_proto(protos: list[str], scheme: str | None) -> None:
    found = resolve([*xff(CLIENT), *(("X-Forwarded-Proto", proto) for proto in protos)])
    assert found == ForwardedClient(CLIENT, scheme)  # type: ignore[arg-type]


# --- Forwarded (RFC 7239) -------------------------------------------------------------------

FORWARDED_CASES: list[tuple[str, Headers, str, str | None]] = [
    ("one proxy", fwd(f"for={CLIENT};proto=https;by=10.0.0.9"), CLIENT, "https"),
    ("quoted", fwd(f'for="{CLIENT}"'), CLIENT, None),
    ("IPv6 quoted with port", fwd('for="[2001:db8:cafe::17]:4711"'), "2001:db8:cafe::17", None),
    ("IPv4 quoted with port", fwd(f'for="{CLIENT}:4711"'), CLIENT, None),
    ("names are case-insensitive", fwd(f"For={CLIENT};PROTO=HTTPS"), CLIENT, "https"),
    ("spaces around pairs", fwd(f" for = {CLIENT} ; proto = https "), CLIENT, "https"),
    (
        "spoofed left-most element",
        fwd(f"for={ATTACKER_CHOICE};proto=https, for={CLIENT}"),
        CLIENT,
        None,
    ),
    ("lines joined in order", fwd(f"for={ATTACKER_CHOICE}", f"for={CLIENT}"), CLIENT, None),
    (
        "the chosen element's proto, not another's",
        fwd(f"for={CLIENT};proto=https, for=10.0.0.2;proto=http"),
        CLIENT,
        "https",
    ),
    (
        "a quoted comma does not split the element",
        fwd(f'for="{ATTACKER_CHOICE}, for=1.1.1.1", for={CLIENT}'),
        CLIENT,
        None,
    ),
    (
        "a quoted comma cannot fake a hop",
        fwd(f'for={CLIENT};x="a, for={ATTACKER_CHOICE}"'),
        CLIENT,
        None,
    ),
    (
        "an unterminated quote stays in its own line",
        fwd(f'for="{ATTACKER_CHOICE}', f"for={CLIENT}"),
        CLIENT,
        None,
    ),
    ("escaped characters in a quoted value", fwd(r'for="\2\03.0.113.7"'), CLIENT, None),
    ("unknown: the proxy that reported it", fwd("for=unknown;proto=https"), PROXY, "https"),
    ("obfuscated: the proxy that reported it", fwd('for="_hidden"'), PROXY, None),
    ("garbage behind a trusted hop", fwd(f"for={CLIENT}, for=_x, for=10.0.0.2"), "10.0.0.2", None),
    ("element without for", fwd("proto=https"), PROXY, "https"),
    ("for given twice: malformed", fwd(f"for={CLIENT};for={ATTACKER_CHOICE}"), PROXY, None),
    ("pair without '='", fwd(f"for={CLIENT};secure"), PROXY, None),
    ("half-quoted value", fwd(f'for="{CLIENT}"x'), PROXY, None),
    (
        "every hop trusted: the left-most",
        fwd("for=10.0.0.1;proto=https, for=10.0.0.2"),
        "10.0.0.1",
        "https",
    ),
    ("proto other than http(s)", fwd(f"for={CLIENT};proto=gopher"), CLIENT, None),
    ("empty elements ignored", fwd(f"for={ATTACKER_CHOICE},, for={CLIENT},"), CLIENT, None),
    ("no header: the proxy itself", [], PROXY, None),
    ("X-Forwarded-For is ignored in this mode", xff(ATTACKER_CHOICE), PROXY, None),
    (
        "X-Forwarded-Proto is ignored in this mode",
        [*fwd(f"for={CLIENT}"), ("X-Forwarded-Proto", "https")],
        CLIENT,
        None,
    ),
]


@pytest.mark.parametrize(
    ("headers", "address", "scheme"),
    [case[1:] for case in FORWARDED_CASES],
    ids=[case[0] for case in FORWARDED_CASES],
)
def test_forwarded(headers: Headers, address: str, scheme: str | None) -> None:
    assert resolve(headers, header="forwarded") == ForwardedClient(address, scheme)  # type: ignore[arg-type]


def test_forwarded_elements_parse() -> None:
    assert forwarded_elements(['for=a;proto=https, for="[::1]:80";by=x', "for=b"]) == [
        ForwardedElement("a", "https"),
        ForwardedElement("[::1]:80", None),
        ForwardedElement("b", None),
    ]


def test_x_forwarded_for_hops_parse() -> None:
    assert x_forwarded_for_hops(["a, b", " ", "c,,d "]) == ["a", "b", "c", "d"]


@pytest.mark.parametrize(
    "garbage",
    ["unknown", "_obf", "", "x" * 100, "1.2.3.4.5", "999.1.1.1", "[::1]:99999", "::1]", "%00"],
)
@pytest.mark.parametrize("header", ["x-forwarded-for", "forwarded"])
def test_an_attacker_chosen_string_never_becomes_the_address(
    garbage: str, header: ProxyHeader
) -> None:
    value = f'for="{garbage}"' if header == "forwarded" else garbage
    found = resolve([(header, value)], header=header)
    assert found is not None
    ipaddress.ip_address(found.address)  # always a real address
    assert found.address == PROXY


# --- the pieces -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1.2.3.4", "1.2.3.4"),
        (" 1.2.3.4 ", "1.2.3.4"),
        ("1.2.3.4:80", "1.2.3.4"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("::ffff:1.2.3.4", "1.2.3.4"),
        ("[::ffff:1.2.3.4]:1", "1.2.3.4"),
        ("1.2.3.4:", None),
        ("1.2.3.4:123456", None),
        ("1.2.3.4:٣", None),  # a non-ASCII digit is no port
        ("[]", None),
        ("localhost", None),
        ("", None),
    ],
)
def test_normalize_address(text: str, expected: str | None) -> None:
    assert normalize_address(text) == expected


@pytest.mark.parametrize(
    ("address", "trusted"),
    [
        ("127.0.0.1", True),
        ("::ffff:127.0.0.1", True),
        ("10.255.255.255", True),
        ("2001:db8:ffff:1::1", True),
        ("127.0.0.2", False),
        ("11.0.0.1", False),
        ("2001:db8:fffe::1", False),
        ("garbage", False),
        ("", False),
    ],
)
def test_trusted_proxies_membership(address: str, trusted: bool) -> None:
    assert (TRUSTED.normalized_member(address) is not None) is trusted


def test_trusted_proxies_normalise_and_refuse_bad_entries() -> None:
    assert TrustedProxies(["::ffff:10.0.0.5"]).normalized_member("10.0.0.5") == "10.0.0.5"
    # host bits set: still the network
    assert TrustedProxies(["10.0.0.5/8"]).normalized_member("10.1.2.3") == "10.1.2.3"
    assert not TrustedProxies([])
    with pytest.raises(ValueError, match="does not appear"):
        TrustedProxies(["proxy.example"])


def test_an_unknown_header_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown proxy header"):
        ClientResolver(TRUSTED, "x-real-ip")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("scope", "expected"),
    [
        ({"client": (CLIENT, 1234)}, CLIENT),
        ({"client": ("2001:db8::1", 0)}, "2001:db8::1"),
        ({"client": None}, None),
        ({"client": ("", 0)}, None),
        ({}, None),
    ],
)
def test_client_address(scope: dict[str, Any], expected: str | None) -> None:
    assert client_address(scope) == expected
