"""API6:2023 Unrestricted Access to Sensitive Business Flows: registration in bulk.

Registration is the flow an attacker automates: fake accounts by the thousand, or probing
which usernames and emails exist (a taken one is a 409, as it must be). Each address gets
``BASTION_RATE_LIMIT_REGISTER`` registrations (20 an hour by default; 3 here), whatever
they answer: a 409 costs a probe as much as a 201 costs an account. Past the quota every
registration is the same 429, taken name or free, stores nothing and hashes no password;
another address has its own quota, and the address can still log in (logins have their own).

The login flow's protections are attacked elsewhere: per-address login quota before any hash
(``tests/test_ratelimiting.py``, ``tests/e2e/test_rate_limits.py``), lockout
(``tests/identity/test_lockout.py``), answers that do not tell unknown users from wrong
passwords (``tests/identity/test_enumeration.py``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import argon2
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from bastion.config import Settings
from bastion.storage.tables import User
from tests.conftest import FAST_HASHING, make_settings
from tests.identity.helpers import account_form, login

QUOTA = 3
OTHER_ADDRESS = ("198.51.100.7", 40000)
# Differ per answer by design (the count, its reset, the request); the rest must not.
VARYING_HEADERS = {"x-request-id", "date", "ratelimit", "retry-after"}


@pytest.fixture
def settings(tmp_path: Path, database_url: str | None) -> Settings:
    return make_settings(
        tmp_path / "data",
        database_url=database_url,
        rate_limit_register=f"{QUOTA}/hour",
        **FAST_HASHING,
    )


@pytest.fixture
async def elsewhere(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client at another address than ``client``'s."""
    transport = httpx.ASGITransport(app=app, client=OTHER_ADDRESS)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


async def user_count(app: FastAPI) -> int:
    async with app.state.bastion.database.transaction() as session:
        return int(await session.scalar(select(func.count()).select_from(User)) or 0)


def comparable(response: httpx.Response) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
    body: dict[str, Any] = response.json()
    body.pop("request_id", None)
    headers = sorted(
        (name.lower(), value)
        for name, value in response.headers.multi_items()
        if name.lower() not in VARYING_HEADERS
    )
    return response.status_code, body, headers


async def test_registration_from_one_address_stops_at_its_quota(
    app: FastAPI,
    client: httpx.AsyncClient,
    elsewhere: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def register(on: httpx.AsyncClient, username: str) -> httpx.Response:
        return await on.post("/auth/register", json=account_form(username))

    # The quota, spent on two accounts and one probe of a taken name.
    assert (await register(client, "alice")).status_code == 201
    assert (await register(client, "alice")).status_code == 409
    assert (await register(client, "bob")).status_code == 201

    hashed: list[str] = []
    original_hash = argon2.PasswordHasher.hash

    def counting_hash(self: argon2.PasswordHasher, *args: Any, **kwargs: Any) -> str:
        hashed.append("one")
        return original_hash(self, *args, **kwargs)

    monkeypatch.setattr(argon2.PasswordHasher, "hash", counting_hash)
    free = await register(client, "mallory")
    taken = await register(client, "alice")
    for response in (free, taken):
        assert response.status_code == 429, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert int(response.headers["retry-after"]) >= 1
    # Past the quota a taken name and a free one get the same answer: nothing to probe.
    assert comparable(free) == comparable(taken)
    for number in range(10):
        assert (await register(client, f"bulk{number}")).status_code == 429
    assert hashed == [], "refused registrations hashed passwords"
    assert await user_count(app) == 2

    # Another address has a quota of its own; this one can still log in.
    assert (await register(elsewhere, "mallory")).status_code == 201
    assert await user_count(app) == 3
    assert (await login(client, "alice"))["token_type"] == "bearer"
