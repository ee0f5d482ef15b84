"""``SafeHTML`` and ``PlainText``: input types that store only what is safe to render.

HTML is cleaned on the way in (nh3, an explicit allow-list), so what the database holds is
already safe: no script, style, iframe, object or embed, no event handlers, no
``javascript:``/``data:``/``vbscript:`` URLs, and every link gets ``rel="noopener
noreferrer"``. The size limit is checked before cleaning, so a huge body never reaches the
sanitizer. Plain text refuses markup characters' control relatives instead of escaping them
(escaping is the renderer's job; refusing control characters keeps logs and UIs sane).
"""

from __future__ import annotations

from typing import Annotated

import nh3
from pydantic import AfterValidator, StringConstraints

from bastion.security.text import (
    DocumentedPattern,
    plain_text_pattern,
    refuse_formatting_characters,
)

ALLOWED_TAGS = frozenset(
    {
        "a", "abbr", "b", "blockquote", "br", "code", "del", "em", "h1", "h2", "h3", "h4",
        "h5", "h6", "hr", "i", "ins", "kbd", "li", "mark", "ol", "p", "pre", "q", "s",
        "small", "span", "strong", "sub", "sup", "table", "tbody", "td", "th", "thead",
        "tr", "u", "ul", "img",
    }
)
ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "abbr": {"title"},
    "img": {"src", "alt", "title", "width", "height"},
    "td": {"colspan", "rowspan"},
    "th": {"colspan", "rowspan"},
    "ol": {"start"},
}
ALLOWED_URL_SCHEMES = frozenset({"http", "https", "mailto"})
# Removed with everything inside them, not just unwrapped.
REMOVED_WITH_CONTENT = frozenset({"script", "style", "iframe", "object", "embed", "template"})

_CLEANER = nh3.Cleaner(
    tags=set(ALLOWED_TAGS),
    clean_content_tags=set(REMOVED_WITH_CONTENT),
    attributes={tag: set(names) for tag, names in ALLOWED_ATTRIBUTES.items()},
    url_schemes=set(ALLOWED_URL_SCHEMES),
    link_rel="noopener noreferrer",
    strip_comments=True,
)

MAX_HTML_BYTES = 65_536
MAX_HTML_CHARACTERS = MAX_HTML_BYTES  # a string over this many characters is over the bytes


def sanitize_html(html: str) -> str:
    """The allow-listed subset of ``html``; everything else is dropped, never escaped in."""
    return _CLEANER.clean(html)


def _within_size(value: str) -> str:
    # Checked in UTF-8 bytes (64 KiB), after the cheap character bound above it.
    if len(value.encode("utf-8")) > MAX_HTML_BYTES:
        raise ValueError("The text is larger than 64 KiB.")
    return value


SafeHTML = Annotated[
    str,
    StringConstraints(max_length=MAX_HTML_CHARACTERS),
    AfterValidator(_within_size),
    AfterValidator(sanitize_html),
]
# No control or format character but tab and the joiners (``bastion.security.text``).
PlainText = Annotated[
    str,
    AfterValidator(refuse_formatting_characters),
    DocumentedPattern(plain_text_pattern),
]
