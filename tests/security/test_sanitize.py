"""``SafeHTML`` and ``PlainText``: an XSS corpus through the sanitizer, judged by parsing.

The vectors come from the OWASP XSS Filter Evasion Cheat Sheet, the PortSwigger XSS cheat
sheet and published mutation-XSS (mXSS) bypasses of other sanitizers. Each output is parsed
with ``html.parser.HTMLParser`` and every tag and attribute is inspected against the
allow-lists; URLs are judged the way a browser reads them (WHATWG URL Standard: surrounding
C0 controls and spaces dropped, tab and newline removed anywhere, scheme case-insensitive),
after the parser has decoded character references.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Annotated, Any, get_args

import pytest
from pydantic import AfterValidator, TypeAdapter, ValidationError

from bastion.security.sanitize import (
    ALLOWED_ATTRIBUTES,
    ALLOWED_TAGS,
    ALLOWED_URL_SCHEMES,
    MAX_HTML_CHARACTERS,
    PlainText,
    SafeHTML,
    sanitize_html,
)

SAFE_HTML: TypeAdapter[str] = TypeAdapter(SafeHTML)
PLAIN_TEXT: TypeAdapter[str] = TypeAdapter(PlainText)

# Attributes whose value is a URL. Every allowed attribute is either one of these or one of
# the plain-value ones below (checked by a test), so the URL check sees every URL kept.
URL_ATTRIBUTES = frozenset({"href", "src"})
PLAIN_ATTRIBUTES = frozenset({"title", "alt", "width", "height", "colspan", "rowspan", "start"})
LINK_REL = "noopener noreferrer"
EVENT_HANDLER = re.compile(r"on\w+", re.IGNORECASE)
SCHEME = re.compile(r"([a-z][a-z0-9+.\-]*):")
C0_AND_SPACE = "".join(chr(code) for code in range(0x21))

POLYGLOT = (
    "jaVasCript:/*-/*`/*\\`/*'/*\"/**/(/* */oNcliCk=alert() )//%0D%0A%0d%0a//</stYle/"
    "</titLe/</teXtarEa/</scRipt/--!>\\x3csVg/<sVg/oNloAd=alert()//>\\x3e"
)
JAVASCRIPT_DECIMAL = "".join(f"&#{ord(c)}" for c in "javascript:") + "alert(1)"
JAVASCRIPT_PADDED = "".join(f"&#{ord(c):07d};" for c in "javascript:") + "alert(1)"
JAVASCRIPT_HEX = "".join(f"&#x{ord(c):x};" for c in "javascript:") + "alert(1)"
SCRIPT_BASE64 = "PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg=="  # <script>alert(1)</script>

XSS_VECTORS = [
    # <script> in its many spellings
    pytest.param("<script>alert(1)</script>", id="script"),
    pytest.param("<SCRIPT>alert(1)</SCRIPT>", id="script-upper"),
    pytest.param("<ScRiPt>alert(1)</sCrIpT>", id="script-mixed-case"),
    pytest.param('<SCRIPT SRC="https://xss.rocks/xss.js"></SCRIPT>', id="script-src"),
    pytest.param('<SCRIPT/XSS SRC="https://xss.rocks/xss.js"></SCRIPT>', id="script-slash"),
    pytest.param("<<SCRIPT>alert(1);//<</SCRIPT>", id="script-extra-open-bracket"),
    pytest.param("<SCRIPT SRC=https://xss.rocks/xss.js?< B >", id="script-no-close"),
    pytest.param("<scr<script>ipt>alert(1)</scr</script>ipt>", id="script-nested"),
    pytest.param("</TITLE><SCRIPT>alert(1);</SCRIPT>", id="script-after-title"),
    pytest.param('<IMG """><SCRIPT>alert(1)</SCRIPT>">', id="script-malformed-img"),
    pytest.param("<scr\x00ipt>alert(1)</scr\x00ipt>", id="script-null-byte"),
    pytest.param("<!--<script>-->alert(1)<!--</script>-->", id="script-in-comment"),
    pytest.param(
        "<!--[if gte IE 4]><script>alert(1)</script><![endif]-->", id="conditional-comment"
    ),
    pytest.param("<![CDATA[<script>alert(1)</script>]]>", id="cdata"),
    pytest.param('<?xml-stylesheet href="javascript:alert(1)"?>', id="processing-instruction"),
    pytest.param("<textarea><script>alert(1)</script></textarea>", id="script-in-textarea"),
    pytest.param("<xmp><script>alert(1)</script></xmp>", id="script-in-xmp"),
    pytest.param("<plaintext><script>alert(1)", id="script-in-plaintext"),
    pytest.param("<template><script>alert(1)</script></template>", id="template-script"),
    pytest.param("<template><img src=x onerror=alert(1)></template>", id="template-img"),
    # event handlers
    pytest.param("<img src=x onerror=alert(1)>", id="img-onerror"),
    pytest.param("<IMG SRC=x OnErRoR=alert(1)>", id="img-onerror-mixed-case"),
    pytest.param("<img src=x onerror=alert(1)//", id="img-unclosed"),
    pytest.param("<img src=x:alert(alt) onerror=eval(src) alt=0>", id="img-eval-src"),
    pytest.param("<img/src=x/onerror=alert(1)>", id="img-slash-separators"),
    pytest.param('<img src="https://example.com/a.png" onload="alert(1)">', id="img-onload"),
    pytest.param("<svg onload=alert(1)>", id="svg-onload"),
    pytest.param("<svg/onload=alert(1)>", id="svg-slash-onload"),
    pytest.param("<svg><script>alert(1)</script></svg>", id="svg-script"),
    pytest.param("<body onload=alert(1)>", id="body-onload"),
    pytest.param("<frameset onload=alert(1)>", id="frameset-onload"),
    pytest.param('<p onmouseover="alert(1)">hover</p>', id="p-onmouseover"),
    pytest.param('<a href="https://example.com" onclick="alert(1)">x</a>', id="a-onclick"),
    pytest.param("<input onfocus=alert(1) autofocus>", id="input-autofocus"),
    pytest.param("<input type=image src=x onerror=alert(1)>", id="input-image"),
    pytest.param("<details open ontoggle=alert(1)>", id="details-ontoggle"),
    pytest.param("<marquee onstart=alert(1)>x</marquee>", id="marquee-onstart"),
    pytest.param("<isindex type=image src=1 onerror=alert(1)>", id="isindex"),
    pytest.param("<video><source onerror=alert(1)></video>", id="video-source"),
    pytest.param("<audio src=x onerror=alert(1)>", id="audio-onerror"),
    pytest.param('<div style="x" onpointerenter="alert(1)">x</div>', id="div-onpointer"),
    pytest.param("<select autofocus onfocus=alert(1)>", id="select-onfocus"),
    # javascript:, vbscript:, data: URLs
    pytest.param('<a href="javascript:alert(1)">x</a>', id="a-javascript"),
    pytest.param('<a href="JaVaScRiPt:alert(1)">x</a>', id="a-javascript-mixed-case"),
    pytest.param("<a href=javascript:alert(1)>x</a>", id="a-javascript-unquoted"),
    pytest.param("<a href=`javascript:alert(1)`>x</a>", id="a-javascript-backticks"),
    pytest.param('<a href="  javascript:alert(1)">x</a>', id="a-javascript-leading-spaces"),
    pytest.param('<a href="\x01javascript:alert(1)">x</a>', id="a-javascript-leading-control"),
    pytest.param('<a href="&#14;  javascript:alert(1)">x</a>', id="a-javascript-entity-control"),
    pytest.param('<a href="jav\tascript:alert(1)">x</a>', id="a-javascript-tab"),
    pytest.param('<a href="jav\nascript:alert(1)">x</a>', id="a-javascript-newline"),
    pytest.param('<a href="jav&#x09;ascript:alert(1)">x</a>', id="a-javascript-entity-tab"),
    pytest.param('<a href="jav&#x0A;ascript:alert(1)">x</a>', id="a-javascript-entity-newline"),
    pytest.param('<a href="&#x6A;avascript:alert(1)">x</a>', id="a-javascript-hex-j"),
    pytest.param(f'<a href="{JAVASCRIPT_HEX}">x</a>', id="a-javascript-all-hex"),
    pytest.param(f'<a href="{JAVASCRIPT_DECIMAL}">x</a>', id="a-javascript-decimal-no-semi"),
    pytest.param(f'<a href="{JAVASCRIPT_PADDED}">x</a>', id="a-javascript-decimal-padded"),
    pytest.param('<a href="javascript&colon;alert(1)">x</a>', id="a-javascript-named-colon"),
    pytest.param('<a href="java\x00script:alert(1)">x</a>', id="a-javascript-null-byte"),
    pytest.param('<IMG SRC="jav&#x0A;ascript:alert(1);">', id="img-javascript-entity-newline"),
    pytest.param('<img src="javascript:alert(1)">', id="img-javascript"),
    pytest.param('<img src="livescript:alert(1)">', id="img-livescript"),
    pytest.param('<a href="vbscript:msgbox(1)">x</a>', id="a-vbscript"),
    pytest.param('<a href="VBSCRIPT:msgbox(1)">x</a>', id="a-vbscript-upper"),
    pytest.param(f'<a href="data:text/html;base64,{SCRIPT_BASE64}">x</a>', id="a-data-html"),
    pytest.param('<img src="data:image/svg+xml;base64,PHN2Zz4=">', id="img-data-svg"),
    pytest.param(f'<iframe src="data:text/html;base64,{SCRIPT_BASE64}">', id="iframe-data"),
    pytest.param('<iframe src="javascript:alert(1)"></iframe>', id="iframe-javascript"),
    pytest.param(
        '<iframe srcdoc="&lt;script&gt;alert(1)&lt;/script&gt;"></iframe>', id="iframe-srcdoc"
    ),
    pytest.param("<iframe src=https://xss.rocks/scriptlet.html <", id="iframe-unclosed"),
    pytest.param('<object data="javascript:alert(1)"></object>', id="object-javascript"),
    pytest.param(
        '<object type="text/x-scriptlet" data="https://xss.rocks/scriptlet.html"></object>',
        id="object-scriptlet",
    ),
    pytest.param(f'<embed src="data:text/html;base64,{SCRIPT_BASE64}">', id="embed-data"),
    pytest.param('<applet code="javascript:alert(1)"></applet>', id="applet"),
    pytest.param(
        '<form action="javascript:alert(1)"><input type=submit></form>', id="form-action"
    ),
    pytest.param(
        "<form><button formaction=javascript:alert(1)>x</button></form>", id="button-formaction"
    ),
    pytest.param(
        '<svg><a xlink:href="javascript:alert(1)"><text>x</text></a></svg>', id="svg-xlink-href"
    ),
    pytest.param(
        '<math><maction actiontype="statusline" xlink:href="javascript:alert(1)">x</maction>'
        "</math>",
        id="math-xlink-href",
    ),
    pytest.param('<table background="javascript:alert(1)"><tr><td>x</td></tr></table>',
                 id="table-background"),
    pytest.param('<td background="javascript:alert(1)">', id="td-background"),
    pytest.param('<bgsound src="javascript:alert(1)">', id="bgsound"),
    pytest.param('<br size="&{alert(1)}">', id="br-js-entity"),
    # document-level tricks
    pytest.param(
        '<meta http-equiv="refresh" content="0;url=javascript:alert(1)">', id="meta-refresh"
    ),
    pytest.param('<meta charset="x-imap4-modified-utf7">&ADz&AGn', id="meta-charset"),
    pytest.param('<base href="javascript:alert(1)//">', id="base-href"),
    pytest.param('<link rel="import" href="https://xss.rocks/x.html">', id="link-import"),
    pytest.param('<link rel="stylesheet" href="javascript:alert(1)">', id="link-stylesheet"),
    # CSS
    pytest.param("<style>@import 'javascript:alert(1)';</style>", id="style-import"),
    pytest.param("<style>body{background:url(javascript:alert(1))}</style>", id="style-url"),
    pytest.param(
        '<div style="background-image: url(javascript:alert(1))">x</div>', id="style-attr-url"
    ),
    pytest.param('<div style="width: expression(alert(1));">x</div>', id="style-expression"),
    pytest.param('<xss style="behavior: url(xss.htc);">', id="style-behavior"),
    pytest.param('<p style="color:red">x</p>', id="style-attr-harmless-looking"),
    # mutation XSS: namespace confusion that fooled other sanitizers
    pytest.param(
        '<noscript><p title="</noscript><img src=x onerror=alert(1)>">', id="mxss-noscript"
    ),
    pytest.param("<svg><style><img src=x onerror=alert(1)></style></svg>", id="mxss-svg-style"),
    pytest.param(
        "<math><mtext><table><mglyph><style><!--</style><img title=\"--&gt;&lt;/mglyph&gt;"
        '&lt;img&Tab;src=1&Tab;onerror=alert(1)&gt;">',
        id="mxss-math-mglyph",
    ),
    pytest.param(
        "<form><math><mtext></form><form><mglyph><style></math><img src onerror=alert(1)>",
        id="mxss-nested-form",
    ),
    pytest.param(
        "<math><style><img src=x onerror=alert(1)></style></math>", id="mxss-math-style"
    ),
    pytest.param(POLYGLOT, id="polyglot"),
]

HARMLESS = [
    pytest.param(
        '<p><b>bold</b> <a href="https://example.com">link</a></p>',
        '<p><b>bold</b> <a href="https://example.com" rel="noopener noreferrer">link</a></p>',
        id="paragraph-bold-link",
    ),
    pytest.param(
        "<ul><li><em>one</em></li><li><code>two</code></li></ul>",
        "<ul><li><em>one</em></li><li><code>two</code></li></ul>",
        id="list",
    ),
    pytest.param(
        '<a href="mailto:alice@example.com" title="mail">mail</a>',
        '<a href="mailto:alice@example.com" title="mail" rel="noopener noreferrer">mail</a>',
        id="mailto",
    ),
    pytest.param(
        '<a href="/notes/1">relative</a>',
        '<a href="/notes/1" rel="noopener noreferrer">relative</a>',
        id="relative-link",
    ),
    pytest.param(
        '<img src="https://example.com/cat.png" alt="a cat" width="10">',
        '<img src="https://example.com/cat.png" alt="a cat" width="10">',
        id="image",
    ),
    pytest.param(
        "<table><thead><tr><th>a</th></tr></thead><tbody><tr><td colspan=\"2\">b</td></tr>"
        "</tbody></table>",
        "<table><thead><tr><th>a</th></tr></thead><tbody><tr><td colspan=\"2\">b</td></tr>"
        "</tbody></table>",
        id="table",
    ),
    pytest.param("1 < 2 & 3 > 2", "1 &lt; 2 &amp; 3 &gt; 2", id="text-is-escaped"),
]


@dataclass
class ParsedHTML:
    start_tags: list[tuple[str, list[tuple[str, str | None]]]] = field(default_factory=list)
    end_tags: list[str] = field(default_factory=list)
    # Comments, declarations, CDATA and processing instructions: none may survive.
    other: list[str] = field(default_factory=list)


class _Inspector(HTMLParser):
    def __init__(self) -> None:
        # convert_charrefs: attribute values and text arrive decoded, as a browser sees them.
        super().__init__(convert_charrefs=True)
        self.parsed = ParsedHTML()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.parsed.start_tags.append((tag, attrs))

    def handle_endtag(self, tag: str) -> None:
        self.parsed.end_tags.append(tag)

    def handle_comment(self, data: str) -> None:
        self.parsed.other.append(f"comment {data!r}")

    def handle_decl(self, decl: str) -> None:
        self.parsed.other.append(f"declaration {decl!r}")

    def handle_pi(self, data: str) -> None:
        self.parsed.other.append(f"processing instruction {data!r}")

    def unknown_decl(self, data: str) -> None:
        self.parsed.other.append(f"unknown declaration {data!r}")


def parse(html: str) -> ParsedHTML:
    inspector = _Inspector()
    inspector.feed(html)
    inspector.close()
    return inspector.parsed


def url_scheme(url: str) -> str | None:
    """The scheme a browser would use for ``url``; None for a relative URL."""
    cleaned = re.sub(r"[\t\n\r]", "", url.strip(C0_AND_SPACE)).lower()
    match = SCHEME.match(cleaned)
    return match.group(1) if match else None


def unsafe_parts(html: str) -> list[str]:
    """Everything in sanitized ``html`` that breaks the rules; empty when it is safe."""
    problems: list[str] = []
    if "<script" in html.lower():
        problems.append("a <script in the output")
    parsed = parse(html)
    problems.extend(parsed.other)
    for tag in parsed.end_tags:
        if tag not in ALLOWED_TAGS:
            problems.append(f"end tag </{tag}> not allowed")
    for tag, attributes in parsed.start_tags:
        if tag not in ALLOWED_TAGS:
            problems.append(f"tag <{tag}> not allowed")
        allowed = set(ALLOWED_ATTRIBUTES.get(tag, ())) | ({"rel"} if tag == "a" else set())
        for name, value in attributes:
            if EVENT_HANDLER.fullmatch(name):
                problems.append(f"event handler {name} on <{tag}>")
            if name not in allowed:
                problems.append(f"attribute {name} not allowed on <{tag}>")
            if name in URL_ATTRIBUTES and value is not None:
                scheme = url_scheme(value)
                if scheme is not None and scheme not in ALLOWED_URL_SCHEMES:
                    problems.append(f"{scheme}: URL in {name} of <{tag}>: {value!r}")
        if tag == "a" and dict(attributes).get("rel") != LINK_REL:
            problems.append(f"<a> without rel={LINK_REL!r}: {attributes}")
    return problems


def test_the_corpus_is_large_enough() -> None:
    assert len(XSS_VECTORS) >= 40
    assert len({param.id for param in XSS_VECTORS}) == len(XSS_VECTORS)


def test_every_allowed_attribute_is_judged_as_a_url_or_a_plain_value() -> None:
    """A URL attribute added to the allow-list must be added to URL_ATTRIBUTES too."""
    names = {name for names in ALLOWED_ATTRIBUTES.values() for name in names}
    assert names <= URL_ATTRIBUTES | PLAIN_ATTRIBUTES


@pytest.mark.parametrize(
    ("url", "scheme"),
    [
        ("https://example.com", "https"),
        ("/relative:path", None),
        ("  JaVa\tScRiPt:alert(1)", "javascript"),
        ("\x01\x02vbscript:x", "vbscript"),
        ("java\ufffdscript:alert(1)", None),  # not a valid scheme: a relative path
    ],
)
def test_the_url_judge_reads_schemes_as_a_browser_does(url: str, scheme: str | None) -> None:
    assert url_scheme(url) == scheme


@pytest.mark.parametrize(
    "unsafe",
    [
        "<script>alert(1)</script>",
        '<img src="x" onerror="alert(1)">',
        '<a href=" jav&#x09;ascript:alert(1)" rel="noopener noreferrer">x</a>',
        '<a href="https://example.com">no rel</a>',
        "<iframe></iframe>",
        '<p style="color:red">x</p>',
        "<!-- a comment -->",
    ],
)
def test_the_judge_catches_unsafe_html(unsafe: str) -> None:
    """The inspection itself is tested, so a passing corpus means something."""
    assert unsafe_parts(unsafe)


@pytest.mark.parametrize("vector", XSS_VECTORS)
def test_xss_vector_is_neutralised(vector: str) -> None:
    cleaned = sanitize_html(vector)
    assert unsafe_parts(cleaned) == [], cleaned
    # Stable under a second pass: what is stored re-parses to itself (no mutation XSS).
    assert sanitize_html(cleaned) == cleaned


@pytest.mark.parametrize("vector", XSS_VECTORS)
def test_xss_vector_is_neutralised_through_the_safe_html_type(vector: str) -> None:
    cleaned = SAFE_HTML.validate_python(vector)
    assert cleaned == sanitize_html(vector)
    assert unsafe_parts(cleaned) == []


@pytest.mark.parametrize(("html", "expected"), HARMLESS)
def test_harmless_formatting_survives(html: str, expected: str) -> None:
    cleaned = SAFE_HTML.validate_python(html)
    assert cleaned == expected
    assert unsafe_parts(cleaned) == []


def test_event_handlers_are_dropped_but_the_element_is_kept() -> None:
    assert sanitize_html('<p onclick="alert(1)">text</p>') == "<p>text</p>"
    assert sanitize_html('<a href="https://example.com" onclick="x()">a</a>') == (
        '<a href="https://example.com" rel="noopener noreferrer">a</a>'
    )


def test_a_links_own_rel_and_target_are_replaced() -> None:
    cleaned = sanitize_html('<a href="https://example.com" rel="opener" target="_blank">x</a>')
    assert cleaned == '<a href="https://example.com" rel="noopener noreferrer">x</a>'


def test_script_and_style_lose_their_content_too() -> None:
    assert sanitize_html("a<script>alert(1)</script>b") == "ab"
    assert sanitize_html("a<style>p{color:red}</style>b") == "ab"


# --- size limit -------------------------------------------------------------------------------


def test_the_largest_allowed_body_is_accepted() -> None:
    assert SAFE_HTML.validate_python("a" * MAX_HTML_CHARACTERS) == "a" * MAX_HTML_CHARACTERS


def test_an_oversized_body_is_a_length_error() -> None:
    with pytest.raises(ValidationError) as refused:
        SAFE_HTML.validate_python("a" * (MAX_HTML_CHARACTERS + 1))
    (error,) = refused.value.errors()
    assert error["type"] == "string_too_long"


def test_the_length_is_checked_before_the_sanitizer_runs() -> None:
    """SafeHTML's own constraints, in their own order, with the sanitizer replaced by a spy:
    an oversized body never reaches it."""
    calls: list[int] = []

    def spy(value: str) -> str:
        calls.append(len(value))
        return value

    original: tuple[Any, ...] = get_args(SafeHTML)[1:]
    assert any(isinstance(item, AfterValidator) for item in original)
    metadata = [
        AfterValidator(spy)
        if isinstance(item, AfterValidator) and item.func is sanitize_html
        else item
        for item in original
    ]
    spied_type: Any = Annotated[(str, *metadata)]
    spied: TypeAdapter[str] = TypeAdapter(spied_type)
    with pytest.raises(ValidationError):
        spied.validate_python("a" * (MAX_HTML_CHARACTERS + 1))
    assert calls == []
    spied.validate_python("<b>ok</b>")
    assert calls == [len("<b>ok</b>")]


def test_a_huge_body_is_refused_without_being_parsed() -> None:
    """Ten megabytes of nested tags would take the sanitizer a while; the refusal is quick."""
    huge = "<b>" * 2_500_000
    started = time.perf_counter()
    with pytest.raises(ValidationError) as refused:
        SAFE_HTML.validate_python(huge)
    assert time.perf_counter() - started < 0.5
    assert refused.value.errors()[0]["type"] == "string_too_long"


# --- plain text -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("nul\x00byte", id="nul"),
        pytest.param("bell\x07", id="bell"),
        pytest.param("\x1b[31mred\x1b[0m", id="ansi-escape"),
        pytest.param("line\nbreak", id="newline"),
        pytest.param("carriage\rreturn", id="carriage-return"),
        pytest.param("del\x7f", id="delete"),
        pytest.param("c1\x85control", id="c1-next-line"),
        pytest.param("evil\u202egnp.exe", id="right-to-left-override"),
        pytest.param("zero\u200bwidth", id="zero-width-space"),
        pytest.param("\ufeffbom", id="byte-order-mark"),
    ],
)
def test_plain_text_refuses_control_and_format_characters(text: str) -> None:
    with pytest.raises(ValidationError) as refused:
        PLAIN_TEXT.validate_python(text)
    assert "control or formatting characters" in str(refused.value)


@pytest.mark.parametrize(
    "text",
    [
        "Shopping list",
        "tab\tseparated",
        "Ünïcödé, 日本語 and emoji 🎉",
        "<b>not markup, just text</b>",
    ],
)
def test_plain_text_keeps_ordinary_text_unchanged(text: str) -> None:
    assert PLAIN_TEXT.validate_python(text) == text


def test_the_size_limit_counts_utf8_bytes() -> None:
    """64 KiB as the contract says: multi-byte text hits it before 65,536 characters."""
    adapter: TypeAdapter[str] = TypeAdapter(SafeHTML)
    adapter.validate_python("\u20ac" * 20_000)  # 60,000 bytes
    with pytest.raises(ValidationError):
        adapter.validate_python("\u20ac" * 25_000)  # 75,000 bytes, 25,000 characters
