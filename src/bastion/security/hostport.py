"""One reading of ``host[:port]``, for the ``Host`` header, forwarded hops and configured origins.

Each of those used to split a host from its port its own way, and they disagreed on
bracketed IPv6, on a bare IPv6 and on which ports exist. Here is the one syntax:

- ``name``, ``name:port``, ``1.2.3.4``, ``1.2.3.4:port``;
- ``[2001:db8::1]`` and ``[2001:db8::1]:port`` (RFC 3986 IP-literal);
- a bare IPv6 literal (``2001:db8::1``) only when the caller allows it: more than one colon
  without brackets cannot carry a port, so it is read whole as the host;
- a port is 1 to 5 ASCII digits no greater than 65535; an empty port (``name:``, which
  RFC 3986 allows and means the default) only when the caller allows it.

``web_origin`` serialises a URL's origin on the same reading (the CSRF origin check compares
``Origin`` and ``Referer`` with ``BASTION_PUBLIC_URL`` through it).

Syntax only: the host comes back as written (brackets removed, case kept, not validated as
a name or an address), for the caller to check against its own rule. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_PORT = 65_535


@dataclass(frozen=True, slots=True)
class HostPort:
    """A host and its port as written; ``bracketed`` when the host was an ``[IP-literal]``."""

    host: str
    port: int | None
    bracketed: bool = False


def parse_host_port(
    text: str, *, empty_port: bool = False, bare_ipv6: bool = False
) -> HostPort | None:
    """``text`` (surrounding whitespace ignored) split into host and port, or None when it
    is not shaped like ``host[:port]`` or the host is empty.

    ``empty_port`` accepts ``host:`` (port None), as a ``Host`` header may be written;
    ``bare_ipv6`` reads an unbracketed text with several colons as an IPv6 host without a
    port, as proxies write forwarded addresses.
    """
    text = text.strip()
    bracketed = text.startswith("[")
    if bracketed:
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and rest[0] != ":"):
            return None
        port_text = rest[1:] if rest else None
    elif text.count(":") > 1:
        if not bare_ipv6:
            return None
        host, port_text = text, None
    else:
        host, colon, port_text = text.partition(":")
        port_text = port_text if colon else None
    if not host:
        return None
    if port_text is None or (port_text == "" and empty_port):
        return HostPort(host, None, bracketed)
    if not is_port(port_text):
        return None
    return HostPort(host, int(port_text), bracketed)


def is_port(text: str) -> bool:
    """A TCP port written in decimal: 1 to 5 ASCII digits, at most 65535."""
    return 0 < len(text) <= 5 and text.isascii() and text.isdigit() and int(text) <= MAX_PORT


_DEFAULT_PORTS = {"http": 80, "https": 443}


def web_origin(url: str) -> str | None:
    """The origin (RFC 6454) of an absolute http(s) URL, serialised as browsers write the
    ``Origin`` header: lower-case scheme and host, the port only when not the scheme's
    default. None for anything else (``null``, a relative or opaque URL, a bad port)."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or "@" in parts.netloc:
        return None
    written = parse_host_port(parts.netloc)
    if written is None:
        return None
    host = f"[{written.host}]" if written.bracketed else written.host
    port = "" if written.port in (None, _DEFAULT_PORTS[scheme]) else f":{written.port}"
    return f"{scheme}://{host.lower()}{port}"
