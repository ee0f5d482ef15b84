"""The web console's pages of issue 15 in a real browser (Debian's Chromium through
Playwright) against ``bastion serve``: the second factor, the mails' links, the step-up.

- A person turns on two-step sign-in (the QR code is an inline SVG image, the key is shown
  to type), keeps the ten recovery codes (copied, downloaded), and signs in with a code from
  the authenticator and then with a recovery code, which works once.
- Forgot password: the mail's link (its token in the fragment, gone from the address bar
  once the page has read it) sets a new password; the old one fails, the link works once.
- Verify email: from the account page, and signed out.
- New recovery codes and turning the second factor off from the account page: sign-in asks
  for the password only again.
- An admin signed in without a second factor cannot change users (BASTION_ADMIN_MFA=required)
  and is told why; signed in with one, can.

Mails are the development outbox's ``.eml`` files (no ``BASTION_SMTP_URL``); codes are
computed from the key the page shows (pyotp). Every page ends with ``assert_stayed_clean``.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import re
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pyotp
import pytest
from playwright.sync_api import Locator, Page, expect

from tests.e2e.api import Account, Api, connected
from tests.e2e.browser import RENDER_TIMEOUT_MS, WatchedPage, watched_page
from tests.e2e.conftest import Deployment
from tests.e2e.console_browser import (
    alert,
    console_deployment,
    console_origin,
    console_url,
    expect_page,
    forgive_failed_loads,
    go,
    main_nav,
    open_console,
    sign_in,
    sign_out,
    status,
)

ADMIN = "console.mfa.root"
ADMIN_PASSWORD = "the mfa console root's passphrase"
NEW_PASSWORD = "a brand new passphrase from the mail"
CODE_LABEL = "Code from your authenticator app"
TOTP_STEP = 30
MAIL_TIMEOUT = 20.0  # the sender is woken by each mail; generous for a busy machine
LINK = re.compile(r"https?://[^\s\"'<>]+/app/#/(?:verify-email|reset-password)\?token=[^\s\"'<>]+")

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """Development mode (mails are files in the outbox); an admin's changes to users need a
    second factor."""
    root = tmp_path_factory.mktemp("console-mfa")
    with console_deployment(root, ADMIN, ADMIN_PASSWORD, admin_mfa="required") as running:
        yield running


@pytest.fixture
def api(deployment: Deployment) -> Iterator[Api]:
    with connected(deployment.server) as client:
        yield client


@pytest.fixture
def user(api: Api) -> Account:
    """A new plain user of the test's own (the email is the username's at example.com)."""
    return api.new_account("console")


# -- the authenticator app ----------------------------------------------------------------


class Authenticator:
    """The person's app: codes of the key the page showed. The server takes a code of the
    step before, this one or the next, and each step once (a replay is refused); so each
    code here is of a step after the last one used, waiting when that would be too early."""

    def __init__(self, key_shown: str) -> None:
        self.totp = pyotp.TOTP(key_shown.replace(" ", ""))
        self.last_step: int | None = None

    def code(self) -> str:
        while True:
            current = int(time.time()) // TOTP_STEP
            step = current if self.last_step is None else max(self.last_step + 1, current)
            if step <= current + 1:
                self.last_step = step
                return self.totp.at(step * TOTP_STEP)
            time.sleep((step - 1) * TOTP_STEP - time.time() + 0.2)

    def wrong_code(self) -> str:
        """Six digits that are no code the server would take now."""
        current = int(time.time()) // TOTP_STEP
        near = {self.totp.at(step * TOTP_STEP) for step in range(current - 2, current + 3)}
        return next(code for code in ("000000", "111111", "222222") if code not in near)


# -- mails --------------------------------------------------------------------------------


def outbox(deployment: Deployment) -> Path:
    return deployment.server.data_dir / "outbox"


def mails_to(deployment: Deployment, address: str) -> list[str]:
    """The text of every mail in the outbox to ``address``, oldest first."""
    texts = []
    files = sorted(outbox(deployment).glob("*.eml"), key=lambda path: path.stat().st_mtime_ns)
    for path in files:
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        if address not in str(message["To"]):
            continue
        body = message.get_body(preferencelist=("plain",))
        assert body is not None, path
        texts.append(body.get_content())
    return texts


def link_in_new_mail(deployment: Deployment, address: str, seen: int, route: str) -> str:
    """The console route (``/verify-email?token=…``) of the link in the mail to ``address``
    after the ``seen`` it had, waiting for the outbox to write it."""
    deadline = time.monotonic() + MAIL_TIMEOUT
    while True:
        texts = mails_to(deployment, address)
        if len(texts) > seen:
            break
        assert time.monotonic() < deadline, f"no new mail to {address} in {outbox(deployment)}"
        time.sleep(0.2)
    assert len(texts) == seen + 1, texts
    links: list[str] = LINK.findall(texts[-1])
    assert len(set(links)) == 1, texts[-1]
    fragment = urlsplit(links[0]).fragment  # the server's public URL is not this port
    assert fragment.startswith(f"/{route}?token="), links
    return fragment


def open_link(page: Page, deployment: Deployment, route: str) -> None:
    page.goto(console_url(deployment.server, route), wait_until="load")


def assert_no_token_in_address(page: Page) -> None:
    href = page.evaluate("location.href")
    assert "token" not in href, href


# -- the console's steps --------------------------------------------------------------------


@contextlib.contextmanager
def console_as(deployment: Deployment, who: Account) -> Iterator[WatchedPage]:
    """A watched page of the console, signed in as ``who``."""
    with watched_page(console_origin(deployment)) as watched:
        open_console(watched.page, deployment.server)
        sign_in(watched.page, who.username, who.password)
        yield watched


def detail(page: Page, term: str) -> Locator:
    """The account page's detail named ``term``."""
    return page.locator(".details dt", has_text=term).locator("xpath=following-sibling::dd[1]")


def mfa_section(page: Page) -> Locator:
    return page.get_by_role("region", name="Two-step sign-in")


def turn_on_mfa(page: Page, who: Account) -> tuple[Authenticator, list[str]]:
    """From the account page: set up with the key shown, confirm, keep the codes."""
    go(page, "Account")
    expect_page(page, "Account")
    section = mfa_section(page)
    section.get_by_label("Your password").fill(who.password)
    section.get_by_role("button", name="Set up two-step sign-in").click()

    qr = section.get_by_role("img", name="QR code with the set-up key for your authenticator app")
    expect(qr).to_be_visible(timeout=RENDER_TIMEOUT_MS)
    assert (qr.get_attribute("src") or "").startswith("data:image/svg+xml")
    assert qr.evaluate("image => image.complete && image.naturalWidth > 0")  # it rendered
    key = section.get_by_label("Set-up key").inner_text()
    assert re.fullmatch(r"[A-Z2-7]{4}( [A-Z2-7]{1,4})+", key), key
    app = Authenticator(key)

    code = section.get_by_label(CODE_LABEL)
    expect(code).to_have_attribute("autocomplete", "one-time-code")
    expect(code).to_have_attribute("inputmode", "numeric")
    code.fill(app.wrong_code())
    section.get_by_role("button", name="Turn on two-step sign-in").click()
    expect(alert(page)).not_to_be_empty()
    expect(code).to_be_visible()  # still the step, to try again
    code.fill(app.code())
    section.get_by_role("button", name="Turn on two-step sign-in").click()

    codes = section.locator(".codes code")
    expect(codes).to_have_count(10, timeout=RENDER_TIMEOUT_MS)
    expect(section).to_contain_text("Store these now: they will not be shown again.")
    recovery = codes.all_inner_texts()
    assert len(set(recovery)) == 10, recovery
    return app, recovery


def leave_codes(page: Page) -> None:
    mfa_section(page).get_by_role("button", name="I have stored them").click()
    expect(status(page)).to_have_text("Two-step sign-in is on.")
    expect(detail(page, "Two-step sign-in")).to_have_text("On")


def start_sign_in(page: Page, who: Account) -> None:
    """Sends the username and ``who.password`` from the sign-in page (what follows is the
    test's to expect: the second step, a refusal, or the notes)."""
    expect_page(page, "Sign in")
    page.get_by_label("Username").fill(who.username)
    page.get_by_label("Password").fill(who.password)
    page.get_by_role("button", name="Sign in", exact=True).click()


def second_step(page: Page) -> Locator:
    step = page.locator(".second-factor")
    expect(step.get_by_role("heading", name="Two-step sign-in")).to_be_visible(
        timeout=RENDER_TIMEOUT_MS
    )
    return step


def verify(step: Locator, *, code: str = "", recovery: str = "") -> None:
    """Answers the second step with a code from the app or, switched to, a recovery code."""
    if recovery:
        if step.get_by_label("Recovery code").is_hidden():
            step.get_by_role("button", name="Use a recovery code instead").click()
        step.get_by_label("Recovery code").fill(recovery)
    else:
        step.get_by_label(CODE_LABEL).fill(code)
    step.get_by_role("button", name="Verify").click()


def signed_in(page: Page, who: Account) -> None:
    expect(main_nav(page)).to_contain_text(
        f"Signed in as {who.username}", timeout=RENDER_TIMEOUT_MS
    )


# -- 1. two-step sign-in --------------------------------------------------------------------


def test_two_step_sign_in_with_the_app_and_with_a_recovery_code(
    deployment: Deployment, user: Account
) -> None:
    with console_as(deployment, user) as watched:
        page = watched.page
        page.context.grant_permissions(["clipboard-read", "clipboard-write"])
        app, recovery = turn_on_mfa(page, user)

        # Copy and download: both the ten codes, one a line.
        section = mfa_section(page)
        text = "\n".join(recovery) + "\n"
        section.get_by_role("button", name="Copy the codes").click()
        expect(status(page)).to_have_text("The recovery codes are copied.")
        assert page.evaluate("navigator.clipboard.readText()") == text
        with page.expect_download() as downloading:
            section.get_by_role("button", name="Download as .txt").click()
        download = downloading.value
        assert download.suggested_filename == "bastion-recovery-codes.txt"
        assert Path(download.path()).read_text(encoding="utf-8") == text
        leave_codes(page)
        expect(page.locator(".codes")).to_have_count(0)  # shown once
        sign_out(page)

        # Sign in: the second step asks for a code; the password is no longer in the page.
        start_sign_in(page, user)
        step = second_step(page)
        assert page.locator("input[type=password]").count() == 0
        stored = page.evaluate("JSON.stringify([{...localStorage}, {...sessionStorage}])")
        assert user.password not in stored
        code = step.get_by_label(CODE_LABEL)
        expect(code).to_be_focused()
        expect(code).to_have_attribute("autocomplete", "one-time-code")
        expect(code).to_have_attribute("inputmode", "numeric")
        verify(step, code=app.wrong_code())
        expect(alert(page)).to_have_text(
            "That code is not valid. Enter the code the app shows now."
        )
        expect(step.get_by_role("heading", name="Two-step sign-in")).to_be_visible()
        verify(step, code=app.code())
        signed_in(page, user)
        expect_page(page, "Notes")
        sign_out(page)

        # With a recovery code instead: it works once.
        start_sign_in(page, user)
        verify(second_step(page), recovery=recovery[0])
        signed_in(page, user)
        sign_out(page)
        start_sign_in(page, user)
        step = second_step(page)
        verify(step, recovery=recovery[0])
        expect(alert(page)).to_have_text("That recovery code is not valid, or it was used already.")
        assert main_nav(page).is_hidden()
        verify(step, recovery=recovery[1])  # the next one does
        signed_in(page, user)
        forgive_failed_loads(watched, 400, 401)
        watched.assert_stayed_clean()


# -- 2. forgot password -----------------------------------------------------------------------


def test_a_forgotten_password_is_reset_through_the_mail(
    deployment: Deployment, api: Api, user: Account
) -> None:
    address = f"{user.username}@example.com"
    with watched_page(console_origin(deployment)) as watched:
        page = watched.page
        open_console(page, deployment.server)
        page.get_by_role("link", name="Forgot your password?").click()
        expect_page(page, "Forgot your password?")
        page.get_by_label("Email").fill(address)
        seen = len(mails_to(deployment, address))
        page.get_by_role("button", name="Send the link").click()
        said = "If an account has that address, a mail with a link is on its way."
        expect(status(page)).to_have_text(said)
        route = link_in_new_mail(deployment, address, seen, "reset-password")

        # An address no account has: the same words.
        page.get_by_label("Email").fill("nobody-at-all@example.com")
        page.get_by_role("button", name="Send the link").click()
        expect(status(page)).to_have_text(said)

        open_link(page, deployment, route)
        expect_page(page, "Set a new password")
        assert_no_token_in_address(page)
        page.get_by_label("New password", exact=True).fill(NEW_PASSWORD)
        page.get_by_label("New password, again").fill(NEW_PASSWORD + " but not quite")
        page.get_by_role("button", name="Set new password").click()
        expect(alert(page)).to_have_text("The new passwords do not match.")
        page.get_by_label("New password, again").fill(NEW_PASSWORD)
        page.get_by_role("button", name="Set new password").click()
        expect_page(page, "Sign in")
        expect(status(page)).to_contain_text("Your new password is set")

        # The old password fails, the new one signs in.
        start_sign_in(page, user)
        expect(alert(page)).not_to_be_empty()
        assert main_nav(page).is_hidden()
        sign_in(page, user.username, NEW_PASSWORD)
        sign_out(page)

        # The link works once.
        open_link(page, deployment, route)
        expect_page(page, "Set a new password")
        assert_no_token_in_address(page)
        page.get_by_label("New password", exact=True).fill(NEW_PASSWORD + " again")
        page.get_by_label("New password, again").fill(NEW_PASSWORD + " again")
        page.get_by_role("button", name="Set new password").click()
        expect(alert(page)).to_have_text(
            "This link is not valid: it may have expired or been used already."
        )
        forgive_failed_loads(watched, 400)
        watched.assert_stayed_clean()
    assert api.password_grant(user.username, user.password).status_code == 400
    assert api.password_grant(user.username, NEW_PASSWORD).status_code == 200


# -- 3. verify email --------------------------------------------------------------------------


def test_an_email_address_is_verified_from_the_account_page(
    deployment: Deployment, api: Api, user: Account
) -> None:
    other = api.new_account("signedout")
    address = f"{user.username}@example.com"
    with console_as(deployment, user) as watched:
        page = watched.page
        go(page, "Account")
        expect_page(page, "Account")
        expect(detail(page, "Email").locator(".tag")).to_have_text("Not verified")
        seen = len(mails_to(deployment, address))
        page.get_by_role("region", name="Email address").get_by_role(
            "button", name="Send verification mail"
        ).click()
        expect(status(page)).to_have_text(
            f"A mail with a link is on its way to {address}. Open the link to verify it."
        )
        route = link_in_new_mail(deployment, address, seen, "verify-email")

        open_link(page, deployment, route)
        expect_page(page, "Email verified")
        assert_no_token_in_address(page)
        page.get_by_role("link", name="Go to your account").click()
        expect_page(page, "Account")
        expect(detail(page, "Email").locator(".tag")).to_have_text("Verified")
        expect(page.get_by_role("region", name="Email address")).to_have_count(0)

        # The link works once.
        open_link(page, deployment, route)
        expect_page(page, "Email not verified")
        assert_no_token_in_address(page)
        sign_out(page)

        # Signed out, the link works too.
        other_address = f"{other.username}@example.com"
        seen = len(mails_to(deployment, other_address))
        api.ok("POST", "/auth/email/verification", other, 202)
        other_route = link_in_new_mail(deployment, other_address, seen, "verify-email")
        open_link(page, deployment, other_route)
        expect_page(page, "Email verified")
        assert_no_token_in_address(page)
        assert main_nav(page).is_hidden()
        page.get_by_role("link", name="Sign in").click()
        sign_in(page, other.username, other.password)
        forgive_failed_loads(watched, 400)
        watched.assert_stayed_clean()
    assert api.ok("GET", "/auth/me", api.sign_in(user))["email_verified"] is True
    assert api.ok("GET", "/auth/me", api.sign_in(other))["email_verified"] is True


# -- 4. new recovery codes, and the second factor off ---------------------------------------


def test_new_recovery_codes_and_turning_the_second_factor_off(
    deployment: Deployment, api: Api, user: Account
) -> None:
    with console_as(deployment, user) as watched:
        page = watched.page
        app, first_codes = turn_on_mfa(page, user)
        leave_codes(page)

        # New recovery codes: the password and a code.
        renew = page.get_by_role("form", name="Make new recovery codes")
        renew.get_by_label("Your password").fill(user.password)
        renew.get_by_label(CODE_LABEL).fill(app.code())
        renew.get_by_role("button", name="Make new recovery codes").click()
        codes = mfa_section(page).locator(".codes code")
        expect(codes).to_have_count(10, timeout=RENDER_TIMEOUT_MS)
        second_codes = codes.all_inner_texts()
        assert not set(second_codes) & set(first_codes)
        leave_codes(page)

        # Off: a wrong code is refused, the right one turns it off.
        off = page.get_by_role("form", name="Turn off two-step sign-in")
        off.get_by_label("Your password").fill(user.password)
        off.get_by_label(CODE_LABEL).fill(app.wrong_code())
        off.get_by_role("button", name="Turn off two-step sign-in").click()
        expect(alert(page)).not_to_be_empty()
        off.get_by_label(CODE_LABEL).fill(app.code())
        off.get_by_role("button", name="Turn off two-step sign-in").click()
        expect(status(page)).to_have_text("Two-step sign-in is off.")
        expect(detail(page, "Two-step sign-in")).to_have_text("Off")
        expect(
            mfa_section(page).get_by_role("button", name="Set up two-step sign-in")
        ).to_be_visible()
        sign_out(page)

        # Sign-in asks for the password only.
        sign_in(page, user.username, user.password)
        expect(page.locator(".second-factor")).to_have_count(0)
        forgive_failed_loads(watched, 400)
        watched.assert_stayed_clean()
    assert api.password_grant(user.username, user.password).status_code == 200


# -- 5. an admin's changes need the second factor -------------------------------------------


def test_an_admin_needs_the_second_factor_to_change_users(deployment: Deployment, api: Api) -> None:
    victim = api.new_account("stepup")
    admin = Account("", ADMIN, ADMIN_PASSWORD)
    with console_as(deployment, admin) as watched:
        page = watched.page
        go(page, "Users")
        expect_page(page, "Users")
        row = page.get_by_role("row").filter(
            has=page.get_by_role("rowheader", name=victim.username, exact=True)
        )
        row.get_by_role("button", name="Disable").click()
        expect(alert(page)).to_have_text(
            "Changing users needs a sign-in with your second factor: set up MFA in Account, "
            "then sign in again."
        )
        expect(row.get_by_role("button", name="Disable")).to_be_visible()

        # With MFA on, and signed in with it: the change goes through.
        app, _ = turn_on_mfa(page, admin)
        leave_codes(page)
        sign_out(page)
        start_sign_in(page, admin)
        verify(second_step(page), code=app.code())
        signed_in(page, admin)
        go(page, "Users")
        expect_page(page, "Users")
        expect(row.locator("td").nth(3)).to_have_text("Off")  # the victim has no MFA
        row.get_by_role("button", name="Disable").click()
        expect(status(page)).to_have_text(f"{victim.username} is disabled.")
        forgive_failed_loads(watched, 400, 401, 403)
        watched.assert_stayed_clean()
    assert api.password_grant(victim.username, victim.password).status_code == 400
