"""Swagger UI in a real browser (Debian's Chromium through Playwright) against the live server.

Proves the docs work under their CSP: the page renders the operations, loads nothing from any
other host, triggers no CSP violation, and "Authorize" offers the OAuth2 password flow.
Synchronous on purpose: Playwright's sync API cannot run inside pytest-asyncio's loop.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.browser import RENDER_TIMEOUT_MS, watched_page
from tests.e2e.conftest import LiveServer


@pytest.mark.browser
def test_swagger_ui_renders_under_its_csp_from_this_host_only(
    sqlite_server: LiveServer, tmp_path: Path
) -> None:
    with watched_page(f"127.0.0.1:{sqlite_server.port}") as watched:
        page = watched.page
        response = page.goto(f"{sqlite_server.base_url}/docs", wait_until="load")
        assert response is not None and response.status == 200

        # Swagger UI fetched /openapi.json and rendered an operation block per route.
        page.wait_for_selector(".opblock", timeout=RENDER_TIMEOUT_MS)
        page.get_by_text("/health/live", exact=True).first.wait_for(
            state="visible", timeout=RENDER_TIMEOUT_MS
        )
        assert page.locator(".opblock").count() >= 2
        page.screenshot(path=str(tmp_path / "docs.png"), full_page=True)

        # "Authorize" opens the OAuth2 password flow form.
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

        watched.assert_stayed_clean()
        assert f"{sqlite_server.base_url}/openapi.json" in watched.requested
