"""The client's address and scheme, believed from forwarded headers only through trusted proxies.

Behind a reverse proxy the socket peer is the proxy; the client is named in a header the proxy
adds. Anyone can send that header too, so it is believed only when the peer is a configured
proxy, and only the part of it that trusted proxies wrote: the hop list is walked from the
right (the nearest proxy's entry is last), trusted hops are skipped, and the first untrusted
hop is the client. Everything left of it is whatever the client chose to send and is never
looked at.

Exactly one header is believed (``X-Forwarded-For`` or RFC 7239 ``Forwarded``): a proxy that
sets one usually passes the other through from the client untouched, so believing both would
let a client forge its address.

The address returned is always a normalised IP address written by a trusted party: when the
chosen hop is not an IP address (``unknown``, an obfuscated ``_name``, garbage), the trusted
address that reported it is used instead. An attacker-chosen string must never become the
client's identity, or a client could hand itself a fresh rate-limit key on every request.

Pure: no FastAPI, no I/O. ``ProxyHeadersMiddleware`` applies it to the ASGI scope, and
``client_address`` is the one way the rest of bastion reads the result.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

from bastion.security.hostport import parse_host_port

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
ProxyHeader = Literal["x-forwarded-for", "forwarded"]
Scheme = Literal["http", "https"]

# The longest an address can be as a hop: a bracketed IPv6 with an embedded IPv4, a zone and
# a port is about 60 characters; anything longer is garbage, never parsed nor cached.
MAX_ADDRESS_CHARS = 100
CACHE_SIZE = 4096

_SCHEMES: Mapping[str, Scheme] = {"http": "http", "https": "https"}
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')
_QUOTED_PAIR = re.compile(r"\\(.)")


def client_address(scope: Mapping[str, Any]) -> str | None:
    """The client's address as bastion believes it: the one place that reads it.

    The rate limiter, the access log and the audit log all call this, so they agree. Behind
    ``ProxyHeadersMiddleware`` it is the address resolved from a trusted proxy's header;
    otherwise the socket peer.
    """
    client = scope.get("client")
    if not client:
        return None
    host = client[0]
    return host if isinstance(host, str) and host else None


def normalize_address(text: str) -> str | None:
    """The canonical text of an IP address as proxies write it, or None when it is not one.

    Accepts ``1.2.3.4``, ``1.2.3.4:5678``, ``2001:db8::1``, ``[2001:db8::1]`` and
    ``[2001:db8::1]:4711``. IPv4-mapped IPv6 (``::ffff:1.2.3.4``) becomes IPv4 so that one
    client has one address whichever socket family the proxy used, and an IPv6 zone
    (``%eth0``) is dropped: it names an interface of the proxy, not the client.

    Results are cached: ``ipaddress`` takes microseconds a parse, and the same few proxy and
    client addresses come again and again. The cache is bounded in entries, and strings
    longer than any address are refused before it, so it is bounded in memory too.
    """
    if len(text) > MAX_ADDRESS_CHARS:
        return None
    return _normalize_address(text)


@lru_cache(maxsize=CACHE_SIZE)
def _normalize_address(text: str) -> str | None:
    address = _parse_address(text)
    return str(address) if address is not None else None


def _parse_address(text: str) -> IPAddress | None:
    # RFC 7239 §6 writes a node's port as 1*5DIGIT (never empty); proxies write IPv6 bare too.
    parsed = parse_host_port(text, bare_ipv6=True)
    if parsed is None:
        return None
    host = parsed.host.partition("%")[0]
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class TrustedProxies:
    """The configured proxies: exact addresses and networks, built once at start.

    Membership of a listed address in canonical form (as uvicorn writes the peer) is one set
    lookup; anything else is normalised (cached) and, when networks are configured, checked
    against them (cached too). A string that is not an IP address is never trusted.
    """

    __slots__ = ("_exact", "_in_networks", "_networks")

    def __init__(self, entries: Iterable[str]) -> None:
        """``entries`` are addresses or CIDRs; an invalid one raises ``ValueError`` (a
        configuration error must stop the start, not silently trust nobody)."""
        exact: set[str] = set()
        networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for entry in entries:
            network = ipaddress.ip_network(entry.strip(), strict=False)
            if network.num_addresses == 1:
                single = normalize_address(str(network.network_address))
                if single is not None:
                    exact.add(single)
            else:
                networks.append(network)
        self._exact = frozenset(exact)
        self._networks = tuple(networks)
        self._in_networks = lru_cache(maxsize=CACHE_SIZE)(self._in_networks_uncached)

    def __bool__(self) -> bool:
        return bool(self._exact or self._networks)

    def normalized_member(self, address: str) -> str | None:
        """``address`` in canonical form when it is trusted, otherwise None."""
        if address in self._exact:
            return address
        normalized = normalize_address(address)
        if normalized is None:
            return None
        return normalized if self.holds(normalized) else None

    def holds(self, normalized: str) -> bool:
        """Membership of an address already in ``normalize_address`` form."""
        return normalized in self._exact or (bool(self._networks) and self._in_networks(normalized))

    def _in_networks_uncached(self, normalized: str) -> bool:
        address = ipaddress.ip_address(normalized)
        return any(address in network for network in self._networks)

    def __repr__(self) -> str:
        entries = [*sorted(self._exact), *(str(network) for network in self._networks)]
        return f"TrustedProxies({entries!r})"


@dataclass(frozen=True, slots=True)
class ForwardedElement:
    """One hop of a ``Forwarded`` header: its ``for=`` and ``proto=`` as sent (unvalidated).

    Both are None when the element was malformed; a malformed hop is treated like an
    ``unknown`` one, never skipped (skipping would shift which hop counts as the client).
    """

    for_: str | None
    proto: str | None = None


def x_forwarded_for_hops(values: Iterable[str]) -> list[str]:
    """The hops of every ``X-Forwarded-For`` line, joined in order, left to right.

    Empty list elements are dropped, as RFC 9110 §5.6.1 asks of a list recipient.
    """
    return [hop for value in values for part in value.split(",") if (hop := part.strip())]


def forwarded_elements(values: Iterable[str]) -> list[ForwardedElement]:
    """The elements of every RFC 7239 ``Forwarded`` line, joined in order, left to right.

    Each line is parsed on its own, so a broken quote in a client-sent line cannot swallow the
    element a proxy added on a line of its own. Empty elements are dropped.
    """
    elements: list[ForwardedElement] = []
    for value in values:
        for text in _split_unquoted(value, ","):
            if text.strip():
                elements.append(_forwarded_element(text))
    return elements


def _forwarded_element(text: str) -> ForwardedElement:
    pairs: dict[str, str] = {}
    for pair in _split_unquoted(text, ";"):
        if not pair.strip():
            continue
        name, equals, raw = pair.partition("=")
        name = name.strip().lower()
        value = _pair_value(raw.strip())
        # RFC 7239 §4: a parameter occurs at most once per element.
        if not equals or not _TOKEN.fullmatch(name) or value is None or name in pairs:
            return ForwardedElement(None)
        pairs[name] = value
    return ForwardedElement(pairs.get("for"), pairs.get("proto"))


def _pair_value(raw: str) -> str | None:
    if raw.startswith('"'):
        quoted = _QUOTED.fullmatch(raw)
        return _QUOTED_PAIR.sub(r"\1", quoted.group(1)) if quoted else None
    # Strictly a token; IPv6 and ports must be quoted, but proxies that forget are common
    # and whatever is accepted here is validated as an address afterwards anyway.
    return raw if raw and '"' not in raw and not any(c.isspace() for c in raw) else None


def _split_unquoted(text: str, separator: str) -> list[str]:
    """``text.split(separator)`` except inside quoted strings (with backslash escapes)."""
    if '"' not in text:
        return text.split(separator)
    parts: list[str] = []
    start = 0
    quoted = escaped = False
    for index, char in enumerate(text):
        if escaped:
            escaped = False
        elif quoted:
            if char == "\\":
                escaped = True
            elif char == '"':
                quoted = False
        elif char == '"':
            quoted = True
        elif char == separator:
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return parts


def choose_client(
    peer: str, hops: Sequence[str | None], trusted: TrustedProxies
) -> tuple[str, int | None]:
    """The client among ``hops`` (left to right) reported by the trusted ``peer`` (already in
    ``normalize_address`` form).

    Returns the address and the index of the hop it was read from (None when there were no
    hops). Walking from the right, each trusted hop is skipped; the first untrusted one is the
    client. When every hop is trusted, the left-most is. When the hop reached is not an IP
    address, the trusted address that reported it (the hop to its right, or the peer) is the
    client: it is the last address written by someone we believe.
    """
    reporter = peer
    for index in range(len(hops) - 1, -1, -1):
        hop = hops[index]
        address = normalize_address(hop) if hop is not None else None
        if address is None:
            return reporter, index
        if not trusted.holds(address):
            return address, index
        reporter = address
    return reporter, (0 if hops else None)


@dataclass(frozen=True, slots=True)
class ForwardedClient:
    """What a trusted proxy says about the client: its address, and its scheme when told."""

    address: str
    scheme: Scheme | None


class ClientResolver:
    """Reads the one believed header from a request's ASGI headers; built once at start.

    The scheme comes from the same trusted source as the address:

    - ``x-forwarded-for``: ``X-Forwarded-Proto``, its right-most value (what the nearest
      trusted proxy wrote; nginx's ``proxy_set_header X-Forwarded-Proto $scheme`` sets a
      single value, and a left-hand value appended to may come from the client);
    - ``forwarded``: the ``proto=`` of the element the client's address was read from, which
      the proxy that accepted the client's connection wrote about that connection.

    Only ``http`` and ``https`` are accepted; anything else leaves the scheme unchanged.
    """

    __slots__ = ("_forwarded", "trusted")

    def __init__(self, trusted: TrustedProxies, header: ProxyHeader = "x-forwarded-for") -> None:
        if header not in ("x-forwarded-for", "forwarded"):
            raise ValueError(f"unknown proxy header: {header!r}")
        self.trusted = trusted
        self._forwarded = header == "forwarded"

    def resolve(
        self, peer: str | None, headers: Iterable[tuple[bytes, bytes]]
    ) -> ForwardedClient | None:
        """The client behind ``peer``; None when ``peer`` is not a trusted proxy (then the
        headers are not even read: the peer is the client)."""
        reporter = self.trusted.normalized_member(peer) if peer else None
        if reporter is None:
            return None
        if self._forwarded:
            lines = [value.decode("latin-1") for name, value in headers if name == b"forwarded"]
            return self._from_forwarded(reporter, lines)
        forwarded_for: list[str] = []
        forwarded_proto: list[str] = []
        for name, value in headers:
            if name == b"x-forwarded-for":
                forwarded_for.append(value.decode("latin-1"))
            elif name == b"x-forwarded-proto":
                forwarded_proto.append(value.decode("latin-1"))
        address = reporter
        if forwarded_for:
            address, _ = choose_client(reporter, x_forwarded_for_hops(forwarded_for), self.trusted)
        protos = x_forwarded_for_hops(forwarded_proto) if forwarded_proto else None
        return ForwardedClient(address, _SCHEMES.get(protos[-1].lower()) if protos else None)

    def _from_forwarded(self, reporter: str, lines: list[str]) -> ForwardedClient:
        elements = forwarded_elements(lines)
        address, index = choose_client(reporter, [e.for_ for e in elements], self.trusted)
        proto = elements[index].proto if index is not None else None
        return ForwardedClient(address, _SCHEMES.get(proto.lower()) if proto else None)
