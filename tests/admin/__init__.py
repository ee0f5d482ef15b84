"""Tests of /admin and ``bastion create-admin``; shared steps below."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import update

from bastion.audit.events import AuditEventType
from bastion.audit.service import StoredAuditEvent, list_events
from bastion.storage.tables import User
from tests.identity.helpers import bearer, login, register

PROBLEM = "application/problem+json"


async def set_roles(app: FastAPI, user_id: str, roles: list[str]) -> None:
    """Straight into the database, as an operator bootstrapping the first admin would."""
    async with app.state.bastion.database.transaction() as session:
        await session.execute(
            update(User).where(User.id == uuid.UUID(user_id)).values(roles=roles)
        )


async def make_admin(
    app: FastAPI, client: httpx.AsyncClient, username: str = "root"
) -> tuple[str, dict[str, str]]:
    """A registered admin, logged in: (user id, Authorization header)."""
    user = await register(client, username)
    await set_roles(app, user["id"], ["admin", "user"])
    tokens = await login(client, username)
    return user["id"], bearer(tokens["access_token"])


async def events(
    app: FastAPI, type: AuditEventType | None = None, limit: int = 100
) -> list[StoredAuditEvent]:
    async with app.state.bastion.database.transaction() as session:
        return await list_events(session, type=type, limit=limit)


async def patch_user(
    client: httpx.AsyncClient, headers: dict[str, str], user_id: str, body: Any
) -> httpx.Response:
    return await client.patch(f"/admin/users/{user_id}", headers=headers, json=body)
