"""The identity issue's "Done means", walked over HTTP against ``bastion serve``.

On SQLite and on PostgreSQL, through a real socket: register, log in (password grant, form
body), read /auth/me, rotate the refresh token, replay the old one (the session dies whole),
log out one session of two, revoke by refresh token, change the password (every other
session dies, the current one lives). Around it: ``Cache-Control: no-store`` on every /auth
answer (the token endpoint's 400s included), RFC 9457 + ``WWW-Authenticate: Bearer`` on 401,
an access token that verifies with the key the JWKS publishes, unknown user and wrong
password answered byte for byte alike, and a server log that never holds a password or token.

The servers are this module's own (the shared ``live_server`` is for read-only checks):
these tests create accounts and sessions, and log in more often than the default per-IP
login limit allows within a minute.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import jwt
import pytest

from bastion.storage.signing_keys import RELOAD_INTERVAL_SECONDS
from tests.e2e.api import (
    DEFAULT_AUDIENCE,
    DEFAULT_ISSUER,
    ROOMY_LOGIN_LIMIT,
    Api,
    assert_invalid_grant,
    assert_unauthorized,
    cache_directives,
    connected,
)
from tests.e2e.conftest import (
    LiveServer,
    assert_problem,
    assert_secure_headers,
    postgres_for,
    service,
)
from tests.identity.helpers import NEW_PASSWORD, PASSWORD, bearer, password_form, refresh_form

OTHER_WRONG_PASSWORD = "not the password of anybody at all"


def identity_service(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, name: str
) -> contextlib.AbstractContextManager[LiveServer]:
    """``bastion serve`` on the fixture's backend, logging in as often as the flows need."""
    root = tmp_path_factory.mktemp(f"{name}-{request.param}")
    return service(root, request.param, postgres_for(request), rate_limit_login=ROOMY_LOGIN_LIMIT)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def identity_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """``bastion serve`` as operators run it, one per backend, for state-changing flows."""
    with identity_service(request, tmp_path_factory, "identity") as server:
        yield server


@pytest.fixture
def api(identity_server: LiveServer) -> Iterator[Api]:
    with connected(identity_server) as api:
        yield api


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_api(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Api]:
    """A server of the test's own: when it fails, it must not take the module's down too."""
    with (
        identity_service(request, tmp_path_factory, "identity-fresh") as server,
        connected(server) as api,
    ):
        yield api


def test_the_account_life_cycle_over_http(api: Api) -> None:
    user = api.register("walker")

    # Password grant (form body), then the bearer token reads the account.
    first = api.login("walker")
    assert set(first) >= {"access_token", "token_type", "expires_in", "refresh_token", "scope"}
    assert first["scope"].split(), first["scope"]
    api.assert_alive(first, user)

    # Refresh: a new refresh token (rotation) and a working new access token.
    second = api.refreshed(first["refresh_token"])
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    api.assert_alive(second, user)

    # The used refresh token comes back: reuse. The whole session dies, latest tokens too.
    assert_invalid_grant(api.refresh(first["refresh_token"]))
    api.assert_dead(second)
    assert_unauthorized(api.me(first["access_token"]), first["access_token"])

    # Two new sessions; logging out of one ends exactly that one.
    leaving = api.login("walker")
    staying = api.login("walker")
    logout = api.request("POST", "/auth/logout", headers=bearer(leaving["access_token"]))
    assert logout.status_code == 204, logout.text
    assert logout.content == b""
    api.assert_dead(leaving)
    api.assert_alive(staying, user)
    staying = api.refreshed(staying["refresh_token"])
    api.assert_alive(staying, user)

    # RFC 7009: revoking a refresh token ends its session; garbage is answered alike.
    revoked = api.revoke(staying["refresh_token"], hint="refresh_token")
    assert revoked.status_code == 200, revoked.text
    api.assert_dead(staying)
    for garbage in ("not-a-token", "a" * 64, first["refresh_token"]):
        response = api.revoke(garbage)
        assert response.status_code == 200, response.text
        assert response.content == revoked.content

    # Revoking an access token ends that token only; its session refreshes on.
    single = api.login("walker")
    assert api.revoke(single["access_token"], hint="access_token").status_code == 200
    assert_unauthorized(api.me(single["access_token"]), single["access_token"])
    api.assert_alive(api.refreshed(single["refresh_token"]), user)

    # A password change ends every other session, not the one that made it.
    current = api.login("walker")
    other = api.login("walker")
    api.secrets.add(NEW_PASSWORD)
    changed = api.request(
        "POST",
        "/auth/password",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=bearer(current["access_token"]),
    )
    assert changed.status_code == 204, changed.text
    for key in ("current_password", "new_password"):
        assert key not in changed.text
    api.assert_dead(other)
    api.assert_alive(current, user)
    current = api.refreshed(current["refresh_token"])
    api.assert_alive(current, user)
    assert_invalid_grant(api.password_grant("walker", PASSWORD))
    api.assert_alive(api.login("walker", NEW_PASSWORD), user)

    api.assert_auth_responses_not_cached()
    api.assert_log_holds_no_secret()


def test_access_token_verifies_with_the_published_jwks(api: Api) -> None:
    user = api.register("verifier")
    tokens = api.login("verifier")
    access_token: str = tokens["access_token"]

    header = jwt.get_unverified_header(access_token)
    assert header["typ"] == "at+jwt", header
    assert header["alg"] == "EdDSA", header
    assert header.get("kid"), header
    assert not {"jwk", "jku", "x5u", "x5c"} & header.keys(), header

    response = api.request("GET", "/.well-known/jwks.json")
    assert response.status_code == 200, response.text
    assert_secure_headers(response)
    keys = response.json()["keys"]
    published = [key for key in keys if key.get("kid") == header["kid"]]
    assert len(published) == 1, (header["kid"], [key.get("kid") for key in keys])
    jwk = published[0]
    assert not {"d", "p", "q", "dp", "dq", "qi", "k"} & jwk.keys(), "private material published"

    claims = jwt.decode(
        access_token,
        key=jwt.PyJWK(jwk),
        algorithms=["EdDSA"],
        audience=DEFAULT_AUDIENCE,
        issuer=DEFAULT_ISSUER,
        options={"require": ["iss", "aud", "sub", "exp", "iat", "nbf", "jti", "sid", "scope"]},
    )
    assert claims["sub"] == user["id"]
    assert claims["exp"] - claims["iat"] == tokens["expires_in"]
    assert set(claims["scope"].split()) == set(tokens["scope"].split())

    # A token signed by anyone else, under the published kid, is refused.
    forged = jwt.encode(
        dict(claims),
        key="x" * 32,
        algorithm="HS256",
        headers={"kid": header["kid"], "typ": "at+jwt"},
    )
    assert_unauthorized(api.me(forged), forged)

    api.assert_auth_responses_not_cached()
    api.assert_log_holds_no_secret()


def test_unknown_user_and_wrong_password_get_identical_answers(api: Api) -> None:
    api.register("existing")
    wrong_password = api.password_grant("existing", OTHER_WRONG_PASSWORD)
    unknown_user = api.password_grant("nobody-here", OTHER_WRONG_PASSWORD)
    for response in (wrong_password, unknown_user):
        assert_invalid_grant(response)
    assert wrong_password.content == unknown_user.content
    assert wrong_password.status_code == unknown_user.status_code
    for name in ("content-type", "cache-control", "www-authenticate"):
        assert wrong_password.headers.get(name) == unknown_user.headers.get(name), name

    # The token endpoint's other 400s are not cached either, and are RFC 6749 errors.
    for form, error in (
        ({"grant_type": "password", "username": "existing"}, "invalid_request"),
        ({"grant_type": "client_credentials"}, "unsupported_grant_type"),
        ({"grant_type": "refresh_token", "refresh_token": "x" * 43}, "invalid_grant"),
        ({"username": "existing", "password": PASSWORD}, "invalid_request"),
    ):
        response = api.request("POST", "/auth/token", data=form)
        assert response.status_code == 400, (form, response.text)
        assert response.json()["error"] == error, (form, response.text)
        assert "no-store" in cache_directives(response), form
    json_body = api.request(
        "POST", "/auth/token", json={"grant_type": "password", "username": "existing"}
    )
    # RFC 6749 §3.2 takes a form only: JSON is refused as a media type (RFC 9110 §15.5.16).
    assert_problem(json_body, 415)
    assert json_body.headers["accept-post"] == "application/x-www-form-urlencoded"

    # The right password still works: one failure locks nothing.
    api.login("existing")

    api.assert_auth_responses_not_cached()
    api.assert_log_holds_no_secret()


@pytest.mark.parametrize("credential", ["none", "garbage", "basic"])
def test_unauthenticated_requests_get_a_bearer_challenge(api: Api, credential: str) -> None:
    headers = {
        "none": {},
        "garbage": bearer("not.a.jwt"),
        "basic": {"Authorization": "Basic d2Fsa2VyOnNlY3JldA=="},
    }[credential]
    for method, path in (("GET", "/auth/me"), ("POST", "/auth/logout")):
        response = api.request(method, path, headers=headers)
        body = assert_unauthorized(response, *headers.values())
        assert body["status"] == 401
    password = api.request(
        "POST",
        "/auth/password",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=headers,
    )
    assert_unauthorized(password, PASSWORD, NEW_PASSWORD)
    api.assert_auth_responses_not_cached()


def test_tokens_are_still_issued_once_the_key_ring_is_due_for_a_reload(fresh_api: Api) -> None:
    """Token issuance reloads the signing-key ring when it is older than the reload
    interval (so a ``bastion keys rotate`` elsewhere takes effect). A server that has been
    up for longer than that must still log users in, at once."""
    api = fresh_api
    user = api.register("patient")
    tokens = api.login("patient")
    time.sleep(RELOAD_INTERVAL_SECONDS + 0.5)
    started = time.monotonic()
    later = api.password_grant("patient", PASSWORD)
    elapsed = time.monotonic() - started
    assert later.status_code == 200, (later.status_code, later.text, f"{elapsed:.1f} s")
    assert elapsed < RELOAD_INTERVAL_SECONDS, f"the login waited {elapsed:.1f} s on a lock"
    api.assert_alive(api.tokens_of(later), user)
    # The refresh grant issues tokens the same way; the ring is fresh again now.
    api.assert_alive(api.refreshed(tokens["refresh_token"]), user)
    api.assert_auth_responses_not_cached()
    api.assert_log_holds_no_secret()


def test_a_lost_devices_session_is_ended_from_the_session_list(api: Api) -> None:
    """A person lists their sessions, recognises one by its device, and ends it: its access
    token is refused at once and its refresh token no longer refreshes."""
    api.register("traveller")
    phone = api.tokens_of(
        api.request(
            "POST", "/auth/token", data=password_form("traveller", PASSWORD),
            headers={"User-Agent": "TravellerPhone/1.0"},
        )
    )
    laptop = api.login("traveller")
    listed = api.request("GET", "/auth/sessions", headers=bearer(laptop["access_token"]))
    assert listed.status_code == 200, listed.text
    items = listed.json()["items"]
    assert [item["current"] for item in items] == [True, False]
    [lost] = [item for item in items if item["user_agent"] == "TravellerPhone/1.0"]
    assert lost["client_ip"] == "127.0.0.1"

    ended = api.request(
        "DELETE", f"/auth/sessions/{lost['id']}", headers=bearer(laptop["access_token"])
    )
    assert ended.status_code == 204, ended.text
    api.assert_dead(phone)
    assert api.me(laptop["access_token"]).status_code == 200
    api.assert_log_holds_no_secret()


def test_ending_a_session_wins_every_race_with_its_own_refresh(fresh_api: Api) -> None:
    """The lost device refreshes while two other requests end its session, all at once,
    round after round: exactly one delete ends it (one 204, one 404), and tokens the refresh
    got in before the end are refused after it. (One refresh per round: two would be a
    reuse, which ends the session by itself.)"""
    api = fresh_api
    api.register("racer")
    laptop = api.login("racer")
    base_url = api.server.base_url

    def refresh_once(refresh_token: str) -> httpx.Response:
        with httpx.Client(base_url=base_url, timeout=30) as client:
            return client.post("/auth/token", data=refresh_form(refresh_token))

    def delete_once(path: str) -> httpx.Response:
        with httpx.Client(base_url=base_url, timeout=30) as client:
            return client.delete(path, headers=bearer(laptop["access_token"]))

    for _ in range(5):
        lost = api.login("racer")
        path = f"/auth/sessions/{session_id_of(lost)}"
        with ThreadPoolExecutor(max_workers=3) as pool:
            refreshing = pool.submit(refresh_once, lost["refresh_token"])
            deleting = [pool.submit(delete_once, path) for _ in range(2)]
            refreshed = refreshing.result()
            deleted = sorted(future.result().status_code for future in deleting)
        assert deleted == [204, 404], deleted
        assert refreshed.status_code in {200, 400}, refreshed.text
        if refreshed.status_code == 200:
            api.assert_dead(api.tokens_of(refreshed))
        api.assert_dead(lost)
    assert api.me(laptop["access_token"]).status_code == 200
    listed = api.request("GET", "/auth/sessions", headers=bearer(laptop["access_token"]))
    assert [item["current"] for item in listed.json()["items"]] == [True]


def session_id_of(tokens: dict[str, Any]) -> str:
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    session_id: str = claims["sid"]
    return session_id
