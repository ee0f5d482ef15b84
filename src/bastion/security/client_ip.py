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
``client_address`` is the one way the rest of bastion reads the result. The headers' syntax
is ``forwarded``; the proxies and address normalisation are ``trusted_proxies`` (both also
importable from here).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from bastion.security.forwarded import (
    ForwardedElement,
    forwarded_elements,
    x_forwarded_for_hops,
)
from bastion.security.trusted_proxies import TrustedProxies, normalize_address

ProxyHeader = Literal["x-forwarded-for", "forwarded"]
Scheme = Literal["http", "https"]

_SCHEMES: Mapping[str, Scheme] = {"http": "http", "https": "https"}


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


__all__ = [
    "ClientResolver",
    "ForwardedClient",
    "ForwardedElement",
    "ProxyHeader",
    "Scheme",
    "TrustedProxies",
    "choose_client",
    "client_address",
    "forwarded_elements",
    "normalize_address",
    "x_forwarded_for_hops",
]
