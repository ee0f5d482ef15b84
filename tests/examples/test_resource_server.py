"""examples/resource_server against a real bastion: tokens verified through the JWKS,
revocations honoured through Redis, key rotation followed.

``bastion serve`` runs on SQLite with a Redis of the test's own; the example runs as its own
uvicorn process, configured only by its ``RESOURCE_*`` variables pointing at bastion's JWKS,
issuer, audience and Redis. One flow, as a user and an operator meet it: log in at bastion,
read a report at the resource server (200), ask it for what a plain user may not (403
``insufficient_scope``), come without a token (401 ``Bearer``), log out at bastion (the same
token 401 at the resource server at once), ``bastion keys rotate`` (tokens of the new key
verify at the resource server; those of the old one still do).
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import jwt
import pytest

from tests.e2e.api import (
    DEFAULT_AUDIENCE,
    DEFAULT_ISSUER,
    FAST_HASHING_ENV,
    ROOMY_LOGIN_LIMIT,
    Api,
    assert_unauthorized,
    connected,
)
from tests.e2e.conftest import (
    REPO_ROOT,
    STARTUP_TIMEOUT,
    Deployment,
    LiveServer,
    assert_problem,
    deployed,
    stop_server,
)
from tests.identity.helpers import PASSWORD, bearer
from tests.servers.postgres import free_port
from tests.servers.redis import RedisServer

EXAMPLE = REPO_ROOT / "examples" / "resource_server"
PORT_ATTEMPTS = 3
ROTATED = re.compile(r"new signing key (\S+) \(\w+\), signing from (\S+)")
# bastion reloads its key ring before issuing at most every 5 s: a little margin.
NEW_KID_DEADLINE = 10.0
POLL = 0.25


def resource_command(port: int) -> list[str]:
    """The example under uvicorn's own command line, as its README runs it."""
    return [
        sys.executable, "-m", "uvicorn", "app:app",
        "--app-dir", str(EXAMPLE),
        "--host", "127.0.0.1", "--port", str(port),
        "--no-server-header",
        "--no-access-log",  # the toolkit writes its own access log, as JSON
    ]


def resource_env(bastion: LiveServer, redis_url: str) -> dict[str, str]:
    """This process's environment without any ``BASTION_*``, plus the example's own."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("BASTION_")}
    env.update(
        RESOURCE_JWKS_URL=f"{bastion.base_url}/.well-known/jwks.json",
        RESOURCE_ISSUER=DEFAULT_ISSUER,
        RESOURCE_AUDIENCE=DEFAULT_AUDIENCE,
        RESOURCE_REDIS_URL=redis_url,
    )
    return env


def _ready(server: LiveServer) -> bool:
    """True once ``/health`` answers 200 (bastion's keys loaded, Redis answering)."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            return False
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{server.base_url}/health", timeout=1.0).status_code == 200:
                return True
        time.sleep(0.1)
    stop_server(server)
    pytest.fail(f"the resource server was not ready in {STARTUP_TIMEOUT} s:\n{server.log_tail()}")


@contextlib.contextmanager
def resource_server(root: Path, env: dict[str, str]) -> Iterator[LiveServer]:
    root.mkdir(parents=True, exist_ok=True)
    log_path = root / "server.log"
    for _ in range(PORT_ATTEMPTS):
        port = free_port()
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                resource_command(port), cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        server = LiveServer("resource", port, root, root, log_path, process)
        if _ready(server):
            break
        if "address already in use" not in server.log_tail().lower():
            pytest.fail(f"the resource server exited at start:\n{server.log_tail()}")
    else:
        pytest.fail(f"no free port for the resource server:\n{server.log_tail()}")
    try:
        yield server
    finally:
        stop_server(server)


def kid_of(token: str) -> str:
    kid: str = jwt.get_unverified_header(token)["kid"]
    return kid


def login(api: Api, username: str, password: str = PASSWORD) -> str:
    token: str = api.login(username, password)["access_token"]
    return token


@pytest.fixture
def bastion(tmp_path: Path, own_redis: RedisServer) -> Iterator[Deployment]:
    with deployed(
        tmp_path / "bastion",
        "sqlite",
        None,
        redis_url=own_redis.url,
        rate_limit_login=ROOMY_LOGIN_LIMIT,
        **FAST_HASHING_ENV,
    ) as deployment:
        yield deployment


def test_the_resource_server_follows_bastions_tokens_revocations_and_rotations(
    tmp_path: Path, bastion: Deployment, own_redis: RedisServer
) -> None:
    env = resource_env(bastion.server, own_redis.url)
    with (
        resource_server(tmp_path / "resource", env) as resource,
        connected(bastion.server) as api,
        resource.client() as reports,
    ):
        user = api.register("reader")
        token = login(api, "reader")

        # A plain user's token: notes:read, so /reports; not audit:read.
        answer = reports.get("/reports", headers=bearer(token))
        assert answer.status_code == 200, answer.text
        assert answer.json()["reader_id"] == user["id"]
        denied = reports.get("/audit-summary", headers=bearer(token))
        assert_problem(denied, 403, token)
        assert 'error="insufficient_scope"' in denied.headers["www-authenticate"]

        # An admin's token holds audit:read: bastion's roles decide here too.
        bastion.create_admin("overseer", PASSWORD + "-admin")
        admin_token = login(api, "overseer", PASSWORD + "-admin")
        assert reports.get("/audit-summary", headers=bearer(admin_token)).status_code == 200

        # No token, or a token that is not one.
        assert_unauthorized(reports.get("/reports"))
        assert_unauthorized(reports.get("/reports", headers=bearer(token[:-4] + "AAAA")), token)

        # Logout at bastion: the same token is refused at the resource server at once.
        other_session = login(api, "reader")
        assert api.request("POST", "/auth/logout", headers=bearer(token)).status_code == 204
        assert_unauthorized(reports.get("/reports", headers=bearer(token)), token)
        assert reports.get("/reports", headers=bearer(other_session)).status_code == 200

        # Rotation: published first, signing 15 s later; the resource server learns the
        # new key from the JWKS when a token of it first arrives.
        old_kid = kid_of(other_session)
        rotated = bastion.bastion("keys", "rotate")
        assert rotated.returncode == 0, (rotated.stdout, rotated.stderr)
        match = ROTATED.search(rotated.stdout)
        assert match, rotated.stdout
        new_kid = match.group(1)
        signs_from = datetime.fromisoformat(match.group(2))
        time.sleep(max(0.0, (signs_from - datetime.now(UTC)).total_seconds()))
        deadline = time.monotonic() + NEW_KID_DEADLINE
        new_token = login(api, "reader")
        while kid_of(new_token) == old_kid and time.monotonic() < deadline:
            time.sleep(POLL)
            new_token = login(api, "reader")
        assert kid_of(new_token) == new_kid, "bastion never signed with the rotated key"
        answer = reports.get("/reports", headers=bearer(new_token))
        assert answer.status_code == 200, answer.text
        assert reports.get("/reports", headers=bearer(other_session)).status_code == 200

        # And the revocation still holds after the rotation, for tokens of either key.
        assert_unauthorized(reports.get("/reports", headers=bearer(token)), token)
        assert api.request("POST", "/auth/logout", headers=bearer(new_token)).status_code == 204
        assert_unauthorized(reports.get("/reports", headers=bearer(new_token)), new_token)

        # The key set was fetched twice in all: at start, and once for the rotated-in kid.
        records = resource.log_records(strict=False)
        fetched = [r["kids"] for r in records if r.get("event") == "jwks_fetched"]
        assert fetched == [[old_kid], sorted([old_kid, new_kid])], fetched

        # The resource server's log holds none of the tokens it saw.
        log = resource.log_text()
        for seen in (token, other_session, new_token, admin_token):
            assert seen.rsplit(".", 1)[1] not in log
