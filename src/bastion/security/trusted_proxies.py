"""The configured trusted proxies, and IP addresses as proxies write them.

Both are read on every request behind a proxy, so both are built for it: the proxies are
parsed once at start into a set and a tuple of networks, and addresses are normalised
through a bounded cache. Pure: no I/O.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from functools import lru_cache

from bastion.security.hostport import parse_host_port

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# The longest an address can be as a hop: a bracketed IPv6 with an embedded IPv4, a zone and
# a port is about 60 characters; anything longer is garbage, never parsed nor cached.
MAX_ADDRESS_CHARS = 100
CACHE_SIZE = 4096


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
