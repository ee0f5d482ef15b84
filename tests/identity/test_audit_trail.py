"""Every security event of the account life cycle lands in the hash-chained audit log.

On SQLite and PostgreSQL: each event carries the right type, outcome, subject, the client's
address and the X-Request-ID the client sent; the chain verifies; a row edited afterwards
with raw SQL is named by ``verify_chain``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from bastion.audit.service import StoredAuditEvent, list_events, verify_chain
from bastion.config import Settings
from tests.conftest import FAST_HASHING, make_settings
from tests.identity.helpers import NEW_PASSWORD, PASSWORD, bearer

CLIENT_IP = "203.0.113.7"
WRONG_PASSWORD = "wrong but long enough password"


@pytest.fixture
def settings(tmp_path: Path, database_url: str | None) -> Settings:
    # Eight logins from one address: the per-IP login limit is not what is tested here.
    return make_settings(
        tmp_path / "data", database_url=database_url, rate_limits_enabled=False, **FAST_HASHING
    )


@pytest.fixture
async def remote(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client at a known, non-loopback address."""
    transport = httpx.ASGITransport(app=app, client=(CLIENT_IP, 50123))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


class Steps:
    """Requests, each with its own X-Request-ID, so events can be matched to requests."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def register(self, request_id: str, username: str) -> str:
        response = await self.client.post(
            "/auth/register",
            headers={"X-Request-ID": request_id},
            json={
                "username": username,
                "email": f"{username}@example.com",
                "password": PASSWORD,
                "age": 30,
            },
        )
        assert response.status_code == 201, response.text
        user_id: str = response.json()["id"]
        return user_id

    async def token(self, request_id: str, expected: int, **form: str) -> dict[str, str]:
        response = await self.client.post(
            "/auth/token", headers={"X-Request-ID": request_id}, data=form
        )
        assert response.status_code == expected, response.text
        assert response.headers["x-request-id"] == request_id
        body: dict[str, str] = response.json()
        return body

    async def login(
        self, request_id: str, username: str = "alice", password: str = PASSWORD
    ) -> dict[str, str]:
        return await self.token(
            request_id, 200, grant_type="password", username=username, password=password
        )

    async def fail_login(self, request_id: str, username: str) -> None:
        await self.token(
            request_id, 400, grant_type="password", username=username, password=WRONG_PASSWORD
        )

    async def refresh(self, request_id: str, refresh_token: str, expected: int) -> dict[str, str]:
        return await self.token(
            request_id, expected, grant_type="refresh_token", refresh_token=refresh_token
        )

    async def post(
        self,
        request_id: str,
        path: str,
        expected: int,
        *,
        access_token: str | None = None,
        data: dict[str, str] | None = None,
        json: dict[str, str] | None = None,
    ) -> None:
        headers = {"X-Request-ID": request_id}
        if access_token is not None:
            headers.update(bearer(access_token))
        response = await self.client.post(path, headers=headers, data=data, json=json)
        assert response.status_code == expected, response.text


async def all_events(app: FastAPI) -> list[StoredAuditEvent]:
    async with app.state.bastion.database.transaction() as session:
        return await list_events(session, limit=100)


async def test_every_life_cycle_event_is_audited_and_the_chain_holds(
    app: FastAPI, remote: httpx.AsyncClient
) -> None:
    steps = Steps(remote)
    alice = await steps.register("register-alice", "alice")
    bob = await steps.register("register-bob", "bob")
    await steps.fail_login("unknown-user", "nobody")
    await steps.fail_login("wrong-password", "alice")
    threshold: int = app.state.bastion.settings.lockout_threshold
    for attempt in range(threshold):
        await steps.fail_login(f"lock-bob-{attempt}", "bob")
    first = await steps.login("login")
    second = await steps.refresh("refresh", first["refresh_token"], 200)
    await steps.refresh("reuse", first["refresh_token"], 400)
    to_log_out = await steps.login("login-for-logout")
    await steps.post("logout", "/auth/logout", 204, access_token=to_log_out["access_token"])
    to_revoke = await steps.login("login-for-revoke")
    await steps.post("revoke", "/auth/revoke", 200, data={"token": to_revoke["refresh_token"]})
    to_change = await steps.login("login-for-change")
    await steps.post(
        "password-change",
        "/auth/password",
        204,
        access_token=to_change["access_token"],
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
    )
    assert second["refresh_token"] != first["refresh_token"]

    events = await all_events(app)
    by_request = {event.request_id: event for event in events}
    expected = {
        # request id: (type, outcome, subject)
        "register-alice": ("registration", "success", alice),
        "register-bob": ("registration", "success", bob),
        "unknown-user": ("login_failure", "failure", None),
        "wrong-password": ("login_failure", "failure", alice),
        "login": ("login_success", "success", alice),
        "refresh": ("token_refresh", "success", alice),
        "reuse": ("refresh_reuse", "denied", alice),
        "logout": ("logout", "success", alice),
        "revoke": ("revocation", "success", alice),
        "password-change": ("password_change", "success", alice),
    }
    for request_id, (type, outcome, subject) in expected.items():
        event = by_request.get(request_id)
        assert event is not None, f"no audit event for {request_id}"
        assert (event.type, event.outcome, event.subject_id) == (type, outcome, subject), request_id
        assert event.client_ip == CLIENT_IP, request_id

    # The last failure of the series both counts as a failure and locks: two events.
    last_attempt = f"lock-bob-{threshold - 1}"
    lockout_request = [event for event in events if event.request_id == last_attempt]
    assert sorted(event.type for event in lockout_request) == ["lockout", "login_failure"]
    [lockout] = [event for event in events if event.type == "lockout"]
    assert (lockout.outcome, lockout.subject_id, lockout.client_ip) == ("denied", bob, CLIENT_IP)

    assert by_request["unknown-user"].details["reason"] == "unknown_user"
    assert by_request["wrong-password"].details["reason"] == "wrong_password"
    assert by_request["revoke"].details["kind"] == "refresh_token"
    assert {event.type for event in events} >= {
        "registration",
        "login_failure",
        "lockout",
        "login_success",
        "token_refresh",
        "refresh_reuse",
        "logout",
        "revocation",
        "password_change",
    }
    # Seqs are gap-free and newest first.
    assert [event.seq for event in events] == list(range(len(events), 0, -1))

    async with app.state.bastion.database.transaction() as session:
        intact = await verify_chain(session)
    assert intact.ok, intact
    assert intact.checked == len(events)

    # An insider flips the lockout to look harmless, straight in the database.
    async with app.state.bastion.database.transaction() as session:
        await session.execute(
            text("UPDATE audit_events SET outcome = 'success' WHERE seq = :seq"),
            {"seq": lockout.seq},
        )
    async with app.state.bastion.database.transaction() as session:
        tampered = await verify_chain(session)
    assert not tampered.ok
    assert tampered.broken_seq == lockout.seq
    assert tampered.checked == lockout.seq - 1
