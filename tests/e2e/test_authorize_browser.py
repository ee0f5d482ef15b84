"""Swagger UI's "Authorize" with the OAuth2 password flow, in a real browser (Debian's
Chromium through Playwright) against the live server.

Proves what CONTRACT.md promises for /docs: a user registered over HTTP logs in through the
docs' Authorize dialog (Swagger UI posts the password grant to /auth/token itself), the docs
then call ``GET /auth/me`` with the bearer token and show that user, all from this host
only and without a single CSP violation. Synchronous on purpose: Playwright's sync API cannot
run inside pytest-asyncio's loop.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Page

from tests.e2e.api import connected
from tests.e2e.browser import RENDER_TIMEOUT_MS, watched_page
from tests.e2e.conftest import LiveServer
from tests.identity.helpers import PASSWORD

USERNAME = "swagger.user"
SCREENSHOTS = ("authorized.png", "me.png")


def authorize(page: Page, screenshot: Path) -> None:
    """Open "Authorize", log in with the password flow, see "Logout", close the dialog."""
    page.get_by_role("button", name="Authorize").first.click()
    dialog = page.locator(".modal-ux")
    dialog.wait_for(state="visible", timeout=RENDER_TIMEOUT_MS)
    # The dialog lists every scheme: the password flow's, and the browser session cookie's.
    oauth = dialog.locator(".auth-container", has_text="OAuth2PasswordBearer")
    oauth.locator("#oauth_username").fill(USERNAME)
    oauth.locator("#oauth_password").fill(PASSWORD)
    # Swagger labels its buttons for screen readers ("Apply given OAuth2 credentials",
    # "Remove authorization"); the visible text is what a user sees and clicks.
    submit = oauth.locator("button.modal-btn.authorize", has_text="Authorize")
    with page.expect_response(lambda r: urlsplit(r.url).path == "/auth/token") as token_info:
        submit.click()
    token_response = token_info.value
    assert token_response.status == 200, token_response.text()
    logout = oauth.locator("button.modal-btn", has_text="Logout")
    logout.wait_for(state="visible", timeout=RENDER_TIMEOUT_MS)
    assert "Authorized" in oauth.inner_text()
    assert not dialog.locator("#oauth_password").is_visible()
    page.screenshot(path=str(screenshot))
    dialog.locator("button.modal-btn", has_text="Close").first.click()
    dialog.wait_for(state="hidden", timeout=RENDER_TIMEOUT_MS)


def execute_me(page: Page, screenshot: Path) -> tuple[str, str]:
    """Expand ``GET /auth/me``, "Try it out", "Execute"; the status and body it shows."""
    operation = page.locator(".opblock-get").filter(
        has=page.locator(".opblock-summary-path", has_text="/auth/me")
    )
    operation.locator(".opblock-summary").first.click()
    operation.get_by_role("button", name="Try it out").click()
    with page.expect_response(lambda r: urlsplit(r.url).path == "/auth/me") as me_info:
        operation.get_by_role("button", name="Execute").click()
    assert me_info.value.status == 200, me_info.value.text()
    live = operation.locator(".live-responses-table .response")
    live.first.wait_for(state="visible", timeout=RENDER_TIMEOUT_MS)
    status = live.first.locator(".response-col_status").inner_text().strip()
    body = live.first.locator(".response-col_description .microlight").first.inner_text()
    operation.scroll_into_view_if_needed()
    page.screenshot(path=str(screenshot), full_page=True)
    return status, body


@pytest.mark.browser
def test_authorize_with_the_password_flow_then_try_auth_me(
    sqlite_server: LiveServer, tmp_path: Path
) -> None:
    with connected(sqlite_server) as api:
        user = api.register(USERNAME, email="swagger@example.com", age=33)
    with watched_page(f"127.0.0.1:{sqlite_server.port}") as watched:
        page = watched.page
        response = page.goto(f"{sqlite_server.base_url}/docs", wait_until="load")
        assert response is not None and response.status == 200
        page.wait_for_selector(".opblock", timeout=RENDER_TIMEOUT_MS)

        authorize(page, tmp_path / SCREENSHOTS[0])
        status, body = execute_me(page, tmp_path / SCREENSHOTS[1])

        stored = page.evaluate("JSON.stringify(Object.assign({}, window.localStorage))")
        watched.assert_stayed_clean()
        me_authorization = [
            request.headers.get("authorization")
            for request in watched.requests
            if urlsplit(request.url).path == "/auth/me"
        ]
        assert f"{sqlite_server.base_url}/auth/token" in watched.requested

    assert status == "200", status
    shown = json.loads(body)
    assert shown["username"] == USERNAME, shown
    assert shown == user, shown
    # The docs sent the token Swagger obtained, as a bearer token, and kept it out of storage.
    assert len(me_authorization) == 1, me_authorization
    assert (me_authorization[0] or "").startswith("Bearer "), "no bearer token sent"
    token = (me_authorization[0] or "")[len("Bearer ") :]
    assert token not in stored, "the access token was persisted in localStorage"
    assert PASSWORD not in stored
