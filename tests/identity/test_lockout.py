"""Account lockout: per account, refuses even the right password, grows, never extends itself.

On SQLite and PostgreSQL. The login rate limit is switched off here: it is per client IP and
would answer 429 before the account's own counter is reached, and these tests are about the
account's counter (the limiter has tests of its own).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from bastion.audit.events import AuditEventType
from bastion.audit.service import StoredAuditEvent, list_events
from bastion.config import Settings
from bastion.services import services_of
from bastion.storage.tables import User
from tests.conftest import FAST_HASHING, make_settings
from tests.identity.helpers import (
    NEW_PASSWORD,
    PASSWORD,
    bearer,
    login,
    password_grant,
    register,
)

WRONG_PASSWORD = "wrong but long enough password"
INVALID_GRANT = {
    "error": "invalid_grant",
    "error_description": "The credentials or the grant are not valid.",
}
THRESHOLD = 5  # BASTION_LOCKOUT_THRESHOLD's default


@pytest.fixture
def lockout_overrides() -> dict[str, int]:
    """Extra settings; a test parametrizes this name to change the lockout periods."""
    return {}


@pytest.fixture
def settings(
    tmp_path: Path, database_url: str | None, lockout_overrides: dict[str, int]
) -> Settings:
    return make_settings(
        tmp_path / "data",
        database_url=database_url,
        rate_limits_enabled=False,
        **FAST_HASHING,
        **lockout_overrides,
    )


@pytest.fixture
async def alice(client: httpx.AsyncClient) -> str:
    user = await register(client)
    user_id: str = user["id"]
    return user_id


def freeze_clock(app: FastAPI, moment: datetime) -> None:
    """Every later request sees ``moment`` as now."""
    services = services_of(app)
    for part in (services.grants, services.accounts, services.revocation, services.admin):
        part.clock = lambda: moment


async def user_row(app: FastAPI, username: str = "alice") -> User:
    async with app.state.bastion.database.transaction() as session:
        user: User | None = await session.scalar(select(User).where(User.username == username))
    assert user is not None
    return user


async def audit_events(app: FastAPI, type: AuditEventType) -> list[StoredAuditEvent]:
    async with app.state.bastion.database.transaction() as session:
        return await list_events(session, type=type, limit=100)


async def fail(client: httpx.AsyncClient, times: int, username: str = "alice") -> None:
    for _ in range(times):
        response = await password_grant(client, username, WRONG_PASSWORD)
        assert response.status_code == 400, response.text
        assert response.json() == INVALID_GRANT


async def test_threshold_failures_lock_the_account_even_against_the_right_password(
    app: FastAPI, client: httpx.AsyncClient, alice: str
) -> None:
    await fail(client, THRESHOLD - 1)
    before = await user_row(app)
    assert before.locked_until is None
    assert before.failed_logins == THRESHOLD - 1

    await fail(client, 1)
    refused = await password_grant(client)
    assert refused.status_code == 400
    assert refused.json() == INVALID_GRANT

    user = await user_row(app)
    assert user.locked_until is not None
    assert user.locked_until > datetime.now(UTC)
    assert user.lockouts == 1
    [lockout] = await audit_events(app, AuditEventType.LOCKOUT)
    assert lockout.subject_id == alice
    assert lockout.outcome == "denied"
    assert lockout.details["seconds"] == 60
    failures = await audit_events(app, AuditEventType.LOGIN_FAILURE)
    # The refused right password is recorded as refused because of the lock.
    assert failures[0].details["reason"] == "locked"
    assert [event.details["reason"] for event in failures[1:]] == ["wrong_password"] * THRESHOLD


async def test_attempts_during_the_lock_do_not_extend_it(
    app: FastAPI, client: httpx.AsyncClient, alice: str
) -> None:
    start = datetime.now(UTC)
    freeze_clock(app, start)
    await fail(client, THRESHOLD)
    locked = await user_row(app)
    assert locked.locked_until == start + timedelta(seconds=60)

    # Half-way through the lock, more than a threshold's worth of failures and the right
    # password: were they counted, the account would lock again from this later moment.
    freeze_clock(app, start + timedelta(seconds=30))
    await fail(client, THRESHOLD + 2)
    assert (await password_grant(client)).json() == INVALID_GRANT

    after = await user_row(app)
    assert after.locked_until == locked.locked_until
    assert after.lockouts == 1
    assert after.failed_logins == 0
    assert len(await audit_events(app, AuditEventType.LOCKOUT)) == 1


async def test_after_the_lock_the_right_password_works_and_resets_the_counters(
    app: FastAPI, client: httpx.AsyncClient, alice: str
) -> None:
    start = datetime.now(UTC)
    freeze_clock(app, start)
    await fail(client, THRESHOLD)
    locked_until = (await user_row(app)).locked_until
    assert locked_until == start + timedelta(seconds=60)

    freeze_clock(app, locked_until - timedelta(seconds=1))
    assert (await password_grant(client)).json() == INVALID_GRANT

    freeze_clock(app, locked_until + timedelta(seconds=1))
    response = await password_grant(client)
    assert response.status_code == 200, response.text

    user = await user_row(app)
    assert user.failed_logins == 0
    assert user.lockouts == 0
    assert user.locked_until is None


@pytest.mark.parametrize(
    ("lockout_overrides", "periods"),
    [
        ({}, [60, 120, 240]),
        ({"lockout_base_seconds": 60, "lockout_max_seconds": 100}, [60, 100, 100]),
    ],
    ids=["doubling", "capped"],
)
async def test_each_lock_lasts_longer_up_to_the_maximum(
    app: FastAPI, client: httpx.AsyncClient, alice: str, periods: list[int]
) -> None:
    now = datetime.now(UTC)
    for number, seconds in enumerate(periods, start=1):
        freeze_clock(app, now)
        await fail(client, THRESHOLD)
        user = await user_row(app)
        assert user.lockouts == number
        assert user.locked_until == now + timedelta(seconds=seconds)
        now = user.locked_until + timedelta(seconds=1)  # the lock has expired

    lockouts = await audit_events(app, AuditEventType.LOCKOUT)
    assert [event.details["seconds"] for event in reversed(lockouts)] == periods
    assert [event.details["lockouts"] for event in reversed(lockouts)] == [1, 2, 3]
    assert {event.subject_id for event in lockouts} == {alice}


async def test_a_success_in_between_resets_the_consecutive_count(
    app: FastAPI, client: httpx.AsyncClient, alice: str
) -> None:
    await fail(client, THRESHOLD - 1)
    await login(client)
    assert (await user_row(app)).failed_logins == 0
    await fail(client, THRESHOLD - 1)

    await login(client)  # not locked
    user = await user_row(app)
    assert user.locked_until is None
    assert user.lockouts == 0
    assert await audit_events(app, AuditEventType.LOCKOUT) == []


@pytest.fixture
async def clients_by_ip(app: FastAPI) -> AsyncIterator[list[httpx.AsyncClient]]:
    """One client per source address, all over the same app (and so the same accounts)."""
    clients = [
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=(f"10.0.0.{number}", 1234)),
            base_url="http://testserver",
        )
        for number in range(1, THRESHOLD + 2)
    ]
    yield clients
    for client in clients:
        await client.aclose()


async def test_the_lock_is_per_account_not_per_client_address(
    app: FastAPI, clients_by_ip: list[httpx.AsyncClient], alice: str
) -> None:
    *attackers, owner = clients_by_ip
    for attacker in attackers:  # one failure from each of THRESHOLD addresses
        await fail(attacker, 1)

    refused = await password_grant(owner)
    assert refused.status_code == 400
    assert refused.json() == INVALID_GRANT
    assert (await user_row(app)).locked_until is not None

    [lockout] = await audit_events(app, AuditEventType.LOCKOUT)
    assert lockout.client_ip == f"10.0.0.{THRESHOLD}"
    failures = await audit_events(app, AuditEventType.LOGIN_FAILURE)
    assert [event.client_ip for event in reversed(failures)] == [
        f"10.0.0.{number}" for number in range(1, THRESHOLD + 2)
    ]


async def test_a_wrong_current_password_on_password_change_counts_toward_the_lock(
    app: FastAPI, client: httpx.AsyncClient, alice: str
) -> None:
    """A stolen access token must not become an unlimited password oracle."""
    tokens = await login(client)
    for _ in range(THRESHOLD):
        response = await client.post(
            "/auth/password",
            headers=bearer(tokens["access_token"]),
            json={"current_password": WRONG_PASSWORD, "new_password": NEW_PASSWORD},
        )
        assert response.status_code == 400, response.text
        assert response.headers["content-type"] == "application/problem+json"

    user = await user_row(app)
    assert user.lockouts == 1, "wrong current passwords were not counted (rolled back?)"
    assert user.locked_until is not None
    [lockout] = await audit_events(app, AuditEventType.LOCKOUT)
    assert lockout.subject_id == alice
    refused = await password_grant(client, "alice", PASSWORD)
    assert refused.json() == INVALID_GRANT

    # While locked, neither more wrong guesses nor the right password change anything.
    for current in (WRONG_PASSWORD, PASSWORD):
        response = await client.post(
            "/auth/password",
            headers=bearer(tokens["access_token"]),
            json={"current_password": current, "new_password": NEW_PASSWORD},
        )
        assert response.status_code == 400
    after = await user_row(app)
    assert (after.lockouts, after.locked_until) == (user.lockouts, user.locked_until)
    assert (await password_grant(client, "alice", NEW_PASSWORD)).json() == INVALID_GRANT
    changes = await audit_events(app, AuditEventType.PASSWORD_CHANGE)
    assert [event.details["reason"] for event in reversed(changes)] == [
        *["wrong_password"] * THRESHOLD, "locked", "locked"
    ]


async def test_parallel_wrong_guesses_are_all_counted(
    app: FastAPI, client: httpx.AsyncClient, alice: str
) -> None:
    """No lost update: every guess verified as wrong is in the counter or in a lock."""
    guesses = 2 * THRESHOLD + 1
    responses = await asyncio.gather(
        *(password_grant(client, "alice", WRONG_PASSWORD) for _ in range(guesses))
    )
    assert all(response.json() == INVALID_GRANT for response in responses)

    user = await user_row(app)
    assert user.lockouts >= 1
    assert user.locked_until is not None
    failures = await audit_events(app, AuditEventType.LOGIN_FAILURE)
    assert len(failures) == guesses
    wrong = sum(event.details["reason"] == "wrong_password" for event in failures)
    assert wrong == user.lockouts * THRESHOLD + user.failed_logins
    assert len(await audit_events(app, AuditEventType.LOCKOUT)) == user.lockouts
    assert (await password_grant(client)).json() == INVALID_GRANT
