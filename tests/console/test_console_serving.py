"""The console's files as the service serves them: ``/app`` → ``/app/``, the page and its two
static files with the console's CSP and their media types, nothing else under ``/app``, and
a page with no inline code that names only files that exist."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from importlib.resources import files
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from bastion.app import create_app
from bastion.audit.events import AuditEventType
from bastion.console.router import CONSOLE_FILES
from bastion.middleware.secure_headers import CONSOLE_CSP
from bastion.storage.migrate import upgrade_to_head
from tests.conftest import FAST_HASHING, make_settings

STATIC = Path(str(files("bastion.console") / "static"))
PAGE = (STATIC / "index.html").read_text(encoding="utf-8")
SCRIPT = (STATIC / "app.js").read_text(encoding="utf-8")
# The script's code without its comments (which name the sinks it avoids).
CODE = re.sub(r"^\s*//.*$", "", re.sub(r"/\*.*?\*/", "", SCRIPT, flags=re.S), flags=re.M)


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[FastAPI]:
    """SQLite only: serving files touches no database."""
    application = create_app(make_settings(tmp_path / "data", **FAST_HASHING))
    await upgrade_to_head(application.state.bastion.database.engine)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


def directives(csp: str) -> dict[str, str]:
    parsed: dict[str, str] = {}
    for part in csp.split(";"):
        name, _, value = part.strip().partition(" ")
        parsed[name] = value.strip()
    return parsed


def assert_console_headers(response: httpx.Response) -> None:
    assert response.headers["content-security-policy"] == CONSOLE_CSP
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["cross-origin-opener-policy"] == "same-origin"
    assert "server" not in response.headers


def test_the_console_csp_is_no_looser_than_the_contract() -> None:
    policy = directives(CONSOLE_CSP)
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == "'self'"
    assert policy["style-src"] == "'self'"
    assert policy["img-src"] == "'self' data:"
    assert policy["connect-src"] == "'self'"
    assert policy["frame-ancestors"] == "'none'"
    assert policy["base-uri"] == "'none'"
    assert policy["form-action"] == "'none'"
    assert policy["require-trusted-types-for"] == "'script'"
    # The one Trusted Types policy the script creates, and no other.
    assert policy["trusted-types"] == "bastion-note"
    assert re.findall(r"createPolicy\(", SCRIPT) == ["createPolicy("]
    assert 'NOTE_POLICY_NAME = "bastion-note"' in SCRIPT
    for loosening in ("'unsafe-inline'", "'unsafe-eval'", "'unsafe-hashes'", "http:", "https:",
                      "*", "blob:", "'allow-duplicates'"):
        assert loosening not in CONSOLE_CSP, loosening


async def test_app_redirects_to_the_page_with_a_path(client: httpx.AsyncClient) -> None:
    response = await client.get("/app", headers={"Host": "localhost"})
    assert response.status_code == 308
    assert response.headers["location"] == "/app/"  # a path: never built from Host
    assert_console_headers(response)


async def test_the_page_is_served_with_the_console_csp(client: httpx.AsyncClient) -> None:
    response = await client.get("/app/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.text == PAGE
    assert response.headers["cache-control"] == "no-cache"
    assert_console_headers(response)


@pytest.mark.parametrize("name", sorted(CONSOLE_FILES))
async def test_each_static_file_has_its_type_and_the_console_csp(
    client: httpx.AsyncClient, name: str
) -> None:
    response = await client.get(f"/app/static/{name}")
    assert response.status_code == 200
    expected = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8"}
    assert response.headers["content-type"] == expected[name]
    assert response.content == (STATIC / name).read_bytes()
    assert_console_headers(response)
    # A copy the browser kept is revalidated, and a matching one costs no body.
    etag = response.headers["etag"]
    again = await client.get(f"/app/static/{name}", headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    assert_console_headers(again)


@pytest.mark.parametrize(
    "path",
    [
        "/app/index.html",
        "/app/static/index.html",
        "/app/static/",
        "/app/static/app.js.map",
        "/app/static/../router.py",
        "/app/static/%2e%2e/router.py",
        "/app/static/APP.JS",
        "/app/static/app.js/",
        "/app/x",
        "/app/notes",
        "/appx",
    ],
)
async def test_nothing_else_under_app_is_served(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert response.status_code == 404, path
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == 404
    assert "router.py" not in response.text


async def test_only_get_reaches_the_files(client: httpx.AsyncClient) -> None:
    response = await client.post("/app/static/app.js")
    assert response.status_code == 405
    assert response.headers["content-type"].startswith("application/problem+json")


class _PageParts(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[dict[str, str | None]] = []
        self.script_text: list[str] = []
        self.styles = 0
        self.style_attributes: list[str] = []
        self.event_attributes: list[str] = []
        self.references: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        for name, _ in attrs:
            if name == "style":
                self.style_attributes.append(tag)
            if name.startswith("on"):
                self.event_attributes.append(f"{tag} {name}")
        if tag == "script":
            self.scripts.append(attributes)
            self._in_script = True
        if tag == "style":
            self.styles += 1
        for name in ("src", "href"):
            value = attributes.get(name)
            if value and not value.startswith(("#", "data:")):
                self.references.append(value)

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.script_text.append(data)


def test_the_page_has_no_inline_script_or_style() -> None:
    parts = _PageParts()
    parts.feed(PAGE)
    assert parts.scripts == [{"type": "module", "src": "/app/static/app.js"}]
    assert parts.script_text == []
    assert parts.styles == 0
    assert parts.style_attributes == []
    assert parts.event_attributes == []
    assert "javascript:" not in PAGE.lower()


async def test_every_file_the_page_names_is_served(client: httpx.AsyncClient) -> None:
    parts = _PageParts()
    parts.feed(PAGE)
    assert sorted(parts.references) == ["/app/static/app.css", "/app/static/app.js"]
    # No favicon request: the icon is an empty data: URI.
    assert '<link rel="icon" href="data:,">' in PAGE
    for reference in parts.references:
        response = await client.get(reference)
        assert response.status_code == 200, reference
    assert {reference.rsplit("/", 1)[1] for reference in parts.references} == set(CONSOLE_FILES)


def test_the_script_never_writes_html_into_the_page() -> None:
    """Text goes in through textContent, elements through createElement: none of the sinks
    that parse a string as HTML or run it appears in the script (DOMParser excepted: it
    builds an inert document, and only through the Trusted Types policy)."""
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                 "new Function", "setTimeout(\"", "srcdoc", "createContextualFragment",
                 "setHTMLUnsafe", "localStorage", "sessionStorage"):
        assert sink not in CODE, sink
    assert CODE.count("parseFromString(") == 1
    assert "parseFromString(markup," in CODE


def test_the_audit_filters_suggestions_are_the_servers_event_types() -> None:
    """A suggested type the server does not know would be a 422 from /admin/audit."""
    listed = re.search(r"const AUDIT_TYPES = \[(.*?)\];", SCRIPT, re.DOTALL)
    assert listed is not None
    suggested = re.findall(r'"([a-z_]+)"', listed.group(1))
    assert sorted(suggested) == sorted(member.value for member in AuditEventType)
