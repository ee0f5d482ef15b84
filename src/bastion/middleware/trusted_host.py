"""Answers only requests whose ``Host`` names this service (``BASTION_ALLOWED_HOSTS``).

A forged ``Host`` is how an attacker gets their own name into absolute URLs the service
builds (the HTTPS redirect, links) and into shared caches (host header poisoning); DNS
rebinding also arrives with a foreign ``Host``. Requests without exactly one ``Host`` are
refused too: with two, a proxy and bastion may each believe a different one (RFC 9112 §3.2
asks for 400).

Starlette's ``TrustedHostMiddleware`` answers in plain text; this one answers RFC 9457
problem details with the request id like every other error, and never repeats the host.
Entries are exact names (case-insensitive, a trailing dot ignored), IPv6 literals in
brackets (``[::1]``), ``*.example.com`` for any subdomain of ``example.com`` (not the name
itself), or ``*`` for any host. The port is ignored on both sides.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from bastion.middleware.request_id import request_id_of
from bastion.problems import send_problem
from bastion.security.hostport import parse_host_port

INVALID_HOST_DETAIL = "Invalid host: the Host header does not name a host this server answers to."
# RFC 6455 §7.4.1 "policy violation": a refused WebSocket handshake becomes HTTP 403.
WEBSOCKET_POLICY_VIOLATION = 1008
MAX_KNOWN_GOOD_HOSTS = 64
_NAME = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*")


def host_name(value: str) -> str | None:
    """The lower-case host of a ``Host`` value without its port (IPv6 kept in brackets), or
    None when the value is not shaped like a host."""
    # RFC 3986 allows an empty port ("example.com:"): it means the default. An IPv6 literal
    # must be bracketed in a Host header.
    parsed = parse_host_port(value.lower(), empty_port=True)
    if parsed is None:
        return None
    if parsed.bracketed:
        return f"[{parsed.host}]"
    return parsed.host.removesuffix(".") or None


def _entry_host(entry: str) -> str:
    """An allow-list entry in the form ``host_name`` gives; a bare IPv6 literal is bracketed
    and every IPv6 literal written canonically, as browsers send it. A port is ignored, as
    in the ``Host`` header."""
    entry = entry.strip().lower()
    parsed = parse_host_port(entry, empty_port=True, bare_ipv6=True)
    if parsed is not None and (parsed.bracketed or ":" in parsed.host):
        try:
            return f"[{ipaddress.IPv6Address(parsed.host)}]"
        except ValueError:
            pass
    elif parsed is not None:
        host = parsed.host.removesuffix(".")
        if _NAME.fullmatch(host):
            return host
    raise ValueError(f"not a host name: {entry!r}")


@dataclass(frozen=True, slots=True)
class AllowedHosts:
    """``BASTION_ALLOWED_HOSTS`` parsed once: exact names, ``*.`` suffixes, or any host."""

    exact: frozenset[str]
    suffixes: tuple[str, ...]
    allow_any: bool

    @classmethod
    def parse(cls, entries: Iterable[str]) -> AllowedHosts:
        """ValueError for an entry that is not a host name or a supported wildcard; the
        settings validator calls this too, so a typo stops the start."""
        exact: set[str] = set()
        suffixes: list[str] = []
        allow_any = False
        for entry in entries:
            if entry.strip() == "*":
                allow_any = True
            elif entry.strip().startswith("*."):
                suffixes.append("." + _entry_host(entry.strip()[2:]))
            elif "*" in entry:
                raise ValueError(f"only a leading '*.' wildcard is supported: {entry!r}")
            else:
                exact.add(_entry_host(entry))
        return cls(frozenset(exact), tuple(suffixes), allow_any)

    def is_allowed(self, host: str | None) -> bool:
        if host is None:
            return False
        if host in self.exact:
            return True
        return any(
            host.endswith(suffix) and len(host) > len(suffix) for suffix in self.suffixes
        ) and bool(_NAME.fullmatch(host))


class TrustedHostMiddleware:
    """Refuses (400 problem) HTTP requests, and WebSocket handshakes, for any other host."""

    def __init__(self, app: ASGIApp, *, allowed_hosts: Iterable[str]) -> None:
        self.app = app
        self.allowed = AllowedHosts.parse(allowed_hosts)
        # Raw Host values already found allowed: the few a deployment sees skip parsing.
        # Only allowed values enter, and only so many: a client cannot grow it.
        self.known_good: set[bytes] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if self.allowed.allow_any or (kind != "http" and kind != "websocket"):
            await self.app(scope, receive, send)
            return

        raw: bytes | None = None
        seen = 0
        for name, value in scope["headers"]:
            if name == b"host":
                seen += 1
                raw = value
        if seen == 1 and raw is not None and self._allows(raw):
            await self.app(scope, receive, send)
        elif kind == "websocket":
            await send({"type": "websocket.close", "code": WEBSOCKET_POLICY_VIOLATION})
        else:
            await send_problem(send, 400, INVALID_HOST_DETAIL, request_id_of(scope))

    def _allows(self, raw: bytes) -> bool:
        if raw in self.known_good:
            return True
        if not self.allowed.is_allowed(host_name(raw.decode("latin-1"))):
            return False
        if len(self.known_good) < MAX_KNOWN_GOOD_HOSTS:
            self.known_good.add(raw)
        return True
