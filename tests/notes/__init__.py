"""Tests of /notes, and the steps they share: accounts with tokens, notes, comparisons."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import func, select, update

from bastion.storage.tables import Note, NoteShare, User
from tests.identity.helpers import bearer, login, register


@dataclass(frozen=True)
class Account:
    username: str
    id: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.token)


async def account(client: httpx.AsyncClient, username: str, **scope: str) -> Account:
    """A new user, logged in (``scope="..."`` narrows the token)."""
    user = await register(client, username)
    tokens = await login(client, username, **scope)
    return Account(username=username, id=str(user["id"]), token=tokens["access_token"])


async def admin_account(app: FastAPI, client: httpx.AsyncClient, username: str) -> Account:
    """A user given the admin role in the database, then logged in again so the token
    carries notes:read_all."""
    user = await register(client, username)
    async with app.state.bastion.database.transaction() as session:
        await session.execute(
            update(User).where(User.username == username).values(roles=["admin"])
        )
    tokens = await login(client, username)
    assert "notes:read_all" in tokens["scope"].split()
    return Account(username=username, id=str(user["id"]), token=tokens["access_token"])


async def create_note(
    client: httpx.AsyncClient, owner: Account, title: str = "A note", body: str = "<p>text</p>"
) -> dict[str, Any]:
    response = await client.post(
        "/notes", json={"title": title, "body": body}, headers=owner.headers
    )
    assert response.status_code == 201, response.text
    note: dict[str, Any] = response.json()
    return note


async def share(
    client: httpx.AsyncClient, owner: Account, note_id: str, username: str
) -> httpx.Response:
    return await client.post(
        f"/notes/{note_id}/shares", json={"username": username}, headers=owner.headers
    )


async def list_all_pages(
    client: httpx.AsyncClient, caller: Account, **params: str | int
) -> list[dict[str, Any]]:
    """Every item of a listing, following next_cursor to the end."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(1000):
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = await client.get("/notes", params=query, headers=caller.headers)
        assert response.status_code == 200, response.text
        page = response.json()
        items.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError("the listing never ended")


def without_request_id(response: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = response.json()
    assert body.pop("request_id")
    return body


# Differ per response by design; the rest of two "not found" answers must be identical.
# RateLimit counts down with every request of the client, whatever it asks for.
VARYING_HEADERS = {"x-request-id", "date", "content-length", "ratelimit"}


def comparable(response: httpx.Response) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
    headers = sorted(
        (name.lower(), value)
        for name, value in response.headers.multi_items()
        if name.lower() not in VARYING_HEADERS
    )
    return response.status_code, without_request_id(response), headers


async def stored_notes(app: FastAPI) -> list[Note]:
    async with app.state.bastion.database.transaction() as session:
        return list((await session.scalars(select(Note).order_by(Note.created_at))).all())


async def share_count(app: FastAPI) -> int:
    async with app.state.bastion.database.transaction() as session:
        count = await session.scalar(select(func.count()).select_from(NoteShare))
    return int(count or 0)
