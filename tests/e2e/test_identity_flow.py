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

import itertools
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest

from bastion.storage.signing_keys import RELOAD_INTERVAL_SECONDS
from tests.e2e.conftest import (
    LiveServer,
    assert_problem,
    assert_secure_headers,
    service,
)
from tests.identity.helpers import NEW_PASSWORD, PASSWORD
from tests.servers.postgres import PostgresServer

# Generous, so the flow measures sessions and not the login limiter (tested elsewhere).
LOGIN_LIMIT = "1000/minute"
DEFAULT_ISSUER = "http://127.0.0.1:8000"
DEFAULT_AUDIENCE = "bastion"
INVALID_GRANT = {
    "error": "invalid_grant",
    "error_description": "The credentials or the grant are not valid.",
}
OTHER_WRONG_PASSWORD = "not the password of anybody at all"
_request_ids = itertools.count(1)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def identity_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """``bastion serve`` as operators run it, one per backend, for state-changing flows."""
    backend: str = request.param
    postgres: PostgresServer | None = (
        request.getfixturevalue("postgres_server") if backend == "postgresql" else None
    )
    root = tmp_path_factory.mktemp(f"identity-{backend}")
    with service(root, backend, postgres, rate_limit_login=LOGIN_LIMIT) as server:
        yield server


class Api:
    """A sync client that remembers every response and every secret it saw."""

    def __init__(self, server: LiveServer, client: httpx.Client) -> None:
        self.server = server
        self.client = client
        self.responses: list[httpx.Response] = []
        self.secrets: set[str] = set()
        self.last_request_id = ""

    def request(self, method: str, path: str, **options: Any) -> httpx.Response:
        self.last_request_id = f"e2e-identity-{next(_request_ids)}"
        headers = dict(options.pop("headers", {}))
        headers["X-Request-ID"] = self.last_request_id
        response = self.client.request(method, path, headers=headers, **options)
        self.responses.append(response)
        return response

    def register(self, username: str, password: str = PASSWORD) -> dict[str, Any]:
        self.secrets.add(password)
        response = self.request(
            "POST",
            "/auth/register",
            json={
                "username": username,
                "email": f"{username}@example.com",
                "password": password,
                "age": 30,
            },
        )
        assert response.status_code == 201, response.text
        user: dict[str, Any] = response.json()
        assert set(user) == {"id", "username", "email", "age", "roles", "created_at"}, user
        return user

    def password_grant(self, username: str, password: str) -> httpx.Response:
        self.secrets.add(password)
        return self.request(
            "POST",
            "/auth/token",
            data={"grant_type": "password", "username": username, "password": password},
        )

    def tokens_of(self, response: httpx.Response) -> dict[str, Any]:
        assert response.status_code == 200, response.text
        tokens: dict[str, Any] = response.json()
        assert tokens["token_type"] == "bearer"
        assert isinstance(tokens["expires_in"], int) and tokens["expires_in"] > 0
        self.secrets.update((tokens["access_token"], tokens["refresh_token"]))
        return tokens

    def login(self, username: str, password: str = PASSWORD) -> dict[str, Any]:
        return self.tokens_of(self.password_grant(username, password))

    def refresh(self, refresh_token: str) -> httpx.Response:
        return self.request(
            "POST",
            "/auth/token",
            data={"grant_type": "refresh_token", "refresh_token": refresh_token},
        )

    def refreshed(self, refresh_token: str) -> dict[str, Any]:
        return self.tokens_of(self.refresh(refresh_token))

    def me(self, access_token: str) -> httpx.Response:
        return self.request("GET", "/auth/me", headers=bearer(access_token))

    def revoke(self, token: str, hint: str | None = None) -> httpx.Response:
        form = {"token": token} | ({"token_type_hint": hint} if hint else {})
        return self.request("POST", "/auth/revoke", data=form)

    # -- verdicts ------------------------------------------------------------------------

    def assert_alive(self, tokens: dict[str, Any], user: dict[str, Any]) -> None:
        response = self.me(tokens["access_token"])
        assert response.status_code == 200, response.text
        assert response.json() == user

    def assert_dead(self, tokens: dict[str, Any]) -> None:
        """The access token is refused at once and the refresh token no longer refreshes."""
        assert_unauthorized(self.me(tokens["access_token"]), tokens["access_token"])
        assert_invalid_grant(self.refresh(tokens["refresh_token"]))

    def assert_auth_responses_not_cached(self) -> None:
        """Every /auth answer (200, 204, 400, 401, ...) carried ``Cache-Control: no-store``."""
        auth = [r for r in self.responses if r.request.url.path.startswith("/auth")]
        assert auth, "no /auth response was seen"
        for response in auth:
            where = f"{response.request.method} {response.request.url.path}"
            directives = cache_directives(response)
            assert "no-store" in directives, (where, response.status_code, directives)
            assert_secure_headers(response)

    def assert_log_holds_no_secret(self) -> None:
        """The server's log, once the last request's access line is written, holds none of
        the passwords or tokens sent or received (nor a token's signature alone)."""
        assert self.server.access_records(self.last_request_id), "no access line logged"
        text = self.server.log_text()
        needles = set(self.secrets)
        needles.update(
            secret.rsplit(".", 1)[1] for secret in self.secrets if secret.count(".") == 2
        )
        leaked = sorted(needle for needle in needles if needle in text)
        assert not leaked, f"{len(leaked)} secret(s) in the server log"
        # Nor anything the database holds: no SQL, no signing key, no password hash.
        for stored in ("PRIVATE KEY", "$argon2id$", "INSERT INTO", "SELECT "):
            assert stored not in text, f"{stored!r} in the server log"


@pytest.fixture
def api(identity_server: LiveServer) -> Iterator[Api]:
    with identity_server.client() as client:
        yield Api(identity_server, client)


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_api(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Api]:
    """A server of the test's own: when it fails, it must not take the module's down too."""
    backend: str = request.param
    postgres: PostgresServer | None = (
        request.getfixturevalue("postgres_server") if backend == "postgresql" else None
    )
    root = tmp_path_factory.mktemp(f"identity-fresh-{backend}")
    with (
        service(root, backend, postgres, rate_limit_login=LOGIN_LIMIT) as server,
        server.client() as client,
    ):
        yield Api(server, client)


def bearer(access_token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {access_token}"}


def cache_directives(response: httpx.Response) -> set[str]:
    value = response.headers.get("cache-control", "")
    return {part.strip().lower() for part in value.split(",") if part.strip()}


def assert_unauthorized(response: httpx.Response, *secrets: str) -> dict[str, Any]:
    """401 problem details with a Bearer challenge, echoing none of ``secrets``."""
    body = assert_problem(response, 401, *secrets)
    challenge = response.headers.get("www-authenticate", "")
    assert challenge.split(" ", 1)[0] == "Bearer", challenge
    assert "no-store" in cache_directives(response), response.headers.get("cache-control")
    return body


def assert_invalid_grant(response: httpx.Response) -> None:
    """RFC 6749 §5.2: 400 ``invalid_grant`` (plain JSON, not problem details), not cached."""
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].split(";")[0] == "application/json"
    assert response.json() == INVALID_GRANT
    assert "no-store" in cache_directives(response), response.headers.get("cache-control")


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
    assert json_body.status_code == 400, json_body.text
    assert json_body.json()["error"] == "invalid_request"

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
