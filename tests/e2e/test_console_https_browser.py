"""The console over HTTPS in Chromium: the browser takes the ``__Host-`` cookies (Secure,
Path=/, no Domain: it refuses them otherwise) and the console signs in, writes and signs out
with them, as in production. The dev certificate is not one Chromium knows, so its errors are
ignored for this one context; everything else is the real server over TLS.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect, sync_playwright

from tests.e2e.browser import CHROMIUM, CHROMIUM_ARGS, RENDER_TIMEOUT_MS
from tests.e2e.console_browser import expect_page, heading, main_nav, sign_in, sign_out
from tests.e2e.test_tls import https_service
from tests.identity.helpers import PASSWORD, account_form

pytestmark = pytest.mark.browser

USERNAME = "tls.carol"


def test_the_console_works_over_https_with_host_prefixed_cookies(tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} not found: install the Debian package 'chromium'")
    with https_service(tmp_path / "tls") as server:
        base = server.url("localhost")
        with httpx.Client(base_url=base, verify=server.context(), timeout=10.0) as api:
            assert api.post("/auth/register", json=account_form(USERNAME)).status_code == 201
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
            )
            try:
                context = browser.new_context(ignore_https_errors=True)
                page = context.new_page()
                errors: list[str] = []
                page.on("pageerror", lambda error: errors.append(str(error)))
                page.goto(f"{base}/app/", wait_until="load")
                heading(page).wait_for(timeout=RENDER_TIMEOUT_MS)
                sign_in(page, USERNAME, PASSWORD)

                cookies = {cookie["name"]: cookie for cookie in context.cookies()}
                assert set(cookies) == {"__Host-bastion_session", "__Host-bastion_csrf"}
                session = cookies["__Host-bastion_session"]
                assert session.get("secure") and session.get("httpOnly")
                assert session.get("sameSite") == "Strict" and session.get("path") == "/"
                assert not cookies["__Host-bastion_csrf"].get("httpOnly")

                main_nav(page).get_by_role("link", name="New note", exact=True).click()
                expect_page(page, "New note")
                page.get_by_label("Title").fill("over TLS")
                page.get_by_label("Body (HTML)").fill("<p>sent with the __Host- cookies</p>")
                page.get_by_role("button", name="Create note").click()
                expect_page(page, "over TLS")
                expect(page.get_by_text("sent with the __Host- cookies")).to_be_visible()

                sign_out(page)
                assert context.cookies() == []
                assert errors == []
            finally:
                browser.close()
