"""Browser sessions (POST/DELETE /auth/session) and their CSRF rules, on SQLite and PostgreSQL.

Every rule of the contract's "Browser sessions" section is attacked here in process; the
live-server and real-browser versions are in ``tests/e2e``.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from bastion.audit.events import AuditEventType
from bastion.clock import utc_now
from bastion.storage.tables import AuditEvent, LoginSession, User
from tests.identity.cookie_helpers import (
    CSRF_COOKIE,
    SAME_ORIGIN,
    SESSION_COOKIE,
    browser_for,
    csrf_headers,
    sign_in,
)
from tests.identity.helpers import bearer, login, password_form, register

NOTE = {"title": "groceries", "body": "<p>milk</p>"}
PUBLIC_ORIGIN = "http://127.0.0.1:8000"  # BASTION_PUBLIC_URL's default


async def audit_events(app: FastAPI, event: AuditEventType) -> list[AuditEvent]:
    async with app.state.bastion.database.read() as session:
        found = await session.scalars(select(AuditEvent).where(AuditEvent.type == event.value))
        return list(found)


async def notes_count(client: httpx.AsyncClient, token: str) -> int:
    response = await client.get("/notes", headers=bearer(token))
    assert response.status_code == 200, response.text
    return len(response.json()["items"])


def set_cookie_lines(response: httpx.Response) -> dict[str, str]:
    return {
        line.split("=", 1)[0]: line for line in response.headers.get_list("set-cookie")
    }


# Signing in ---------------------------------------------------------------------------


async def test_sign_in_sets_an_httponly_session_cookie_and_a_readable_csrf_cookie(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    await register(client, "alice")
    response = await sign_in(client, "alice")
    assert response.status_code == 204, response.text
    assert response.content == b""
    assert response.headers["cache-control"] == "no-store"
    lines = set_cookie_lines(response)
    assert set(lines) == {SESSION_COOKIE, CSRF_COOKIE}
    session_line = lines[SESSION_COOKIE].lower()
    csrf_line = lines[CSRF_COOKIE].lower()
    for line in (session_line, csrf_line):
        assert "path=/" in line and "samesite=strict" in line
        assert "secure" not in line  # plain HTTP: a Secure cookie would never come back
        assert "max-age" not in line and "expires" not in line  # the browser's session only
    assert "httponly" in session_line
    assert "httponly" not in csrf_line

    # Stored only as its hash; the cookie itself is 256 random bits.
    secret = client.cookies[SESSION_COOKIE]
    async with app.state.bastion.database.read() as session:
        [row] = list(await session.scalars(select(LoginSession)))
    assert row.kind == "cookie"
    assert row.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert len(secret) == 43

    me = await client.get("/auth/me")
    assert me.status_code == 200, me.text
    assert me.json()["username"] == "alice"


async def test_over_https_the_cookies_are_secure_and_host_prefixed(app: FastAPI) -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as client:
        await register(client, "alice")
        response = await sign_in(client, "alice")
        assert response.status_code == 204, response.text
        lines = set_cookie_lines(response)
        assert set(lines) == {"__Host-" + SESSION_COOKIE, "__Host-" + CSRF_COOKIE}
        assert all("secure" in line.lower() for line in lines.values())
        assert (await client.get("/auth/me")).status_code == 200

        # The unprefixed name is not read over HTTPS: anyone on a sibling subdomain or on
        # plain HTTP could have set it.
        secret = client.cookies["__Host-" + SESSION_COOKIE]
        client.cookies.clear()
        planted = await client.get("/auth/me", headers={"Cookie": f"{SESSION_COOKIE}={secret}"})
        assert planted.status_code == 401


async def test_sign_in_refusals_are_the_token_endpoints_answers(
    client: httpx.AsyncClient,
) -> None:
    await register(client, "alice")
    token_answer = await client.post("/auth/token", data=password_form("alice", "wrong" * 4))
    wrong = await sign_in(client, "alice", "wrong" * 4)
    unknown = await sign_in(client, "nobody", "wrong" * 4)
    assert wrong.status_code == unknown.status_code == token_answer.status_code == 400
    assert wrong.json() == unknown.json() == token_answer.json()
    assert wrong.json()["error"] == "invalid_grant"
    assert "set-cookie" not in wrong.headers

    missing = await client.post("/auth/session", data={"username": "alice"}, headers=SAME_ORIGIN)
    assert missing.status_code == 400
    assert missing.json()["error"] == "invalid_request"
    as_json = await client.post(
        "/auth/session", json={"username": "alice", "password": "x"}, headers=SAME_ORIGIN
    )
    assert as_json.status_code == 415


async def test_wrong_passwords_through_the_cookie_sign_in_lock_the_account(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    await register(client, "alice")
    threshold = app.state.bastion.settings.lockout_threshold
    for _ in range(threshold):
        assert (await sign_in(client, "alice", "wrong" * 4)).status_code == 400
    locked = await sign_in(client, "alice")  # the right password, but locked
    assert locked.status_code == 400
    assert locked.json()["error"] == "invalid_grant"
    assert await audit_events(app, AuditEventType.LOCKOUT)


async def test_a_disabled_account_cannot_sign_in_and_its_cookie_stops_working(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    await register(client, "alice")
    browser = await browser_for(client, "alice")
    async with app.state.bastion.database.transaction() as session:
        user = await session.scalar(select(User).where(User.username == "alice"))
        assert user is not None
        user.disabled = True
        revocation = app.state.bastion.revocation
        await revocation.cut_off_user(session, user, utc_now())
        await revocation.revoke_live_sessions(session, user.id, reason="disabled")
    assert (await browser.get("/auth/me")).status_code == 401
    assert (await sign_in(client, "alice")).status_code == 400
    await browser.aclose()


# The cookie authenticates like a token ---------------------------------------------------


async def test_a_cookie_has_the_users_permissions_and_no_more(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    await register(client, "alice")
    browser = await browser_for(client, "alice")
    created = await browser.post("/notes", json=NOTE, headers=csrf_headers(browser))
    assert created.status_code == 201, created.text
    assert (await browser.get(f"/notes/{created.json()['id']}")).status_code == 200
    denied = await browser.get("/admin/users")
    assert denied.status_code == 403
    [event] = await audit_events(app, AuditEventType.ACCESS_DENIED)
    assert event.details["missing"] == "users:read"
    await browser.aclose()


async def test_a_request_with_a_bearer_token_is_the_tokens_alone(
    client: httpx.AsyncClient,
) -> None:
    await register(client, "alice")
    await register(client, "bob")
    browser = await browser_for(client, "alice")
    bob = await login(client, "bob")

    # Bob's token with Alice's cookie and no CSRF token: Bob's request, no CSRF needed.
    created = await browser.post("/notes", json=NOTE, headers=bearer(bob["access_token"]))
    assert created.status_code == 201, created.text
    me = await browser.get("/auth/me", headers=bearer(bob["access_token"]))
    assert me.json()["username"] == "bob"
    assert created.json()["owner_id"] == me.json()["id"]

    # A bad token is a 401 even with a valid cookie: the cookie is not a fallback.
    forged = await browser.get("/auth/me", headers=bearer("not-a-token"))
    assert forged.status_code == 401
    await browser.aclose()


async def test_a_malformed_or_unknown_cookie_is_a_401(client: httpx.AsyncClient) -> None:
    for value in ("x", "A" * 43, "A" * 500, "%00" * 10):
        response = await client.get("/auth/me", headers={"Cookie": f"{SESSION_COOKIE}={value}"})
        assert response.status_code == 401, value
        assert response.headers["www-authenticate"].startswith("Bearer")


# CSRF ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        pytest.param({"Sec-Fetch-Site": "cross-site"}, "cross_site", id="cross-site"),
        pytest.param({"Sec-Fetch-Site": "same-site"}, "cross_site", id="sibling-origin"),
        pytest.param({"Origin": "https://evil.example"}, "foreign_origin", id="foreign-origin"),
        pytest.param({"Origin": "null"}, "foreign_origin", id="null-origin"),
        pytest.param(
            {"Origin": "http://127.0.0.1:8001"}, "foreign_origin", id="other-port-origin"
        ),
        pytest.param(
            {"Referer": "https://evil.example/page"}, "foreign_referer", id="foreign-referer"
        ),
        pytest.param({}, "no_origin", id="no-origin-at-all"),
        pytest.param(
            {"Sec-Fetch-Site": "cross-site", "Origin": PUBLIC_ORIGIN}, "cross_site",
            id="fetch-metadata-wins-over-origin",
        ),
    ],
)
async def test_an_unsafe_request_from_anywhere_but_the_services_pages_is_refused(
    app: FastAPI, client: httpx.AsyncClient, headers: dict[str, str], reason: str
) -> None:
    await register(client, "alice")
    browser = await browser_for(client, "alice")
    token = browser.cookies[CSRF_COOKIE]
    refused = await browser.post("/notes", json=NOTE, headers={**headers, "X-CSRF-Token": token})
    assert refused.status_code == 403
    assert refused.headers["content-type"] == "application/problem+json"
    [event] = await audit_events(app, AuditEventType.CSRF_REFUSAL)
    assert event.details["reason"] == reason
    assert event.outcome == "denied"
    assert (await browser.get("/notes")).json()["items"] == []
    await browser.aclose()


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"Sec-Fetch-Site": "same-origin"}, id="fetch-metadata"),
        pytest.param({"Sec-Fetch-Site": "none"}, id="user-initiated"),
        pytest.param({"Origin": PUBLIC_ORIGIN}, id="origin"),
        pytest.param({"Origin": "HTTP://127.0.0.1:8000"}, id="origin-any-case"),
        pytest.param({"Referer": f"{PUBLIC_ORIGIN}/app/"}, id="referer"),
    ],
)
async def test_the_services_own_pages_pass_with_the_token(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    await register(client, "alice")
    browser = await browser_for(client, "alice")
    token = browser.cookies[CSRF_COOKIE]
    created = await browser.post("/notes", json=NOTE, headers={**headers, "X-CSRF-Token": token})
    assert created.status_code == 201, created.text
    await browser.aclose()


async def test_the_csrf_token_must_be_this_sessions(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    await register(client, "alice")
    await register(client, "mallory")
    alice = await browser_for(client, "alice")
    mallory = await browser_for(client, "mallory")
    alice_token = alice.cookies[CSRF_COOKIE]
    mallory_token = mallory.cookies[CSRF_COOKIE]
    alice_secret = alice.cookies[SESSION_COOKIE]

    def attempt(header: str | None, cookie: str | None) -> dict[str, str]:
        jar = f"{SESSION_COOKIE}={alice_secret}"
        if cookie is not None:
            jar += f"; {CSRF_COOKIE}={cookie}"
        headers = {**SAME_ORIGIN, "Cookie": jar}
        if header is not None:
            headers["X-CSRF-Token"] = header
        return headers

    cases = {
        "missing_token": [attempt(None, alice_token), attempt(alice_token, None)],
        "token_mismatch": [attempt("A" * 43, alice_token)],
        # A cookie planted by a sibling subdomain, with the header to match: a naive double
        # submit accepts any equal pair; the signed one wants this session's HMAC.
        "wrong_session": [attempt(mallory_token, mallory_token), attempt("A" * 43, "A" * 43)],
    }
    bare = httpx.AsyncClient(transport=client._transport, base_url=str(client.base_url))
    for reason, attempts in cases.items():
        for headers in attempts:
            refused = await bare.post("/notes", json=NOTE, headers=headers)
            assert refused.status_code == 403, (reason, refused.text)
    reasons = [event.details["reason"] for event in await audit_events(
        app, AuditEventType.CSRF_REFUSAL
    )]
    assert sorted(reasons) == sorted(r for r, attempts in cases.items() for _ in attempts)
    allowed = await bare.post("/notes", json=NOTE, headers=attempt(alice_token, alice_token))
    assert allowed.status_code == 201, allowed.text
    for browser in (alice, mallory, bare):
        await browser.aclose()


async def test_every_unsafe_method_is_protected_and_reads_are_not(
    client: httpx.AsyncClient,
) -> None:
    await register(client, "alice")
    await register(client, "bob")
    browser = await browser_for(client, "alice")
    note = (await browser.post("/notes", json=NOTE, headers=csrf_headers(browser))).json()
    path = f"/notes/{note['id']}"
    attacks = [
        browser.patch(path, json={"title": "pwned"}),
        browser.delete(path),
        browser.post(f"{path}/shares", json={"username": "bob"}),
        browser.post("/auth/password", json={
            "current_password": "x" * 15, "new_password": "y" * 20}),
        browser.post("/auth/logout"),
        browser.delete("/auth/session"),
    ]
    for attack in attacks:
        response = await attack
        assert response.status_code == 403, response.text
    still = await browser.get(path)
    assert still.status_code == 200
    assert still.json()["title"] == NOTE["title"]
    assert still.json()["shared_with"] == []
    assert (await browser.get("/auth/sessions")).status_code == 200
    await browser.aclose()


async def test_signing_in_from_another_sites_form_is_refused(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """Login CSRF: another site signs the victim's browser in to the attacker's account."""
    await register(client, "mallory")
    for headers in ({"Sec-Fetch-Site": "cross-site"}, {"Origin": "https://evil.example"}, {}):
        response = await sign_in(client, "mallory", headers=headers)
        assert response.status_code == 403, headers
        assert response.headers["content-type"] == "application/problem+json"
        assert "set-cookie" not in response.headers
    events = await audit_events(app, AuditEventType.CSRF_REFUSAL)
    assert [event.details["reason"] for event in events] == [
        "cross_site", "foreign_origin", "no_origin"
    ]
    assert await audit_events(app, AuditEventType.LOGIN_SUCCESS) == []


# Ending sessions -----------------------------------------------------------------------


async def test_signing_out_ends_the_session_and_clears_both_cookies(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    await register(client, "alice")
    browser = await browser_for(client, "alice")
    secret = browser.cookies[SESSION_COOKIE]
    response = await browser.delete("/auth/session", headers=csrf_headers(browser))
    assert response.status_code == 204, response.text
    lines = set_cookie_lines(response)
    assert set(lines) == {SESSION_COOKIE, CSRF_COOKIE}
    assert all("max-age=0" in line.lower() for line in lines.values())
    replayed = await client.get("/auth/me", headers={"Cookie": f"{SESSION_COOKIE}={secret}"})
    assert replayed.status_code == 401
    [logout] = await audit_events(app, AuditEventType.LOGOUT)
    assert logout.details["kind"] == "cookie"
    await browser.aclose()


async def test_cookie_sessions_are_listed_and_ended_like_any_other(
    client: httpx.AsyncClient,
) -> None:
    await register(client, "alice")
    browser = await browser_for(client, "alice")
    tokens = await login(client, "alice")
    listed = (await browser.get("/auth/sessions")).json()["items"]
    assert [(item["kind"], item["current"]) for item in listed] == [
        ("bearer", False), ("cookie", True)
    ]
    cookie_session = listed[1]["id"]
    ended = await client.delete(
        f"/auth/sessions/{cookie_session}", headers=bearer(tokens["access_token"])
    )
    assert ended.status_code == 204
    assert (await browser.get("/auth/me")).status_code == 401

    # And from the browser, a bearer session: with the CSRF token, as any unsafe request.
    other = await browser_for(client, "alice")
    bearer_session = (await other.get("/auth/sessions")).json()["items"][1]
    assert bearer_session["kind"] == "bearer"
    path = f"/auth/sessions/{bearer_session['id']}"
    assert (await other.delete(path)).status_code == 403
    assert (await other.delete(path, headers=csrf_headers(other))).status_code == 204
    assert (await client.get("/auth/me", headers=bearer(tokens["access_token"]))).status_code == 401
    await browser.aclose()
    await other.aclose()


async def test_a_password_change_keeps_this_browser_and_ends_every_other_session(
    client: httpx.AsyncClient,
) -> None:
    await register(client, "alice")
    browser = await browser_for(client, "alice")
    other_browser = await browser_for(client, "alice")
    tokens = await login(client, "alice")
    changed = await browser.post(
        "/auth/password",
        json={"current_password": "correct horse battery staple",
              "new_password": "a different long passphrase 2026"},
        headers=csrf_headers(browser),
    )
    assert changed.status_code == 204, changed.text
    assert (await browser.get("/auth/me")).status_code == 200
    assert (await other_browser.get("/auth/me")).status_code == 401
    assert (await client.get("/auth/me", headers=bearer(tokens["access_token"]))).status_code == 401
    await browser.aclose()
    await other_browser.aclose()


async def test_a_demotion_applies_to_a_live_cookie_at_once_a_promotion_at_sign_in(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """As with a refresh token: a session never holds more than its sign-in granted."""
    await register(client, "alice")
    browser = await browser_for(client, "alice")
    assert (await browser.get("/notes")).status_code == 200
    async with app.state.bastion.database.transaction() as session:
        user = await session.scalar(select(User).where(User.username == "alice"))
        assert user is not None
        user.roles = ["auditor"]
        await app.state.bastion.revocation.cut_off_user(session, user, utc_now())
    assert (await browser.get("/notes")).status_code == 403
    assert (await browser.get("/admin/audit")).status_code == 403
    again = await browser_for(client, "alice")
    assert (await again.get("/admin/audit")).status_code == 200
    assert (await again.get("/notes")).status_code == 403
    await browser.aclose()
    await again.aclose()


# Expiry --------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = utc_now()

    def __call__(self) -> Any:
        return self.now


async def last_used(app: FastAPI) -> Any:
    async with app.state.bastion.database.read() as session:
        [row] = list(await session.scalars(
            select(LoginSession).where(LoginSession.kind == "cookie")
        ))
        return row.last_used_at


async def test_use_slides_the_idle_deadline_without_writing_on_every_read(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    cookies = app.state.bastion.cookie_sessions
    clock = Clock()
    cookies.clock = clock
    idle = timedelta(seconds=app.state.bastion.settings.cookie_idle_ttl)
    await register(client, "alice")
    browser = await browser_for(client, "alice")
    opened = await last_used(app)

    clock.now = opened + idle / 20
    assert (await browser.get("/auth/me")).status_code == 200
    assert await last_used(app) == opened  # within a tenth of the idle TTL: no write

    # Used every 0.6 of the idle TTL for three idle TTLs: never expires.
    for step in range(1, 6):
        clock.now = opened + idle * 0.6 * step
        assert (await browser.get("/auth/me")).status_code == 200, step
        assert await last_used(app) == clock.now
    clock.now = await last_used(app) + idle + timedelta(seconds=1)
    assert (await browser.get("/auth/me")).status_code == 401
    # Expired means expired: not listed, and a later read of the database agrees.
    cookies._known.clear()
    assert (await browser.get("/auth/me")).status_code == 401
    await browser.aclose()


async def test_an_active_session_still_ends_at_its_absolute_deadline(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    cookies = app.state.bastion.cookie_sessions
    clock = Clock()
    cookies.clock = clock
    settings = app.state.bastion.settings
    await register(client, "alice")
    browser = await browser_for(client, "alice")
    opened = await last_used(app)
    step = timedelta(seconds=settings.cookie_idle_ttl / 2)
    clock.now = opened
    while clock.now + step < opened + timedelta(seconds=settings.cookie_max_ttl):
        clock.now += step
        assert (await browser.get("/auth/me")).status_code == 200
    clock.now = opened + timedelta(seconds=settings.cookie_max_ttl)
    assert (await browser.get("/auth/me")).status_code == 401
    await browser.aclose()


async def test_a_refusal_is_audited_by_route_whatever_the_path_holds(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """The audit event names the route template, never the client's raw path (a NUL in it
    was once a 500 and an unrecorded refusal)."""
    await register(client, "alice")
    browser = await browser_for(client, "alice")
    for path in ("/notes/%00abc", "/notes/%E2%80%AEevil"):
        refused = await browser.delete(path, headers={"Sec-Fetch-Site": "cross-site"})
        assert refused.status_code == 403, refused.text
    events = await audit_events(app, AuditEventType.CSRF_REFUSAL)
    assert [event.details["route"] for event in events] == ["/notes/{note_id}"] * 2
    await browser.aclose()


async def test_no_cookie_is_issued_or_accepted_before_the_start_up_work_is_done(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """Until the start-up work has read the CSRF secret (the database did not answer at
    start), cookies get the 503 tokens get, not a 500."""
    await register(client, "alice")
    browser = await browser_for(client, "alice")
    cookies = app.state.bastion.cookie_sessions
    secret = cookies._csrf
    cookies._csrf = None
    try:
        for response in (await browser.get("/auth/me"), await sign_in(client, "alice")):
            assert response.status_code == 503, response.text
            assert response.headers["retry-after"]
    finally:
        cookies._csrf = secret
    assert (await browser.get("/auth/me")).status_code == 200
    await browser.aclose()
