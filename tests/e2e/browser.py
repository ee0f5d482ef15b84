"""Debian's Chromium through Playwright, with a page that records what it did.

Shared by the browser tests: each opens a ``watched_page``, drives it, and ends with
``assert_stayed_clean``: no request to another host, no CSP violation, no console or page
error. Synchronous on purpose: Playwright's sync API cannot run inside pytest-asyncio's loop.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import ConsoleMessage, Page, Request, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
RENDER_TIMEOUT_MS = 20_000
CSP_MARKERS = ("Content Security Policy", "Content-Security-Policy", "Refused to")
# Runs before any page script (injected by the browser, so the page's CSP does not block it):
# records every violation the page's policy reports, console or not.
RECORD_CSP_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__cspViolations.push(`${event.violatedDirective} ${event.blockedURI}`);
});
"""


@dataclass
class WatchedPage:
    page: Page
    origin: str
    requests: list[Request] = field(default_factory=list)
    console: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)

    @property
    def requested(self) -> list[str]:
        return [request.url for request in self.requests]

    def assert_stayed_clean(self) -> None:
        """Only this server was contacted, and the page's CSP was never violated."""
        violations = self.page.evaluate("window.__cspViolations")
        assert self.requested, "the page made no requests at all"
        foreign = [url for url in self.requested if not same_origin(url, self.origin)]
        assert not foreign, f"requests to other hosts or schemes: {foreign}"
        assert violations == [], violations
        csp_messages = [line for line in self.console if any(m in line for m in CSP_MARKERS)]
        assert not csp_messages, csp_messages
        errors = [line for line in self.console if line.startswith("error:")]
        assert not errors, errors
        assert not self.page_errors, self.page_errors


def same_origin(url: str, origin: str) -> bool:
    """Plain-HTTP to the live server itself; inline ``data:`` images carry no host at all."""
    parts = urlsplit(url)
    if parts.scheme == "data":
        return True
    return parts.scheme == "http" and parts.netloc == origin


@contextmanager
def watched_page(origin: str) -> Iterator[WatchedPage]:
    """A fresh Chromium page that records requests, console lines and errors; fails (never
    skips) when Debian's Chromium is missing."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} not found: install the Debian package 'chromium' "
            "(Playwright's own browser download is not used)"
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            context.add_init_script(RECORD_CSP_VIOLATIONS)
            watched = WatchedPage(page=context.new_page(), origin=origin)

            def on_console(message: ConsoleMessage) -> None:
                watched.console.append(f"{message.type}: {message.text}")

            def on_request(request: Request) -> None:
                watched.requests.append(request)

            watched.page.on("request", on_request)
            watched.page.on("console", on_console)
            watched.page.on("pageerror", lambda error: watched.page_errors.append(str(error)))
            yield watched
        finally:
            browser.close()
