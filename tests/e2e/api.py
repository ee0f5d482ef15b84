"""Talking to a live server over HTTP: one ``Api`` client and the verdicts on its answers.

The request bodies and ``bearer`` are the in-process identity tests' own
(``tests/identity/helpers.py``); what is here is what only a live server needs: a sync client
that tags each request with an id of its own and remembers every answer and every secret it
saw, so that a test can ask afterwards whether any of them reached the server's log.
"""

from __future__ import annotations

import contextlib
import itertools
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.conftest import FAST_HASHING
from tests.e2e.conftest import LiveServer, assert_problem, assert_secure_headers
from tests.identity.helpers import PASSWORD, account_form, bearer, password_form, refresh_form

# Generous, so a flow measures what it is about and not the login limiter (tested elsewhere).
ROOMY_LOGIN_LIMIT = "1000/minute"
# Argon2id at its cheapest, as ``BASTION_*`` values, for servers whose tests do not measure
# hashing (the production check refuses these values; development mode allows them).
FAST_HASHING_ENV = {name: str(value) for name, value in FAST_HASHING.items()}
# What a token of ``bastion serve`` carries when nothing is configured.
DEFAULT_ISSUER = "http://127.0.0.1:8000"
DEFAULT_AUDIENCE = "bastion"
INVALID_GRANT = {
    "error": "invalid_grant",
    "error_description": "The credentials or the grant are not valid.",
}
USER_FIELDS = {
    "id", "username", "email", "age", "roles", "created_at", "email_verified", "mfa_enabled",
}
USER_PERMISSIONS = {"notes:read", "notes:write"}
# Every path the service answers with ``Cache-Control: no-store``.
NO_STORE_PREFIX = "/auth"

_request_ids = itertools.count(1)
_names = itertools.count(1)


@dataclass
class Account:
    """Who a request is made as: an account and the tokens of its latest login."""

    id: str
    username: str
    password: str
    access_token: str = ""
    refresh_token: str = ""
    scope: set[str] = field(default_factory=set)

    @property
    def auth(self) -> dict[str, str]:
        return bearer(self.access_token)


class Api:
    """A sync client that remembers every response and every secret it saw."""

    def __init__(self, server: LiveServer, client: httpx.Client) -> None:
        self.server = server
        self.client = client
        self.responses: list[httpx.Response] = []
        self.secrets: set[str] = set()
        self.last_request_id = ""

    def request(
        self, method: str, path: str, who: Account | None = None, **options: Any
    ) -> httpx.Response:
        """One request with an id of its own, as ``who`` when given."""
        self.last_request_id = f"e2e-api-{next(_request_ids)}"
        headers = dict(options.pop("headers", {}))
        if who is not None:
            headers.update(who.auth)
        headers["X-Request-ID"] = self.last_request_id
        response = self.client.request(method, path, headers=headers, **options)
        self.responses.append(response)
        return response

    def ok(self, method: str, path: str, who: Account, status: int = 200, **options: Any) -> Any:
        """The body of an answer that must have ``status``; None when it has none."""
        response = self.request(method, path, who, **options)
        assert response.status_code == status, (method, path, response.status_code, response.text)
        return response.json() if response.content else None

    # -- accounts and grants -------------------------------------------------------------

    def register(
        self, username: str, password: str = PASSWORD, *, email: str | None = None, age: int = 30
    ) -> dict[str, Any]:
        self.secrets.add(password)
        form = account_form(username, email=email, password=password, age=age)
        response = self.request("POST", "/auth/register", json=form)
        assert response.status_code == 201, response.text
        user: dict[str, Any] = response.json()
        assert set(user) == USER_FIELDS, user
        return user

    def password_grant(self, username: str, password: str) -> httpx.Response:
        self.secrets.add(password)
        return self.request("POST", "/auth/token", data=password_form(username, password))

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
        return self.request("POST", "/auth/token", data=refresh_form(refresh_token))

    def refreshed(self, refresh_token: str) -> dict[str, Any]:
        return self.tokens_of(self.refresh(refresh_token))

    def me(self, access_token: str) -> httpx.Response:
        return self.request("GET", "/auth/me", headers=bearer(access_token))

    def revoke(self, token: str, hint: str | None = None) -> httpx.Response:
        form = {"token": token} | ({"token_type_hint": hint} if hint else {})
        return self.request("POST", "/auth/revoke", data=form)

    def sign_in(self, account: Account) -> Account:
        """Logs ``account`` in and keeps its new tokens and scope on it."""
        tokens = self.login(account.username, account.password)
        account.access_token = tokens["access_token"]
        account.refresh_token = tokens["refresh_token"]
        account.scope = set(tokens["scope"].split())
        return account

    def new_account(self, prefix: str) -> Account:
        """A new plain user with a name no other test uses, signed in."""
        username = f"{prefix}{next(_names)}-{uuid.uuid4().hex[:6]}"
        user = self.register(username)
        account = self.sign_in(Account(user["id"], username, PASSWORD))
        assert account.scope == USER_PERMISSIONS, account.scope
        return account

    def audit(self, who: Account, **params: str) -> list[dict[str, Any]]:
        page = self.ok("GET", "/admin/audit", who, params={"limit": "100", **params})
        items: list[dict[str, Any]] = page["items"]
        return items

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
        auth = [r for r in self.responses if r.request.url.path.startswith(NO_STORE_PREFIX)]
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


@contextlib.contextmanager
def connected(server: LiveServer) -> Iterator[Api]:
    """An ``Api`` on a client of its own, closed afterwards."""
    with server.client() as client:
        yield Api(server, client)


def cache_directives(response: httpx.Response) -> set[str]:
    value = response.headers.get("cache-control", "")
    return {part.strip().lower() for part in value.split(",") if part.strip()}


def assert_unauthorized(response: httpx.Response, *secrets: str) -> dict[str, Any]:
    """401 problem details with a Bearer challenge, echoing none of ``secrets``; not cached
    where the service promises it (every /auth answer)."""
    body = assert_problem(response, 401, *secrets)
    challenge = response.headers.get("www-authenticate", "")
    assert challenge.split(" ", 1)[0] == "Bearer", challenge
    if response.request.url.path.startswith(NO_STORE_PREFIX):
        assert "no-store" in cache_directives(response), response.headers.get("cache-control")
    return body


def assert_invalid_grant(response: httpx.Response) -> None:
    """RFC 6749 §5.2: 400 ``invalid_grant`` (plain JSON, not problem details), not cached."""
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].split(";")[0] == "application/json"
    assert response.json() == INVALID_GRANT
    assert "no-store" in cache_directives(response), response.headers.get("cache-control")
