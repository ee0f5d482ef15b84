"""Shared steps for identity tests: register, log in, call with a token.

The request bodies (``account_form``, ``password_form``, ``refresh_form``) and ``bearer`` serve
the live-server tests too (``tests/e2e/api.py``): one definition of each request.
"""

from __future__ import annotations

from typing import Any

import httpx

PASSWORD = "correct horse battery staple"
NEW_PASSWORD = "a different long passphrase 2026"


def account_form(
    username: str, *, email: str | None = None, password: str = PASSWORD, age: int = 30
) -> dict[str, Any]:
    """The JSON body of a registration; the email is the username's at example.com."""
    return {
        "username": username,
        "email": email or f"{username}@example.com",
        "password": password,
        "age": age,
    }


async def register(
    client: httpx.AsyncClient,
    username: str = "alice",
    *,
    email: str | None = None,
    password: str = PASSWORD,
    age: int = 30,
) -> dict[str, Any]:
    response = await client.post(
        "/auth/register", json=account_form(username, email=email, password=password, age=age)
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def password_form(username: str, password: str = PASSWORD, **extra: str) -> dict[str, str]:
    """The form body of an OAuth2 password grant."""
    return {"grant_type": "password", "username": username, "password": password, **extra}


async def password_grant(
    client: httpx.AsyncClient,
    username: str = "alice",
    password: str = PASSWORD,
    **extra: str,
) -> httpx.Response:
    return await client.post("/auth/token", data=password_form(username, password, **extra))


async def login(
    client: httpx.AsyncClient, username: str = "alice", password: str = PASSWORD, **extra: str
) -> dict[str, Any]:
    response = await password_grant(client, username, password, **extra)
    assert response.status_code == 200, response.text
    tokens: dict[str, Any] = response.json()
    return tokens


def refresh_form(refresh_token: str, **extra: str) -> dict[str, str]:
    """The form body of an OAuth2 refresh grant."""
    return {"grant_type": "refresh_token", "refresh_token": refresh_token, **extra}


async def refresh(client: httpx.AsyncClient, refresh_token: str, **extra: str) -> httpx.Response:
    return await client.post("/auth/token", data=refresh_form(refresh_token, **extra))


def bearer(access_token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {access_token}"}


async def me(client: httpx.AsyncClient, access_token: str) -> httpx.Response:
    return await client.get("/auth/me", headers=bearer(access_token))
