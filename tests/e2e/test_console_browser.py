"""The web console (/app) in a real browser (Debian's Chromium through Playwright) against
``bastion serve``, in cookie mode.

- A person registers and signs in through the pages, creates, searches, edits, shares and
  deletes notes, and signs out; the old session cookie is refused afterwards.
- An admin (made by ``bastion create-admin``) changes a user's roles and disables them through
  the users page (their API calls fail at once) and reads the audit log, filtered and paged.
- Stored XSS: notes carrying classic payloads, through the API and also written straight into
  the SQLite file past the sanitizer, are shown without a dialog, without ``window.__xss``
  and without a CSP violation; Trusted Types refuses an HTML string in the live page.
- CSRF: a page on another origin of the same host (so the SameSite=Strict cookie is sent, and
  the CSRF cookie is even readable there) and on another site tries fetches and forms while
  the victim is signed in; nothing is created, changed or deleted, nobody is signed out.
- A session ended elsewhere sends the console back to its sign-in page.
- A screenshot of the notes list (docs/images/console.png under `make screenshots`).

One server for the module; each test makes its own users. Every page ends with
``assert_stayed_clean``: this host only, no CSP violation, no console error (Chromium's own
line for an HTTP error the test provoked on purpose is forgiven, by status).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Dialog, Page, expect

from tests.e2e.api import FAST_HASHING_ENV, ROOMY_LOGIN_LIMIT, Account, Api, connected
from tests.e2e.browser import RENDER_TIMEOUT_MS, watched_page
from tests.e2e.conftest import Deployment, deployed, logger_of
from tests.e2e.console_browser import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    alert,
    attacker_site,
    console_url,
    cookie,
    expect_page,
    forgive_failed_loads,
    go,
    heading,
    insert_raw_note,
    main_nav,
    open_console,
    screenshot_path,
    sign_in,
    sign_out,
    status,
)
from tests.identity.helpers import PASSWORD

ADMIN = "console.root"
ADMIN_PASSWORD = "console root's passphrase, long enough"
LOCKOUT_THRESHOLD = 5  # BASTION_LOCKOUT_THRESHOLD's default
NEW_PASSWORD = "a new passphrase for the console test"

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """``bastion serve`` on SQLite (the XSS test writes into its file), roomy limits, and
    the operator's admin."""
    root = tmp_path_factory.mktemp("console")
    variables = {
        "rate_limit_login": ROOMY_LOGIN_LIMIT,
        "rate_limit_register": "1000/hour",
        "rate_limit_default": "10000/minute",
        **FAST_HASHING_ENV,
    }
    with deployed(root, "sqlite", None, **variables) as running:
        running.create_admin(ADMIN, ADMIN_PASSWORD)
        yield running


@pytest.fixture
def api(deployment: Deployment) -> Iterator[Api]:
    with connected(deployment.server) as client:
        yield client


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def origin(deployment: Deployment) -> str:
    return f"127.0.0.1:{deployment.server.port}"


def notes_of(api: Api, who: Account) -> dict[str, dict[str, Any]]:
    page = api.ok("GET", "/notes", who, params={"limit": "100"})
    assert page["next_cursor"] is None
    return {note["id"]: note for note in page["items"]}


def refused_cookie(deployment: Deployment, session: str) -> int:
    with deployment.server.client(cookies={SESSION_COOKIE: session}) as client:
        return client.get("/auth/me").status_code


# -- 1. a person's notes ------------------------------------------------------------------


def test_a_person_registers_and_works_with_notes(deployment: Deployment, api: Api) -> None:
    server = deployment.server
    username = unique("carol")
    friend = api.new_account("friend")
    with watched_page(origin(deployment)) as watched:
        page = watched.page
        open_console(page, server)
        expect_page(page, "Sign in")

        # Register; the console signs the new account in.
        page.get_by_role("link", name="Create one").click()
        expect_page(page, "Create an account")
        page.get_by_label("Username").fill(username)
        page.get_by_label("Email").fill(f"{username}@example.com")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_label("Age").fill("41")
        page.get_by_role("button", name="Create account").click()
        expect_page(page, "Notes")
        expect(status(page)).to_have_text("Your account is ready.")
        expect(main_nav(page)).to_contain_text(f"Signed in as {username}")
        assert cookie(page, CSRF_COOKIE)

        # Two notes.
        created = {}
        for title, body in [
            ("Groceries", "<p>Buy <em>oat milk</em> and <a href='https://example.com/x'>x</a></p>"),
            ("Travel plans", "<ul><li>Lisbon</li><li>Porto</li></ul>"),
        ]:
            go(page, "New note")
            expect_page(page, "New note")
            page.get_by_label("Title").fill(title)
            page.get_by_label("Body (HTML)").fill(body)
            page.get_by_role("button", name="Create note").click()
            expect_page(page, title)
            expect(status(page)).to_have_text("Note created.")
            created[title] = page.url.rsplit("/", 1)[1]
        expect(page.locator(".note-body li")).to_have_text(["Lisbon", "Porto"])

        # Paging: one note a page, "Show more notes" appends the next.
        page.goto(console_url(server, "/notes?limit=1"))
        expect(page.locator(".note-list li")).to_have_count(1)
        page.get_by_role("button", name="Show more notes").click()
        expect(page.locator(".note-list .note-title")).to_have_text(["Travel plans", "Groceries"])
        expect(page.get_by_role("button", name="Show more notes")).to_be_hidden()

        # Search finds the one, not the other.
        go(page, "Notes")
        expect(page.locator(".note-list li")).to_have_count(2)
        page.get_by_label("Search notes").fill("groceries")
        page.get_by_role("button", name="Search", exact=True).click()
        expect(page.locator(".note-list .note-title")).to_have_text(["Groceries"])
        assert "q=groceries" in page.url

        # Edit it.
        page.get_by_role("link", name="Groceries").click()
        expect_page(page, "Groceries")
        expect(page.locator(".note-body em")).to_have_text("oat milk")
        link = page.locator(".note-body a")
        expect(link).to_have_attribute("href", "https://example.com/x")
        expect(link).to_have_attribute("rel", "noopener noreferrer nofollow")
        page.get_by_role("link", name="Edit").click()
        expect_page(page, "Edit note")
        page.get_by_label("Title").fill("Groceries for the week")
        page.get_by_label("Body (HTML)").fill("<p>Buy <strong>bread</strong></p>")
        page.get_by_role("button", name="Save changes").click()
        expect_page(page, "Groceries for the week")
        expect(status(page)).to_have_text("Note saved.")
        expect(page.locator(".note-body strong")).to_have_text("bread")

        # Share it with the friend, by username.
        page.get_by_label("Share with (username)").fill(friend.username)
        page.get_by_role("button", name="Share", exact=True).click()
        expect(status(page)).to_have_text(f"Shared with {friend.username}.")
        expect(page.locator(".note .meta")).to_contain_text(f"Shared with {friend.username}")

        # Delete the other one (the page asks once more, in the page).
        page.goto(console_url(server, f"/notes/{created['Travel plans']}"))
        expect_page(page, "Travel plans")
        page.get_by_role("button", name="Delete", exact=True).click()
        page.get_by_role("button", name="Delete this note").click()
        expect_page(page, "Notes")
        expect(status(page)).to_have_text("Deleted “Travel plans”.")
        expect(page.locator(".note-list .note-title")).to_have_text(["Groceries for the week"])

        # Sign out: the sign-in page, and the old cookie is refused by the API.
        session = cookie(page, SESSION_COOKIE)
        sign_out(page)
        expect(status(page)).to_have_text("You are signed out.")
        assert not any(c.get("name") == SESSION_COOKIE for c in page.context.cookies())
        page.reload()
        expect_page(page, "Sign in")
        watched.assert_stayed_clean()

    assert refused_cookie(deployment, session) == 401
    owner = api.sign_in(Account("", username, PASSWORD))
    notes = notes_of(api, owner)
    assert set(notes) == {created["Groceries"]}
    kept = notes[created["Groceries"]]
    assert kept["title"] == "Groceries for the week"
    assert kept["body"] == "<p>Buy <strong>bread</strong></p>"
    assert kept["shared_with"] == [friend.username]
    # The friend sees it, read-only.
    seen = api.ok("GET", f"/notes/{kept['id']}", friend)
    assert seen["title"] == "Groceries for the week"
    assert kept["id"] in notes_of(api, friend)


# -- 2. administration ----------------------------------------------------------------------


def test_an_admin_disables_a_user_and_reads_the_audit_log(
    deployment: Deployment, api: Api
) -> None:
    server = deployment.server
    victim = api.new_account("victim")
    admin = api.sign_in(Account("", ADMIN, ADMIN_PASSWORD))
    with watched_page(origin(deployment)) as watched:
        page = watched.page
        open_console(page, server)
        sign_in(page, ADMIN, ADMIN_PASSWORD)
        go(page, "Users")
        expect_page(page, "Users")
        row = page.get_by_role("row").filter(
            has=page.get_by_role("rowheader", name=victim.username, exact=True)
        )
        expect(row).to_have_count(1)

        # Grant the auditor role.
        row.get_by_role("checkbox", name="auditor").check()
        row.get_by_role("button", name="Save roles").click()
        expect(status(page)).to_have_text(f"Roles of {victim.username} saved.")
        users = api.ok("GET", "/admin/users", admin, params={"limit": "100"})["items"]
        assert [u["roles"] for u in users if u["id"] == victim.id] == [["auditor", "user"]]

        # Disable: the user's tokens stop working at once.
        api.sign_in(victim)
        assert api.me(victim.access_token).status_code == 200
        row.get_by_role("button", name="Disable").click()
        expect(status(page)).to_have_text(f"{victim.username} is disabled.")
        expect(row).to_contain_text("Disabled")
        expect(row.get_by_role("button", name="Enable")).to_be_visible()
        assert api.me(victim.access_token).status_code == 401
        assert api.password_grant(victim.username, PASSWORD).status_code == 400

        # The audit log, filtered by type: the disable is there, and only disables.
        go(page, "Audit log")
        expect_page(page, "Audit log")
        page.get_by_label("Event type").fill("disable")
        page.get_by_role("button", name="Apply filters").click()
        rows = page.locator("table.audit tbody tr")
        expect(rows.first).to_be_visible(timeout=RENDER_TIMEOUT_MS)
        assert "type=disable" in page.url
        types = set(page.locator("table.audit tbody td.event-type").all_inner_texts())
        assert types == {"disable"}, types
        expect(rows.filter(has_text=victim.id)).to_have_count(1)

        # Paging: two events a page, "Show older events" appends the next page.
        page.goto(console_url(server, "/admin/audit?type=login_success&limit=2"))
        expect(rows).to_have_count(2, timeout=RENDER_TIMEOUT_MS)
        page.get_by_role("button", name="Show older events").click()
        expect(rows).to_have_count(4, timeout=RENDER_TIMEOUT_MS)
        numbers = page.locator("table.audit tbody tr td:first-child").all_inner_texts()
        seqs = [int(text) for text in numbers]
        assert seqs == sorted(seqs, reverse=True) and len(set(seqs)) == 4, seqs
        types = set(page.locator("table.audit tbody td.event-type").all_inner_texts())
        assert types == {"login_success"}, types

        # Re-enable; then, once failed sign-ins have locked the account, unlock it.
        page.goto(console_url(server, "/admin/users"))
        row.get_by_role("button", name="Enable").click()
        expect(status(page)).to_have_text(f"{victim.username} is enabled.")
        expect(row.get_by_role("button", name="Unlock")).to_have_count(0)
        for _ in range(LOCKOUT_THRESHOLD):
            assert api.password_grant(victim.username, "not the password at all").status_code == 400
        assert api.password_grant(victim.username, PASSWORD).status_code == 400  # locked
        page.reload()
        expect(row).to_contain_text("locked until", timeout=RENDER_TIMEOUT_MS)
        row.get_by_role("button", name="Unlock").click()
        expect(status(page)).to_have_text(f"{victim.username} is unlocked.")
        expect(row).not_to_contain_text("locked until")
        watched.assert_stayed_clean()
    assert api.password_grant(victim.username, PASSWORD).status_code == 200


# -- 3. stored XSS ------------------------------------------------------------------------

# Each is a note's title and its body; "__xss" is what would be set if any of them ran.
XSS_PAYLOADS = [
    "<script>window.__xss=1</script>",
    '<img src=x onerror="window.__xss=1">',
    '<a href="javascript:window.__xss=1">x</a>',
    '<a href=" jAvAsCrIpT:window.__xss=1">x</a>',
    '<svg onload="window.__xss=1"><circle r="4"/></svg>',
    "<svg><script>window.__xss=1</script></svg>",
    '<iframe srcdoc="<script>parent.__xss=1</script>"></iframe>',
    '<details open ontoggle="window.__xss=1"><summary>s</summary></details>',
    '<math><mtext><table><mglyph><style><img src=x onerror="window.__xss=1">',
    '<noscript><p title="</noscript><img src=x onerror=window.__xss=1>">',
    '<object data="javascript:window.__xss=1"></object>',
    '<form><button formaction="javascript:window.__xss=1">go</button></form>',
    '<div style="background:url(javascript:window.__xss=1)" onmouseover="window.__xss=1">h</div>',
    '<body onload="window.__xss=1">',
    '<a href="data:text/html,<script>alert(1)</script>">d</a>',
]
# Past the sanitizer: exactly what a write into the database could leave there.
RAW_BODY = (
    '<p>raw</p><img src=x onerror="window.__xss=1"><script>window.__xss=1</script>'
    '<a href="javascript:window.__xss=1" id="raw-link">click</a>'
    '<svg onload="window.__xss=1"></svg><iframe srcdoc="<script>parent.__xss=1</script>">'
    '</iframe><div onmouseover="window.__xss=1" id="raw-hover">hover</div>'
    '<img src="https://tracker.example/p.gif" alt="pixel">'
    '<a href="https://example.com/ok" onclick="window.__xss=1">fine</a>'
)
RAW_TITLE = '<img src=x onerror="window.__xss=1">'
RAW_HANDLERS = len(re.findall(r" on[a-z]+=", RAW_BODY))
INLINE_HANDLER_REFUSED = "Executing inline event handler violates the following Content Security"
# What the page holds after a note is shown: anything here but nothing but the allow-list.
INSPECT_PAGE = """() => {
  const everything = [...document.querySelectorAll("*")];
  const shown = [...document.querySelectorAll(".note-body *, .note-list *, h1 *")];
  const dangerous = new Set(["script", "iframe", "frame", "object", "embed", "svg", "math",
    "form", "button", "input", "style", "link", "meta", "base", "details", "template"]);
  return {
    xss: window.__xss === undefined ? null : String(window.__xss),
    handlers: everything
      .filter((e) => [...e.attributes].some((a) => a.name.toLowerCase().startsWith("on")))
      .map((e) => e.localName),
    styled: shown.filter((e) => e.hasAttribute("style")).length,
    dangerous: shown.filter((e) => dangerous.has(e.localName)).map((e) => e.localName),
    links: [...document.querySelectorAll(".note-body a[href]")]
      .map((a) => new URL(a.href).protocol),
    images: [...document.querySelectorAll(".note-body img")].map((i) => new URL(i.src).origin),
  };
}"""
TRUSTED_TYPES_PROBE = """() => {
  try {
    document.createElement("div").innerHTML = "<b>x</b>";
    return "assigned";
  } catch (error) {
    return error.name;
  }
}"""


def assert_inert(page: Page, dialogs: list[str], where: str) -> None:
    found = page.evaluate(INSPECT_PAGE)
    assert dialogs == [], (where, dialogs)
    assert found["xss"] is None, (where, found)
    assert found["handlers"] == [], (where, found)
    assert found["styled"] == 0, (where, found)
    assert found["dangerous"] == [], (where, found)
    assert set(found["links"]) <= {"http:", "https:", "mailto:"}, (where, found)
    origin_of_page = page.evaluate("location.origin")
    assert set(found["images"]) <= {origin_of_page}, (where, found)


def test_stored_xss_never_runs_even_past_the_sanitizer(deployment: Deployment, api: Api) -> None:
    server = deployment.server
    author = api.new_account("xss")
    ids = []
    for payload in XSS_PAYLOADS:
        note = api.ok("POST", "/notes", author, 201, json={"title": payload, "body": payload})
        ids.append((note["id"], payload))
    raw_id = insert_raw_note(deployment.database, author.id, RAW_TITLE, RAW_BODY)
    stored = api.ok("GET", f"/notes/{raw_id}", author)
    assert stored["body"] == RAW_BODY  # the sanitizer really was bypassed

    dialogs: list[str] = []

    def on_dialog(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    with watched_page(origin(deployment)) as watched:
        page = watched.page
        page.on("dialog", on_dialog)
        open_console(page, server)
        sign_in(page, author.username, author.password)
        expect(page.locator(".note-list .note-title")).to_have_count(len(XSS_PAYLOADS) + 1)
        titles = page.locator(".note-list .note-title").all_text_contents()
        assert sorted(titles) == sorted([*XSS_PAYLOADS, RAW_TITLE])  # shown as text
        assert_inert(page, dialogs, "list")

        for note_id, payload in ids:
            page.goto(console_url(server, f"/notes/{note_id}"))
            expect_page(page, payload)
            page.locator(".note-body").hover()
            assert_inert(page, dialogs, payload)
        # Images named "x" resolve to /app/x, which is a 404: Chromium logs that itself.
        forgive_failed_loads(watched, 404)
        watched.assert_stayed_clean()

        # The raw note: its link is plain text now, its handlers gone, the foreign image
        # not loaded; clicking and hovering what is left runs nothing.
        page.goto(console_url(server, f"/notes/{raw_id}"))
        expect_page(page, RAW_TITLE)
        body = page.locator(".note-body")
        expect(body.locator("p")).to_have_text("raw")
        expect(body.get_by_text("click")).to_be_visible()
        assert body.locator("a", has_text="click").count() == 0
        body.get_by_text("click").click()
        body.get_by_text("hover").hover()
        expect(body.locator(".image-placeholder")).to_have_text("[image: pixel]")
        fine = body.get_by_role("link", name="fine")
        expect(fine).to_have_attribute("href", "https://example.com/ok")
        page.wait_for_timeout(300)  # time for an image's onerror, were there one
        assert_inert(page, dialogs, "raw note, after clicks")
        assert not any("tracker.example" in url for url in watched.requested)

        # Chromium (156) checks the CSP while DOMParser reads the raw handlers into its inert
        # document: each is refused there (a script-src-attr report), before the console
        # copies the allow-list out. Those reports are the payload's, and all there may be.
        violations = page.evaluate("window.__cspViolations.splice(0)")
        assert len(violations) <= RAW_HANDLERS, violations
        assert set(violations) <= {"script-src-attr inline", "script-src inline"}, violations
        refusals = [line for line in watched.console if INLINE_HANDLER_REFUSED in line]
        assert len(refusals) == len(violations), watched.console
        watched.console[:] = [line for line in watched.console if line not in refusals]
        forgive_failed_loads(watched, 404)
        watched.assert_stayed_clean()

        # Trusted Types is enforced: the page cannot put an HTML string into a live sink.
        assert page.evaluate(TRUSTED_TYPES_PROBE) == "TypeError"


# -- 4. CSRF from another origin ----------------------------------------------------------

ATTACK_PAGE = """<!doctype html>
<html><head><title>cute cats</title></head><body>
<h1>cute cats</h1>
<div id="forms"></div>
<script>
const API = "__API__";
const NOTE = "__NOTE__";
const results = [];
// The same host on another port shares the cookie jar: the CSRF cookie is readable here.
const token = (document.cookie.match(/(?:^|; )bastion_csrf=([^;]*)/) || [])[1] || "";
async function attempt(name, request) {
  try {
    const response = await request();
    results.push(`${name}: ${response.type} ${response.status}`);
  } catch (error) {
    results.push(`${name}: ${error.name}`);
  }
}
const json = (body) => JSON.stringify(body);
const withToken = { "Content-Type": "application/json", "X-CSRF-Token": token };
function submitForm(action, method, fields, enctype) {
  const frame = document.createElement("iframe");
  frame.name = `sink${document.forms.length}`;
  document.body.append(frame);
  const form = document.createElement("form");
  form.action = API + action;
  form.method = method;
  form.target = frame.name;
  if (enctype) form.enctype = enctype;
  for (const [name, value] of Object.entries(fields)) {
    const input = document.createElement("input");
    input.type = "hidden";
    input.name = name;
    input.value = value;
    form.append(input);
  }
  document.getElementById("forms").append(form);
  form.submit();
}
(async () => {
  await attempt("post json", () => fetch(API + "/notes", { method: "POST", credentials: "include",
    headers: withToken, body: json({ title: "pwned json", body: "x" }) }));
  await attempt("post text", () => fetch(API + "/notes", { method: "POST", mode: "no-cors",
    credentials: "include", headers: { "Content-Type": "text/plain" },
    body: json({ title: "pwned text", body: "x" }) }));
  await attempt("post form", () => fetch(API + "/notes", { method: "POST", mode: "no-cors",
    credentials: "include", body: new URLSearchParams({ title: "pwned form", body: "x" }) }));
  await attempt("patch", () => fetch(API + "/notes/" + NOTE, { method: "PATCH",
    credentials: "include", headers: withToken, body: json({ title: "pwned patch" }) }));
  await attempt("delete", () => fetch(API + "/notes/" + NOTE, { method: "DELETE",
    credentials: "include", headers: { "X-CSRF-Token": token } }));
  await attempt("share", () => fetch(API + "/notes/" + NOTE + "/shares", { method: "POST",
    mode: "no-cors", credentials: "include", headers: { "Content-Type": "text/plain" },
    body: json({ username: "__MALLORY__" }) }));
  await attempt("password", () => fetch(API + "/auth/password", { method: "POST",
    mode: "no-cors", credentials: "include", headers: { "Content-Type": "text/plain" },
    body: json({ current_password: "x", new_password: "pwned pwned pwned pwned" }) }));
  await attempt("sign out", () => fetch(API + "/auth/session", { method: "DELETE",
    credentials: "include", headers: { "X-CSRF-Token": token } }));
  await attempt("login csrf", () => fetch(API + "/auth/session", { method: "POST",
    mode: "no-cors", credentials: "include",
    body: new URLSearchParams({ username: "__MALLORY__", password: "__MALLORY_PASSWORD__" }) }));
  submitForm("/notes", "post", { '{"title":"pwned plain","body":"x","pad":"': '"}' }, "text/plain");
  submitForm("/notes", "post", { title: "pwned urlencoded", body: "x", csrf: token });
  submitForm("/notes/" + NOTE, "post", { _method: "DELETE", csrf: token });
  submitForm("/notes/" + NOTE + "/shares", "post", { username: "__MALLORY__" });
  submitForm("/auth/session", "post",
    { username: "__MALLORY__", password: "__MALLORY_PASSWORD__" });
  submitForm("/auth/logout", "post", {});
  await new Promise((done) => setTimeout(done, 1500));  // the forms' requests
  window.__results = results;
  document.title = "done";
})();
</script>
</body></html>
"""


def access_lines(deployment: Deployment) -> list[dict[str, Any]]:
    return [r for r in deployment.server.log_records() if logger_of(r) == "bastion.access"]


def test_another_origin_cannot_forge_requests(deployment: Deployment, api: Api) -> None:
    server = deployment.server
    victim = api.new_account("victim")
    mallory = api.new_account("mallory")
    note = api.ok("POST", "/notes", victim, 201, json={"title": "Diary", "body": "<p>secret</p>"})
    before = notes_of(api, victim)
    sessions_before = api.ok("GET", "/auth/sessions", victim)["items"]

    page_html = (
        ATTACK_PAGE.replace("__API__", server.base_url)
        .replace("__NOTE__", note["id"])
        .replace("__MALLORY_PASSWORD__", mallory.password)
        .replace("__MALLORY__", mallory.username)
    )
    with attacker_site(page_html) as attacker_port, watched_page(origin(deployment)) as watched:
        page = watched.page
        open_console(page, server)
        sign_in(page, victim.username, victim.password)
        session = cookie(page, SESSION_COOKIE)
        seen = len(access_lines(deployment))

        outcomes = {}
        for attacker in (f"http://127.0.0.1:{attacker_port}", f"http://localhost:{attacker_port}"):
            evil = page.context.new_page()
            evil.goto(f"{attacker}/cats.html")
            expect(evil).to_have_title("done", timeout=RENDER_TIMEOUT_MS)
            outcomes[attacker] = evil.evaluate("window.__results")
            evil.close()

        # The console is still signed in as the victim, not as mallory (login CSRF).
        assert cookie(page, SESSION_COOKIE) == session
        go(page, "Account")
        expect_page(page, "Account")
        expect(main_nav(page)).to_contain_text(f"Signed in as {victim.username}")
        watched.assert_stayed_clean()

    # A preflighted request (JSON, a custom header, PATCH, DELETE) never left the browser: no
    # CORS for other origins. What could be sent without one was refused by the server, and
    # its answer withheld from the attacker's page (Cross-Origin-Resource-Policy).
    for attacker, results in outcomes.items():
        assert len(results) == 9, (attacker, results)
        assert all(result.endswith(": TypeError") for result in results), (attacker, results)
    unsafe = [
        r for r in access_lines(deployment)[seen:] if r.get("method") not in {"GET", "HEAD"}
    ]
    assert unsafe, "no forged request reached the server"
    assert all(400 <= r["status"] < 500 for r in unsafe), [
        (r["method"], r["path"], r["status"]) for r in unsafe
    ]
    # From the same site the session cookie was sent (the request was the victim's), and
    # only the CSRF defence refused it.
    refused = {(r["method"], r["route"]) for r in unsafe
               if r["status"] == 403 and r.get("user_id") == victim.id}
    assert {("POST", "/notes"), ("POST", "/notes/{note_id}/shares")} <= refused, unsafe

    assert notes_of(api, victim) == before
    assert api.ok("GET", "/notes", mallory)["items"] == []
    sessions_after = api.ok("GET", "/auth/sessions", victim)["items"]
    assert {s["id"] for s in sessions_before} <= {s["id"] for s in sessions_after}
    assert refused_cookie(deployment, session) == 200  # the victim was not signed out
    assert api.password_grant(victim.username, victim.password).status_code == 200


# -- 5. a session ended elsewhere --------------------------------------------------------


def test_a_revoked_session_falls_back_to_sign_in(deployment: Deployment, api: Api) -> None:
    server = deployment.server
    user = api.new_account("revoked")  # signed in over the API: a bearer session
    with watched_page(origin(deployment)) as watched:
        page = watched.page
        open_console(page, server, "/account")
        sign_in(page, user.username, user.password)
        expect_page(page, "Account")  # back where the person wanted to go

        # The sessions list: this browser marked, the API's session signed out from here.
        rows = page.locator("table.data tbody tr")
        expect(rows).to_have_count(2, timeout=RENDER_TIMEOUT_MS)
        expect(page.locator("tr.current")).to_contain_text("This browser")
        other = rows.filter(has_not=page.locator(".tag"))
        other.get_by_role("button", name="Sign out").click()
        expect(status(page)).to_have_text("That session is signed out.")
        expect(rows).to_have_count(1)
        assert api.me(user.access_token).status_code == 401

        # End the browser's session from elsewhere: a new bearer session of the same user.
        api.sign_in(user)
        sessions = api.ok("GET", "/auth/sessions", user)["items"]
        browser_sessions = [s["id"] for s in sessions if not s["current"]]
        assert len(browser_sessions) == 1, sessions
        api.ok("DELETE", f"/auth/sessions/{browser_sessions[0]}", user, 204)

        go(page, "Notes")
        expect_page(page, "Sign in")
        expect(alert(page)).to_have_text("Your session has ended. Please sign in again.")
        assert main_nav(page).is_hidden()
        page.reload()
        expect_page(page, "Sign in")

        # Signing in again (the page was reloaded: it starts at the notes).
        sign_in(page, user.username, user.password)
        expect_page(page, "Notes")

        # A new password, from the account page: the other (bearer) session ends with it.
        go(page, "Account")
        expect_page(page, "Account")
        page.get_by_label("Current password").fill(user.password)
        page.get_by_label("New password", exact=True).fill(NEW_PASSWORD)
        page.get_by_label("New password, again").fill(NEW_PASSWORD)
        page.get_by_role("button", name="Change password").click()
        expect(status(page)).to_have_text("Password changed. Your other sessions were signed out.")
        expect(rows).to_have_count(1)
        expect(page.get_by_label("Current password")).to_have_value("")
        forgive_failed_loads(watched, 401)
        watched.assert_stayed_clean()
    assert api.me(user.access_token).status_code == 401
    assert api.password_grant(user.username, user.password).status_code == 400
    assert api.password_grant(user.username, NEW_PASSWORD).status_code == 200


# -- 6. the screenshot ----------------------------------------------------------------------

SCREENSHOT_NOTES = [
    (
        "Release checklist",
        "<ol><li>Rotate the signing key</li><li>Run <code>bastion audit verify</code></li></ol>",
    ),
    ("Reading list", "<ul><li>RFC 9457</li><li>RFC 6238</li><li>OWASP ASVS</li></ul>"),
    ("Ideas for the console", "<p>Keyboard shortcuts, <em>maybe</em>.</p>"),
]


def test_screenshot_of_the_notes_list(deployment: Deployment, api: Api, tmp_path: Path) -> None:
    """The notes list of an administrator (so the navigation shows every page), with notes of
    their own, one they shared and one shared with them."""
    server = deployment.server
    # Plain names read better in the picture; no other test of this module uses them.
    people = {}
    for name in ("dana", "erin"):
        user = api.register(name, email=f"{name}@example.com")
        people[name] = api.sign_in(Account(user["id"], name, PASSWORD))
    dana, erin = people["dana"], people["erin"]
    shared = api.ok("POST", "/notes", erin, 201, json={
        "title": "Team on-call rota", "body": "<table><tr><th>Week</th><th>Who</th></tr></table>"})
    api.ok("POST", f"/notes/{shared['id']}/shares", erin, json={"username": "dana"})
    for title, body in SCREENSHOT_NOTES:
        note = api.ok("POST", "/notes", dana, 201, json={"title": title, "body": body})
    api.ok("POST", f"/notes/{note['id']}/shares", dana, json={"username": "erin"})
    admin = api.sign_in(Account("", ADMIN, ADMIN_PASSWORD))
    api.ok("PATCH", f"/admin/users/{dana.id}", admin, json={"roles": ["admin", "user"]})

    with watched_page(origin(deployment)) as watched:
        page = watched.page
        page.set_viewport_size({"width": 1280, "height": 800})
        open_console(page, server)
        sign_in(page, "dana", PASSWORD)
        expect_page(page, "Notes")
        expect(page.locator(".note-list li")).to_have_count(4)
        expect(main_nav(page).get_by_role("link", name="Audit log")).to_be_visible()
        heading(page).blur()
        target = screenshot_path(tmp_path)
        page.screenshot(path=str(target))
        watched.assert_stayed_clean()
    assert target.stat().st_size > 10_000
