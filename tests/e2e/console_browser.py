"""Driving the web console (/app) in Chromium, and what its browser tests need around it.

The console's own pages through Playwright (sign in, the main navigation, the headings and
message regions every page has), a way to forgive the lines Chromium itself logs for an
answer the test provoked on purpose (a 401 after a revoked session, a 404 for an image a note
names), a second local origin for the attacker's page of the CSRF test, a note row written
straight into the SQLite file (the sanitizer bypassed), and where the screenshot goes.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from playwright.sync_api import Locator, Page, expect

from tests.e2e.api import FAST_HASHING_ENV, ROOMY_LOGIN_LIMIT
from tests.e2e.browser import RENDER_TIMEOUT_MS, WatchedPage
from tests.e2e.conftest import REPO_ROOT, Deployment, LiveServer, deployed

CONSOLE_PATH = "/app/"
SESSION_COOKIE = "bastion_session"
CSRF_COOKIE = "bastion_csrf"
# Chromium's own console line for an HTTP error answer to a fetch or an image; the page's
# code logs nothing. ``forgive_failed_loads`` drops it for the statuses a test provoked.
FAILED_LOAD = "error: Failed to load resource: the server responded with a status of {status}"

# `make screenshots` sets this to write docs/images/console.png; otherwise the image goes to
# the test's tmp dir, so `make test` leaves the checkout alone.
UPDATE_SCREENSHOTS = "BASTION_UPDATE_SCREENSHOTS"
SCREENSHOT = REPO_ROOT / "docs" / "images" / "console.png"


# What the console's tests give ``bastion serve``: limits that the flows never reach (the
# limiters are tested elsewhere) and the cheapest hashing.
ROOMY_CONSOLE_SETTINGS = {
    "rate_limit_login": ROOMY_LOGIN_LIMIT,
    "rate_limit_register": "1000/hour",
    "rate_limit_default": "10000/minute",
    **FAST_HASHING_ENV,
}


@contextlib.contextmanager
def console_deployment(
    root: Path, admin: str, password: str, **variables: str
) -> Iterator[Deployment]:
    """``bastion serve`` on SQLite with ``ROOMY_CONSOLE_SETTINGS`` and ``variables``, and an
    operator's admin ``admin`` (``bastion create-admin``)."""
    with deployed(root, "sqlite", None, **ROOMY_CONSOLE_SETTINGS, **variables) as running:
        running.create_admin(admin, password)
        yield running


def console_origin(deployment: Deployment) -> str:
    """What ``watched_page`` takes for the deployment's own origin."""
    return f"127.0.0.1:{deployment.server.port}"


def console_url(server: LiveServer, route: str = "") -> str:
    """The console's page, at ``route`` (a hash route such as ``/notes``) when given."""
    return f"{server.base_url}{CONSOLE_PATH}" + (f"#{route}" if route else "")


def heading(page: Page) -> Locator:
    return page.get_by_role("heading", level=1)


def expect_page(page: Page, title: str) -> None:
    """The console shows the page whose heading is ``title``."""
    expect(heading(page)).to_have_text(title, timeout=RENDER_TIMEOUT_MS)


def alert(page: Page) -> Locator:
    return page.get_by_role("alert")


def status(page: Page) -> Locator:
    return page.get_by_role("status")


def main_nav(page: Page) -> Locator:
    return page.get_by_role("navigation", name="Main")


def go(page: Page, link: str) -> None:
    """Follows a link of the main navigation."""
    main_nav(page).get_by_role("link", name=link, exact=True).click()


def open_console(page: Page, server: LiveServer, route: str = "") -> None:
    response = page.goto(console_url(server, route), wait_until="load")
    assert response is not None and response.status == 200, response
    heading(page).wait_for(timeout=RENDER_TIMEOUT_MS)


def sign_in(page: Page, username: str, password: str) -> None:
    """Signs in through the sign-in page, which must be showing."""
    expect_page(page, "Sign in")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(main_nav(page)).to_contain_text(f"Signed in as {username}", timeout=RENDER_TIMEOUT_MS)


def sign_out(page: Page) -> None:
    main_nav(page).get_by_role("button", name="Sign out", exact=True).click()
    expect_page(page, "Sign in")


def cookie(page: Page, name: str) -> str:
    values = [c.get("value", "") for c in page.context.cookies() if c.get("name") == name]
    assert len(values) == 1, f"{name}: {values}"
    return values[0]


def forgive_failed_loads(watched: WatchedPage, *statuses: int) -> list[str]:
    """Drops Chromium's "Failed to load resource" lines for ``statuses`` from what the page
    recorded (returned), so that ``assert_stayed_clean`` judges everything else."""
    prefixes = tuple(FAILED_LOAD.format(status=status) for status in statuses)
    forgiven = [line for line in watched.console if line.startswith(prefixes)]
    watched.console[:] = [line for line in watched.console if not line.startswith(prefixes)]
    return forgiven


@contextlib.contextmanager
def attacker_site(page_html: str) -> Iterator[int]:
    """A plain HTTP server on another port of the loopback that answers every GET with
    ``page_html`` (no CSP: the attacker's own page): reachable as ``127.0.0.1:<port>``
    (same site as the console, another origin) and ``localhost:<port>`` (another site)."""
    body = page_html.encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            return  # quiet: the test reads what the browser saw

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def insert_raw_note(database: Path, owner_id: str, title: str, body: str) -> str:
    """A note row written straight into the server's SQLite file, past the API and its
    sanitizer, as an attacker with write access to the database would; its id."""
    note_id = uuid.uuid4()
    now = datetime.now(UTC).replace(tzinfo=None).isoformat(sep=" ")
    size = len(title.encode()) + len(body.encode())
    with contextlib.closing(sqlite3.connect(database, timeout=10)) as connection, connection:
        connection.execute(
            "INSERT INTO notes (id, owner_id, title, body, size_bytes, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (note_id.hex, uuid.UUID(owner_id).hex, title, body, size, now, now),
        )
    return str(note_id)


def updating_screenshots() -> bool:
    """Under `make screenshots` (tests/conftest.py leaves this one ``BASTION_*`` variable)."""
    return os.environ.get(UPDATE_SCREENSHOTS) == "1"


def screenshot_path(tmp_path: Path) -> Path:
    """docs/images/console.png under `make screenshots`, the test's tmp dir otherwise."""
    if updating_screenshots():
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        return SCREENSHOT
    return tmp_path / "console.png"
