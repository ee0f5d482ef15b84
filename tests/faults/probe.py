"""A fault test's own client and account: the requests it makes during a fault, each timed.

The client's timeout is the bound the test sets: a request that gets no answer within it
fails the test as a hang, instead of being waited for. How long an answer took is httpx's
``response.elapsed`` (from sending the request to reading the whole answer). A prober's
requests may be made from several threads at once.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import LiveServer
from tests.identity.helpers import PASSWORD, account_form, bearer, password_form


@dataclass
class Prober:
    http: httpx.Client
    username: str
    bound: float

    def request(self, method: str, path: str, **options: Any) -> httpx.Response:
        try:
            return self.http.request(method, path, **options)
        except httpx.TimeoutException:
            pytest.fail(f"{method} {path}: no answer within {self.bound} s (a hang)")

    def login(self) -> httpx.Response:
        return self.request("POST", "/auth/token", data=password_form(self.username))

    def session_cookie(self) -> str:
        """A browser sign-in's session cookie, as a ``Cookie`` header value."""
        response = self.request(
            "POST", "/auth/session", data={"username": self.username, "password": PASSWORD},
            headers={"Sec-Fetch-Site": "same-origin"},
        )
        assert response.status_code == 204, response.text
        return f"bastion_session={response.cookies['bastion_session']}"

    def token(self) -> str:
        """A fresh access token: the login must succeed."""
        response = self.login()
        assert response.status_code == 200, response.text
        access: str = response.json()["access_token"]
        return access

    def write(self, token: str) -> httpx.Response:
        note = {"title": "probe", "body": f"probe {uuid.uuid4().hex}"}
        return self.request("POST", "/notes", json=note, headers=bearer(token))

    def me(self, token: str) -> httpx.Response:
        return self.request("GET", "/auth/me", headers=bearer(token))

    def ready(self) -> httpx.Response:
        return self.request("GET", "/health/ready")

    def live(self) -> httpx.Response:
        return self.request("GET", "/health/live")

    def assert_serves(self) -> None:
        """A login, a note write and /auth/me all succeed."""
        token = self.token()
        written = self.write(token)
        assert written.status_code == 201, written.text
        me = self.me(token)
        assert me.status_code == 200, me.text


@contextlib.contextmanager
def prober(server: LiveServer, bound: float) -> Iterator[Prober]:
    """A prober with an account of its own on ``server``, which serves it at first."""
    with server.client(timeout=bound) as http:
        username = f"probe-{uuid.uuid4().hex[:8]}"
        registered = http.post("/auth/register", json=account_form(username))
        assert registered.status_code == 201, registered.text
        probe = Prober(http, username, bound)
        probe.assert_serves()
        yield probe
