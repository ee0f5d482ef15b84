"""Browser sessions and CSRF through the real ``bastion serve``, on SQLite and PostgreSQL, and
over TLS (the ``__Host-`` cookies).

The in-process tests (``tests/identity/test_cookie_sessions.py``) attack each rule one by
one; here the same rules hold for a server as operators run it: its cookies as a browser
receives them, its CSRF refusals, sign-out at once, and a race between signing out and
using the session.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import LiveServer, assert_problem, postgres_for, service
from tests.e2e.test_tls import TLSServer, https_service
from tests.identity.helpers import PASSWORD, account_form, bearer, password_form

SAME_ORIGIN = {"Sec-Fetch-Site": "same-origin"}
NOTE = {"title": "from the browser", "body": "<p>hello</p>"}
_accounts = iter(range(1, 10_000))


def new_account(client: httpx.Client) -> str:
    username = f"browser{next(_accounts)}"
    response = client.post("/auth/register", json=account_form(username))
    assert response.status_code == 201, response.text
    return username


def signed_in(base_url: str, username: str, **options: object) -> httpx.Client:
    """A client with its own cookie jar, signed in as a browser would be."""
    client = httpx.Client(base_url=base_url, timeout=10.0, **options)  # type: ignore[arg-type]
    response = client.post(
        "/auth/session", data={"username": username, "password": PASSWORD}, headers=SAME_ORIGIN
    )
    assert response.status_code == 204, response.text
    return client


def csrf(client: httpx.Client, name: str = "bastion_csrf") -> dict[str, str]:
    return {**SAME_ORIGIN, "X-CSRF-Token": client.cookies[name]}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def live_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """One server per backend for the module, with room for its many sign-ins from one
    address (the login quota has tests of its own)."""
    root = tmp_path_factory.mktemp(f"browser-{request.param}")
    roomy = {"rate_limit_login": "1000/minute"}
    with service(root, request.param, postgres_for(request), **roomy) as server:
        yield server


@pytest.fixture
def api(live_server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_server.base_url, timeout=10.0) as client:
        yield client


def test_a_browser_session_from_sign_in_to_sign_out(api: httpx.Client) -> None:
    username = new_account(api)
    browser = signed_in(str(api.base_url), username)
    cookies = {line.split("=", 1)[0]: line.lower() for line in
               browser.post("/auth/session", data={"username": username, "password": PASSWORD},
                            headers=SAME_ORIGIN).headers.get_list("set-cookie")}
    assert set(cookies) == {"bastion_session", "bastion_csrf"}
    assert "httponly" in cookies["bastion_session"]
    assert "samesite=strict" in cookies["bastion_session"]
    assert "httponly" not in cookies["bastion_csrf"]

    assert browser.get("/auth/me").json()["username"] == username
    created = browser.post("/notes", json=NOTE, headers=csrf(browser))
    assert created.status_code == 201, created.text
    note_path = f"/notes/{created.json()['id']}"

    # Forged from elsewhere: refused, audited, nothing changed.
    for headers in (
        {"Sec-Fetch-Site": "cross-site", "X-CSRF-Token": browser.cookies["bastion_csrf"]},
        {"Origin": "http://evil.example", "X-CSRF-Token": browser.cookies["bastion_csrf"]},
        {"X-CSRF-Token": browser.cookies["bastion_csrf"]},
        SAME_ORIGIN,
    ):
        assert_problem(browser.delete(note_path, headers=headers), 403)
    assert browser.get(note_path).status_code == 200

    secret = browser.cookies["bastion_session"]
    signed_out = browser.delete("/auth/session", headers=csrf(browser))
    assert signed_out.status_code == 204
    assert all("max-age=0" in line.lower() for line in signed_out.headers.get_list("set-cookie"))
    replay = api.get("/auth/me", headers={"Cookie": f"bastion_session={secret}"})
    assert replay.status_code == 401
    browser.close()


def test_a_bearer_token_wins_over_a_cookie_and_ends_a_cookie_session(api: httpx.Client) -> None:
    username = new_account(api)
    other = new_account(api)
    browser = signed_in(str(api.base_url), username)
    tokens = api.post("/auth/token", data=password_form(other)).json()
    me = browser.get("/auth/me", headers=bearer(tokens["access_token"]))
    assert me.json()["username"] == other
    no_csrf = browser.post("/notes", json=NOTE, headers=bearer(tokens["access_token"]))
    assert no_csrf.status_code == 201  # the token's request: no CSRF token needed

    mine = api.post("/auth/token", data=password_form(username)).json()
    listed = api.get("/auth/sessions", headers=bearer(mine["access_token"])).json()["items"]
    [cookie_session] = [item for item in listed if item["kind"] == "cookie"]
    ended = api.delete(
        f"/auth/sessions/{cookie_session['id']}", headers=bearer(mine["access_token"])
    )
    assert ended.status_code == 204
    assert browser.get("/auth/me").status_code == 401
    browser.close()


async def test_signing_out_races_the_sessions_own_requests(live_server: LiveServer) -> None:
    """Sign-out (two ways at once) against the session's own writes: one end wins, and
    nothing the cookie asks for after the end is served."""
    with httpx.Client(base_url=live_server.base_url, timeout=10.0) as api:
        username = new_account(api)
        tokens = api.post("/auth/token", data=password_form(username)).json()
    for _round in range(5):
        with contextlib.closing(signed_in(live_server.base_url, username)) as browser:
            jar = dict(browser.cookies)
            headers = {**SAME_ORIGIN, "X-CSRF-Token": jar["bastion_csrf"]}
            listed = browser.get("/auth/sessions").json()["items"]
            [session_id] = [item["id"] for item in listed if item["current"]]
        async with httpx.AsyncClient(
            base_url=live_server.base_url, timeout=10.0, cookies=jar
        ) as client:
            answers = await asyncio.gather(
                client.delete("/auth/session", headers=headers),
                client.delete(f"/auth/sessions/{session_id}",
                              headers=bearer(tokens["access_token"])),
                *(client.post("/notes", json=NOTE, headers=headers) for _ in range(4)),
            )
            sign_out, by_id, *writes = answers
            # Signing out is idempotent, like /auth/logout: both ends may answer 204 when both
            # were authenticated before either committed; the id's end after the sign-out
            # is a 404, the sign-out after the id's end a 401.
            assert sorted([sign_out.status_code, by_id.status_code]) in (
                [204, 204], [204, 401], [204, 404]
            )
            assert {write.status_code for write in writes} <= {201, 401}
            after = await client.get("/auth/me")
            assert after.status_code == 401
            late = await client.post("/notes", json=NOTE, headers=headers)
            assert late.status_code == 401


def test_over_https_the_cookies_are_host_prefixed_and_secure(tmp_path: Path) -> None:
    with https_service(tmp_path / "tls") as server:
        assert isinstance(server, TLSServer)
        base = server.url("localhost")
        with httpx.Client(base_url=base, verify=server.context(), timeout=10.0) as api:
            username = new_account(api)
        with contextlib.closing(signed_in(base, username, verify=server.context())) as browser:
            names = set(browser.cookies.keys())
            assert names == {"__Host-bastion_session", "__Host-bastion_csrf"}
            assert browser.get("/auth/me").status_code == 200
            created = browser.post(
                "/notes", json=NOTE, headers=csrf(browser, "__Host-bastion_csrf")
            )
            assert created.status_code == 201, created.text
            # A plain-named cookie (settable from HTTP or a sibling domain) is not read.
            secret = browser.cookies["__Host-bastion_session"]
            browser.cookies.clear()
            planted = browser.get("/auth/me", headers={"Cookie": f"bastion_session={secret}"})
            assert planted.status_code == 401
