"""Swagger UI in a real browser (Debian's Chromium through Playwright) against the live server.

Proves the docs work under their CSP: the page renders the operations, loads nothing from any
other host, triggers no CSP violation, and "Authorize" offers the OAuth2 password flow.
Synchronous on purpose: Playwright's sync API cannot run inside pytest-asyncio's loop.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import ConsoleMessage, Request, sync_playwright

from tests.e2e.conftest import LiveServer

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


@pytest.mark.browser
def test_swagger_ui_renders_under_its_csp_from_this_host_only(
    sqlite_server: LiveServer, tmp_path: Path
) -> None:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} not found: install the Debian package 'chromium' "
            "(Playwright's own browser download is not used)"
        )
    origin = f"127.0.0.1:{sqlite_server.port}"
    requested: list[str] = []
    console: list[str] = []
    page_errors: list[str] = []

    def on_request(request: Request) -> None:
        requested.append(request.url)

    def on_console(message: ConsoleMessage) -> None:
        console.append(f"{message.type}: {message.text}")

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            context.add_init_script(RECORD_CSP_VIOLATIONS)
            page = context.new_page()
            page.on("request", on_request)
            page.on("console", on_console)
            page.on("pageerror", lambda error: page_errors.append(str(error)))

            response = page.goto(f"{sqlite_server.base_url}/docs", wait_until="load")
            assert response is not None and response.status == 200

            # Swagger UI fetched /openapi.json and rendered an operation block per route.
            page.wait_for_selector(".opblock", timeout=RENDER_TIMEOUT_MS)
            page.get_by_text("/health/live", exact=True).first.wait_for(
                state="visible", timeout=RENDER_TIMEOUT_MS
            )
            assert page.locator(".opblock").count() >= 2
            page.screenshot(path=str(tmp_path / "docs.png"), full_page=True)

            # "Authorize" opens the OAuth2 password flow form (not submitted: no token route yet).
            authorize = page.get_by_role("button", name="Authorize").first
            authorize.wait_for(state="visible", timeout=RENDER_TIMEOUT_MS)
            authorize.click()
            dialog = page.locator(".modal-ux")
            dialog.wait_for(state="visible", timeout=RENDER_TIMEOUT_MS)
            assert dialog.locator("#oauth_username").is_visible()
            assert dialog.locator("#oauth_password").is_visible()
            assert dialog.locator("#oauth_password").get_attribute("type") == "password"
            text = dialog.inner_text()
            assert "password" in text.lower()
            assert "/auth/token" in text
            page.screenshot(path=str(tmp_path / "authorize.png"))

            violations = page.evaluate("window.__cspViolations")
        finally:
            browser.close()

    assert requested, "the page made no requests at all"
    foreign = [url for url in requested if not _same_origin(url, origin)]
    assert not foreign, f"requests to other hosts or schemes: {foreign}"
    assert f"http://{origin}/openapi.json" in requested
    assert violations == [], violations
    csp_messages = [line for line in console if any(m in line for m in CSP_MARKERS)]
    assert not csp_messages, csp_messages
    errors = [line for line in console if line.startswith("error:")]
    assert not errors, errors
    assert not page_errors, page_errors


def _same_origin(url: str, origin: str) -> bool:
    """Plain-HTTP to the live server itself; inline ``data:`` images carry no host at all."""
    parts = urlsplit(url)
    if parts.scheme == "data":
        return True
    return parts.scheme == "http" and parts.netloc == origin
