"""``bastion keys rotate`` and ``bastion audit verify`` against a running ``bastion serve``.

The commands run as operators run them: separate processes with the server's environment
(same ``BASTION_DATA_DIR``, so the same SQLite file) while the server keeps serving. Proves
that a rotation takes effect in the running server without a restart (tokens of the old key
keep working, new tokens carry the new kid, the JWKS publishes both), and that the audit
chain verifies until one stored row is edited behind the service's back, after which the
command exits 1 and names that event.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
import pytest

from tests.e2e.api import (
    DEFAULT_AUDIENCE,
    DEFAULT_ISSUER,
    ROOMY_LOGIN_LIMIT,
    Api,
    connected,
)
from tests.e2e.conftest import Deployment, deployed

KEEPER = "keeper"
# The server reloads its key ring before issuing tokens at most every 5 s; a little margin.
NEW_KID_DEADLINE = 7.0
NEW_KID_POLL = 0.25
TAMPERED_SEQ = 2
ROTATED = re.compile(r"new signing key (\S+) \(\w+\), signing from (\S+)")
INTACT = re.compile(r"audit chain intact: (\d+) events")


@pytest.fixture
def operated(tmp_path: Path) -> Iterator[Deployment]:
    """A server of this test's own: rotating keys and editing rows change its state.
    It logs in repeatedly while waiting for the new key."""
    with deployed(tmp_path / "server", "sqlite", rate_limit_login=ROOMY_LOGIN_LIMIT) as deployment:
        yield deployment


def kid_of(access_token: str) -> str:
    kid = jwt.get_unverified_header(access_token).get("kid")
    assert isinstance(kid, str) and kid, kid
    return kid


def login(api: Api) -> str:
    token: str = api.login(KEEPER)["access_token"]
    return token


def published(api: Api) -> dict[str, dict[str, Any]]:
    response = api.request("GET", "/.well-known/jwks.json")
    assert response.status_code == 200, response.text
    return {key["kid"]: key for key in response.json()["keys"]}


def verifies_with(access_token: str, jwk: dict[str, Any]) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(
        access_token,
        key=jwt.PyJWK(jwk),
        algorithms=[jwk["alg"]],
        audience=DEFAULT_AUDIENCE,
        issuer=DEFAULT_ISSUER,
    )
    return claims


def audit_rows(database: Path) -> int:
    with contextlib.closing(sqlite3.connect(database, timeout=10)) as connection:
        (count,) = connection.execute("SELECT count(*) FROM audit_events").fetchone()
    assert isinstance(count, int)
    return count


def tamper(database: Path, seq: int) -> None:
    """Edits one event's details in place, as someone with access to the file could; the
    server keeps running (WAL: this writer waits for the server's lock, at most 10 s)."""
    with contextlib.closing(sqlite3.connect(database, timeout=10)) as connection:
        (before,) = connection.execute(
            "SELECT details FROM audit_events WHERE seq = ?", (seq,)
        ).fetchone()
        assert before not in ("{}", None), f"event {seq} has no details to tamper with"
        with connection:
            changed = connection.execute(
                "UPDATE audit_events SET details = '{}' WHERE seq = ?", (seq,)
            ).rowcount
    assert changed == 1


def test_rotation_reaches_the_running_server_and_audit_edits_are_detected(
    operated: Deployment,
) -> None:
    server = operated.server
    with connected(server) as api:
        registered = api.register(KEEPER, age=40)
        token_a = login(api)
        k1 = kid_of(token_a)
        assert k1 in published(api)

        # Rotate from another process, against the same data dir, while the server serves.
        rotated = operated.bastion("keys", "rotate")
        assert rotated.returncode == 0, (rotated.stdout, rotated.stderr)
        match = ROTATED.search(rotated.stdout)
        assert match, rotated.stdout
        k2 = match.group(1)
        assert k2 != k1
        assert "PRIVATE" not in rotated.stdout + rotated.stderr

        # Tokens of the retired key keep working until they expire.
        assert api.me(token_a).status_code == 200

        # Published first: the new public key reaches the JWKS (within the reload interval)
        # while the old key still signs, so no host meets a token of a key it has not had
        # the time to learn.
        deadline = time.monotonic() + NEW_KID_DEADLINE
        while k2 not in published(api) and time.monotonic() < deadline:
            time.sleep(NEW_KID_POLL)
        assert k2 in published(api)
        assert kid_of(login(api)) == k1
        signs_from = datetime.fromisoformat(match.group(2))
        time.sleep(max(0.0, (signs_from - datetime.now(UTC)).total_seconds()))

        # New tokens carry the new kid once the server's ring is reloaded (throttled).
        logins = 2
        deadline = time.monotonic() + NEW_KID_DEADLINE
        while True:
            token_b = login(api)
            logins += 1
            if kid_of(token_b) != k1 or time.monotonic() > deadline:
                break
            time.sleep(NEW_KID_POLL)
        assert kid_of(token_b) == k2, f"still signing with {k1} after {NEW_KID_DEADLINE} s"
        assert api.me(token_b).status_code == 200
        assert api.me(token_a).status_code == 200

        # The JWKS publishes both public keys; each token verifies with its own.
        keys = published(api)
        assert {k1, k2} <= keys.keys(), sorted(keys)
        assert verifies_with(token_a, keys[k1])["sub"] == registered["id"]
        assert verifies_with(token_b, keys[k2])["sub"] == registered["id"]
        with pytest.raises(jwt.InvalidSignatureError):
            verifies_with(token_b, keys[k1])

    # The audit chain is intact and covers every stored event.
    events = audit_rows(operated.database)
    assert events >= 1 + logins  # the registration and every successful login at least
    verified = operated.bastion("audit", "verify")
    assert verified.returncode == 0, (verified.stdout, verified.stderr)
    intact = INTACT.search(verified.stdout)
    assert intact, verified.stdout
    assert int(intact.group(1)) == events

    # One row edited behind the service's back: the chain breaks exactly there.
    tamper(operated.database, TAMPERED_SEQ)
    broken = operated.bastion("audit", "verify")
    output = broken.stdout + broken.stderr
    assert broken.returncode == 1, output
    assert re.search(rf"\bevent {TAMPERED_SEQ}\b", output), output
    assert "intact" not in output

    # The server, untouched by all this, still serves.
    with server.client() as client:
        assert client.get("/health/ready").status_code == 200
