"""Deterministic interleavings of the races in tests/attacks/test_api2_authentication_races.py.

A hasher whose verification lets another change commit while the hash runs — the ~20 ms
window the real races hit by chance — so each decision made before the slow step is
shown to be re-checked where it commits. Every test here fails on a grant that acts on the
account it read before hashing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import httpx
import jwt
from fastapi import FastAPI
from sqlalchemy import select, update

from bastion.audit.events import AuditEventType
from bastion.audit.service import list_events
from bastion.clock import utc_now
from bastion.security.passwords import PasswordHasher
from bastion.services import services_of
from bastion.storage.tables import User
from tests.identity.helpers import (
    NEW_PASSWORD,
    PASSWORD,
    bearer,
    login,
    password_grant,
    refresh,
    register,
)

Interleaved = Callable[[], Awaitable[None]]


class InterleavingHasher(PasswordHasher):
    """The real hasher; the next ``verify`` runs ``meanwhile`` before it answers."""

    def __init__(self, inner: PasswordHasher) -> None:
        self.__dict__.update(inner.__dict__)
        self.meanwhile: Interleaved | None = None

    async def verify(self, password: str, stored_hash: str) -> Any:
        verification = await super().verify(password, stored_hash)
        step, self.meanwhile = self.meanwhile, None
        if step is not None:
            await step()
        return verification


def interleave(app: FastAPI) -> InterleavingHasher:
    services = services_of(app)
    hasher = InterleavingHasher(services.grants.hasher)
    services.grants.hasher = hasher
    services.accounts.hasher = hasher
    return hasher


async def write_user(app: FastAPI, username: str, **values: Any) -> None:
    async with services_of(app).database.transaction() as session:
        await session.execute(update(User).where(User.username == username).values(**values))


async def user_row(app: FastAPI, username: str) -> User:
    async with services_of(app).database.transaction() as session:
        user = await session.scalar(select(User).where(User.username == username))
    assert user is not None
    return user


async def login_failure_reasons(app: FastAPI) -> list[Any]:
    async with services_of(app).database.transaction() as session:
        events = await list_events(session, type=AuditEventType.LOGIN_FAILURE, limit=100)
    return [event.details.get("reason") for event in events]


def lock_during_the_next_hash(app: FastAPI) -> datetime:
    """Alice's account locks (as a burst of other guesses would) while the next password
    verification runs; returns until when."""
    locked_until = utc_now() + timedelta(minutes=5)

    async def lock() -> None:
        await write_user(app, "alice", locked_until=locked_until, lockouts=1, failed_logins=0)

    interleave(app).meanwhile = lock
    return locked_until


async def test_a_lock_set_during_the_hash_refuses_the_right_password_and_stays(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    await register(client, "alice")
    locked_until = lock_during_the_next_hash(app)
    response = await password_grant(client, "alice", PASSWORD)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"
    row = await user_row(app, "alice")
    assert row.locked_until == locked_until  # the success did not clear the fresh lock
    assert row.lockouts == 1
    assert await login_failure_reasons(app) == ["locked"]


async def test_a_wrong_guess_that_finds_the_account_locked_is_not_counted(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    await register(client, "alice")
    locked_until = lock_during_the_next_hash(app)
    response = await password_grant(client, "alice", "a wrong but long guess")
    assert response.status_code == 400
    row = await user_row(app, "alice")
    assert (row.failed_logins, row.lockouts, row.locked_until) == (0, 1, locked_until)
    assert await login_failure_reasons(app) == ["locked"]


async def test_the_old_password_does_not_sign_in_across_a_password_change(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    await register(client, "alice")
    hasher = interleave(app)
    new_hash = await hasher.hash(NEW_PASSWORD)

    async def change() -> None:
        await write_user(app, "alice", password_hash=new_hash)

    hasher.meanwhile = change
    response = await password_grant(client, "alice", PASSWORD)
    assert response.status_code == 400
    assert (await user_row(app, "alice")).password_hash == new_hash
    assert (await password_grant(client, "alice", NEW_PASSWORD)).status_code == 200


async def test_a_rehash_of_the_old_password_never_overwrites_a_new_one(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    await register(client, "alice")
    hasher = interleave(app)
    # Parameters changed since the hash was stored: the login will want to rehash it.
    hasher.__dict__.update(PasswordHasher(memory_kib=1024, time_cost=2, parallelism=1).__dict__)
    new_hash = await hasher.hash(NEW_PASSWORD)

    async def change() -> None:
        await write_user(app, "alice", password_hash=new_hash)

    hasher.meanwhile = change
    assert (await password_grant(client, "alice", PASSWORD)).status_code == 400
    assert (await user_row(app, "alice")).password_hash == new_hash
    assert (await password_grant(client, "alice", PASSWORD)).status_code == 400
    assert (await password_grant(client, "alice", NEW_PASSWORD)).status_code == 200


async def test_a_login_in_flight_across_a_demotion_gets_only_the_remaining_scope(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    await register(client, "alice")
    await write_user(app, "alice", roles=["admin", "user"])
    hasher = interleave(app)
    cutoff = int(utc_now().timestamp()) + 1

    async def demote() -> None:
        await write_user(app, "alice", roles=["user"], tokens_revoked_before=cutoff)

    hasher.meanwhile = demote
    tokens = await login(client, "alice")
    scope = set(jwt.decode(tokens["access_token"], options={"verify_signature": False})["scope"]
                .split())
    assert not {permission for permission in scope if permission.startswith(("users:", "audit:"))}
    assert (await client.get("/admin/users", headers=bearer(tokens["access_token"]))).status_code \
        == 403
    # Nor does its refresh token bring the admin scope back.
    refreshed = await refresh(client, tokens["refresh_token"])
    assert refreshed.status_code == 200
    assert "users:read" not in refreshed.json()["scope"].split()


async def test_a_login_that_commits_first_is_revoked_by_the_password_change(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """The other order: the login wins, then the change must see and end its session."""
    await register(client, "alice")
    owner = await login(client, "alice")
    hasher = interleave(app)
    racing: dict[str, Any] = {}

    async def login_first() -> None:
        racing.update(await login(client, "alice"))

    hasher.meanwhile = login_first  # runs while the change verifies the current password
    response = await client.post(
        "/auth/password",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=bearer(owner["access_token"]),
    )
    assert response.status_code == 204
    assert (await client.get("/auth/me", headers=bearer(racing["access_token"]))).status_code \
        == 401
    assert (await refresh(client, racing["refresh_token"])).status_code == 400
    assert (await password_grant(client, "alice", PASSWORD)).status_code == 400
