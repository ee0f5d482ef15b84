"""The hop lists of ``X-Forwarded-For`` and RFC 7239 ``Forwarded``, parsed as sent.

Nothing here decides whom to believe (that is ``client_ip.choose_client``): each header's
lines are split into hops, left to right, and a malformed hop is kept as an unknown one
rather than dropped, so the hops' positions stay what the proxies wrote. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')
_QUOTED_PAIR = re.compile(r"\\(.)")


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
