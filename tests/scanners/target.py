"""What the scanners scan: the real ``bastion serve`` in a tmp dir, seeded with an admin and
two users, and the Web Fuzzing Commons file that tells a scanner how to log in as each.

The server is ``tests/e2e/conftest.py``'s (``deployed``: a subprocess on a free port with a
clean environment, on SQLite or a fresh PostgreSQL database), with the settings a scanner
needs so that what it reports is the API and not the test set-up:

- quotas of 100,000 a minute: a fuzzer sends thousands of requests from one address, and a
  429 would end an operation's test before its interesting cases;
- Argon2id at its cheapest: every login and registration hashes, and OWASP's parameters would
  spend the time budget on hashing;
- a lockout threshold of 1,000 (the most the settings allow): the fuzzer's wrong passwords for
  alice must not lock the account every other case logs in as;
- access tokens that live a day: a deep run outlasts the default 15 minutes.

Scanners log in themselves through ``POST /auth/token`` (``wfc_document``): an operation that
ends the session (logout, a password change) then costs one 401 and a new login instead of
every later case. The harness logs each account in once too, so that a seeding problem fails
here, saying which account, and not as a scanner's mysterious sea of 401s.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.e2e.api import FAST_HASHING_ENV, Account, connected
from tests.e2e.conftest import Deployment, LiveServer, deployed
from tests.identity.helpers import PASSWORD, password_form
from tests.servers.postgres import PostgresServer

ROOMY_QUOTA = "100000/minute"
SCAN_SETTINGS = {
    "rate_limit_default": ROOMY_QUOTA,
    "rate_limit_login": ROOMY_QUOTA,
    "rate_limit_register": ROOMY_QUOTA,
    "rate_limit_mail": ROOMY_QUOTA,
    **FAST_HASHING_ENV,
    "access_token_ttl": "86400",
    "lockout_threshold": "1000",
}
ADMIN = "admin1"
ADMIN_PASSWORD = "an operator's own long passphrase 7"
USER = "alice"
# The user whose objects alice must never see (object_level_authorization's second peer).
PEER = "bob"
TOKEN_URL = "/auth/token"
# The marker of the tests only ``make scan`` runs (conftest.py deselects them otherwise).
DEEP_MARKER = "deep_scan"
# The name under which a scan test records its one-line summary (see conftest.py).
SUMMARY_PROPERTY = "scan_summary"
# pytest's record_property fixture: a name and a value for the test's report.
RecordProperty = Callable[[str, object], None]


@dataclass(frozen=True)
class ScanTarget:
    """A seeded live server and the files a scanner run needs, all under ``root``."""

    deployment: Deployment
    root: Path
    accounts: dict[str, Account]
    wfc_file: Path

    @property
    def server(self) -> LiveServer:
        return self.deployment.server

    @property
    def base_url(self) -> str:
        return self.server.base_url

    @property
    def backend(self) -> str:
        return self.server.backend


def login_entry(name: str, password: str) -> dict[str, Any]:
    """A WFC ``loginEndpointAuth`` entry: the OAuth2 password grant, sent as a form, and the
    ``access_token`` it answers sent back as a bearer token."""
    return {
        "name": name,
        "loginEndpointAuth": {
            "endpoint": TOKEN_URL,
            "verb": "POST",
            "contentType": "application/x-www-form-urlencoded",
            "payloadRaw": urlencode(password_form(name, password)),
            "token": {
                "extractFrom": "body",
                "extractSelector": "/access_token",
                "sendIn": "header",
                "sendName": "Authorization",
                "sendTemplate": "Bearer {token}",
            },
        },
    }


def wfc_document(accounts: dict[str, Account]) -> dict[str, Any]:
    """https://github.com/WebFuzzing/Commons auth file: one login entry per identity."""
    return {
        "schemaVersion": "0.1.0",
        "auth": [login_entry(account.username, account.password) for account in accounts.values()],
    }


def seed(deployment: Deployment) -> dict[str, Account]:
    """The admin through ``bastion create-admin`` (as an operator makes one), alice and bob
    through registration with a note each, all three logged in once."""
    deployment.create_admin(ADMIN, ADMIN_PASSWORD)
    with connected(deployment.server) as api:
        users = [Account(api.register(name)["id"], name, PASSWORD) for name in (USER, PEER)]
        me = api.me(api.login(ADMIN, ADMIN_PASSWORD)["access_token"])
        assert me.status_code == 200, me.text
        admin = Account(me.json()["id"], ADMIN, ADMIN_PASSWORD)
        accounts = {account.username: api.sign_in(account) for account in (admin, *users)}
        # From the first case on there are objects of two owners to read, list and try to
        # take (the admin's read_all, the user run's BOLA peer).
        for user in users:
            note = {"title": f"{user.username}'s note", "body": "seeded for the scanners"}
            api.ok("POST", "/notes", user, 201, json=note)
    return accounts


def postgres_for(request: pytest.FixtureRequest, backend: str) -> PostgresServer | None:
    """The session's PostgreSQL server when ``backend`` is PostgreSQL (started only then)."""
    if backend != "postgresql":
        return None
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server


@contextlib.contextmanager
def scan_target(
    root: Path, backend: str, postgres: PostgresServer | None = None
) -> Iterator[ScanTarget]:
    """A seeded server on ``backend`` with its WFC file, stopped (and its PostgreSQL database
    dropped) afterwards. Fails, with the server's log tail, when it cannot start."""
    root.mkdir(parents=True, exist_ok=True)  # `bastion migrate` runs in it first
    with deployed(root, backend, postgres, **SCAN_SETTINGS) as deployment:
        accounts = seed(deployment)
        wfc_file = root / "wfc-auth.json"
        wfc_file.write_text(json.dumps(wfc_document(accounts), indent=2), encoding="utf-8")
        yield ScanTarget(deployment, root, accounts, wfc_file)


def tool_environment(**variables: str) -> dict[str, str]:
    """The environment of a scanner's process: the test's own without proxy variables (the
    server is on the loopback; a proxy would see the traffic, or refuse it) and without
    colours, plus ``variables``."""
    env = {name: value for name, value in os.environ.items() if "proxy" not in name.lower()}
    env.update({"NO_COLOR": "1", "TERM": "dumb", **variables})
    return env


def decoded(output: str | bytes | None) -> str:
    """A process's captured output as text (``TimeoutExpired`` holds bytes, even with
    ``text=True``)."""
    if isinstance(output, bytes):
        return output.decode("utf-8", errors="replace")
    return output or ""
