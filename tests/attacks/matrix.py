"""The authorization matrix: every route, for every kind of caller, against the status the
contract says it must get.

The object-level cells (routes that name a note) are attacked by ``test_api1_bola.py``, all
other cells by ``test_api5_function_level.py``, which also fails for a route the matrix does
not list, so a new route cannot ship without someone deciding who may call it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
from fastapi import FastAPI
from sqlalchemy import update

from bastion.storage.tables import User
from tests.identity.helpers import NEW_PASSWORD, PASSWORD, bearer, login, register

CALLERS = ("anonymous", "owner", "other", "auditor", "admin")

# (method, path) -> status for each caller, in CALLERS order. "owner" owns the note the
# path names; "other" is another plain user; object routes answer 404 to whoever may not
# see the object (same body as a missing one).
MATRIX: dict[tuple[str, str], tuple[int, int, int, int, int]] = {
    ("GET", "/openapi.json"): (200, 200, 200, 200, 200),
    ("GET", "/docs/static/swagger-ui.css"): (200, 200, 200, 200, 200),
    ("GET", "/docs/static/swagger-ui-bundle.js"): (200, 200, 200, 200, 200),
    ("GET", "/docs/static/favicon-32x32.png"): (200, 200, 200, 200, 200),
    ("GET", "/docs"): (200, 200, 200, 200, 200),
    ("GET", "/docs/swagger-init.js"): (200, 200, 200, 200, 200),
    # The console's page and files: public, like the docs; what it shows comes from the API.
    ("GET", "/app"): (308, 308, 308, 308, 308),
    ("GET", "/app/"): (200, 200, 200, 200, 200),
    ("GET", "/app/static/app.js"): (200, 200, 200, 200, 200),
    ("GET", "/app/static/app.css"): (200, 200, 200, 200, 200),
    ("GET", "/health/live"): (200, 200, 200, 200, 200),
    ("HEAD", "/health/live"): (200, 200, 200, 200, 200),
    ("GET", "/health/ready"): (200, 200, 200, 200, 200),
    ("HEAD", "/health/ready"): (200, 200, 200, 200, 200),
    ("GET", "/.well-known/jwks.json"): (200, 200, 200, 200, 200),
    ("POST", "/auth/register"): (201, 201, 201, 201, 201),
    ("POST", "/auth/token"): (400, 400, 400, 400, 400),
    ("POST", "/auth/revoke"): (200, 200, 200, 200, 200),
    ("POST", "/auth/logout"): (401, 204, 204, 204, 204),
    # A browser's sign-in (wrong credentials: 400 for everyone) and sign-out; with a bearer
    # token the sign-out ends that token's session, as /auth/logout does.
    ("POST", "/auth/session"): (400, 400, 400, 400, 400),
    ("DELETE", "/auth/session"): (401, 204, 204, 204, 204),
    ("GET", "/auth/me"): (401, 200, 200, 200, 200),
    ("GET", "/auth/sessions"): (401, 200, 200, 200, 200),
    # "owner" owns the session the path names: nobody else can see or end it, admins included.
    ("DELETE", "/auth/sessions/{session_id}"): (401, 204, 404, 404, 404),
    ("POST", "/auth/password"): (401, 204, 204, 204, 204),
    # The caller's own second factor: anyone signed in may set one up (the password is
    # right); nobody has one yet, so confirming, turning off and renewing codes conflict.
    ("POST", "/auth/mfa/totp"): (401, 200, 200, 200, 200),
    ("POST", "/auth/mfa/totp/confirm"): (401, 409, 409, 409, 409),
    ("DELETE", "/auth/mfa/totp"): (401, 409, 409, 409, 409),
    ("POST", "/auth/mfa/recovery-codes"): (401, 409, 409, 409, 409),
    # Mailed links: asking for one answers 202 whatever happens (a mail or none); a link's
    # token is proof enough on its own, so opening one is public, and a wrong one is a 400.
    ("POST", "/auth/email/verification"): (401, 202, 202, 202, 202),
    ("POST", "/auth/email/verify"): (400, 400, 400, 400, 400),
    ("POST", "/auth/password/forgot"): (202, 202, 202, 202, 202),
    ("POST", "/auth/password/reset"): (400, 400, 400, 400, 400),
    ("POST", "/notes"): (401, 201, 201, 403, 201),
    ("GET", "/notes"): (401, 200, 200, 403, 200),
    ("GET", "/notes?all=true"): (401, 403, 403, 403, 200),
    ("GET", "/notes/{note_id}"): (401, 200, 404, 403, 200),
    ("PATCH", "/notes/{note_id}"): (401, 200, 404, 403, 404),
    ("DELETE", "/notes/{note_id}"): (401, 204, 404, 403, 404),
    ("POST", "/notes/{note_id}/shares"): (401, 200, 404, 403, 404),
    ("GET", "/admin/users"): (401, 403, 403, 403, 200),
    ("PATCH", "/admin/users/{user_id}"): (401, 403, 403, 403, 200),
    ("POST", "/admin/users/{user_id}/unlock"): (401, 403, 403, 403, 204),
    ("GET", "/admin/audit"): (401, 403, 403, 200, 200),
}
# Cells beyond the route table: the same route with a query that changes who may call it.
EXTRA_CELLS = {("GET", "/notes?all=true")}
# The cells whose path names one object: who may touch which note (API1); the rest decide
# who may call a function at all (API5).
_OBJECTS = ("{note_id}", "{session_id}")
OBJECT_CELLS = sorted(cell for cell in MATRIX if any(name in cell[1] for name in _OBJECTS))
FUNCTION_CELLS = sorted(cell for cell in MATRIX if cell not in OBJECT_CELLS)


@dataclass
class World:
    client: httpx.AsyncClient
    note_id: str
    user_id: str  # the "other" user, target of the admin routes
    session_id: str  # a session of the owner's, other than the one its requests use
    headers: dict[str, dict[str, str]]


async def _set_roles(app: FastAPI, username: str, roles: list[str]) -> None:
    async with app.state.bastion.database.transaction() as session:
        await session.execute(update(User).where(User.username == username).values(roles=roles))


async def _world(app: FastAPI, client: httpx.AsyncClient) -> World:
    await register(client, "owner")
    other = await register(client, "other")
    await register(client, "auditor")
    await register(client, "root")
    await _set_roles(app, "auditor", ["auditor"])
    await _set_roles(app, "root", ["admin", "user"])
    owner_token = (await login(client, "owner"))["access_token"]
    created = await client.post(
        "/notes", json={"title": "owned", "body": "<p>mine</p>"}, headers=bearer(owner_token)
    )
    assert created.status_code == 201, created.text
    headers: dict[str, dict[str, str]] = {"anonymous": {}}
    for caller, username in (("owner", "owner"), ("other", "other"), ("auditor", "auditor"),
                             ("admin", "root")):
        headers[caller] = bearer((await login(client, username))["access_token"])
    return World(
        client,
        note_id=created.json()["id"],
        user_id=other["id"],
        session_id=await _owner_session(client),
        headers=headers,
    )


async def _owner_session(client: httpx.AsyncClient) -> str:
    token = (await login(client, "owner"))["access_token"]
    session_id: str = jwt.decode(token, options={"verify_signature": False})["sid"]
    return session_id


Request = Callable[[World, str], Awaitable[httpx.Response]]


def _request(method: str, path: str) -> Request:
    async def send(world: World, caller: str) -> httpx.Response:
        url = (
            path.replace("{note_id}", world.note_id)
            .replace("{user_id}", world.user_id)
            .replace("{session_id}", world.session_id)
        )
        kwargs: dict[str, Any] = {"headers": world.headers[caller]}
        if (method, path) == ("POST", "/auth/register"):
            kwargs["json"] = {
                "username": f"new-{caller}",
                "email": f"new-{caller}@example.com",
                "password": PASSWORD,
                "age": 30,
            }
        elif (method, path) == ("POST", "/auth/token"):
            kwargs["data"] = {"grant_type": "password", "username": "nobody", "password": "x"}
        elif (method, path) == ("POST", "/auth/session"):
            kwargs["data"] = {"username": "nobody", "password": "x"}
            kwargs["headers"] = {**kwargs["headers"], "Sec-Fetch-Site": "same-origin"}
        elif (method, path) == ("POST", "/auth/revoke"):
            kwargs["data"] = {"token": "not-a-token"}
        elif (method, path) == ("POST", "/auth/password"):
            kwargs["json"] = {"current_password": PASSWORD, "new_password": NEW_PASSWORD}
        elif (method, path) == ("POST", "/auth/mfa/totp"):
            kwargs["json"] = {"password": PASSWORD}
        elif (method, path) == ("POST", "/auth/mfa/totp/confirm"):
            kwargs["json"] = {"otp": "123456"}
        elif path in {"/auth/mfa/totp", "/auth/mfa/recovery-codes"}:
            kwargs["json"] = {"password": PASSWORD, "otp": "123456"}
        elif (method, path) == ("POST", "/auth/email/verify"):
            kwargs["json"] = {"token": "not-a-token"}
        elif (method, path) == ("POST", "/auth/password/reset"):
            kwargs["json"] = {"token": "not-a-token", "new_password": NEW_PASSWORD}
        elif (method, path) == ("POST", "/auth/password/forgot"):
            kwargs["json"] = {"email": "owner@example.com"}
        elif (method, path) == ("POST", "/notes"):
            kwargs["json"] = {"title": "new", "body": "<p>x</p>"}
        elif (method, path) == ("PATCH", "/notes/{note_id}"):
            kwargs["json"] = {"title": "changed"}
        elif (method, path) == ("POST", "/notes/{note_id}/shares"):
            kwargs["json"] = {"username": "auditor"}
        elif (method, path) == ("PATCH", "/admin/users/{user_id}"):
            kwargs["json"] = {"roles": ["user"]}
        http_method = "GET" if method in {"Route", "Mount"} else method
        return await world.client.request(http_method, url, **kwargs)

    return send


def cell_id(cell: tuple[str, str]) -> str:
    """``METHOD /path``: a readable test id for a cell."""
    return f"{cell[0]} {cell[1]}"


async def assert_cell(app: FastAPI, client: httpx.AsyncClient, cell: tuple[str, str]) -> None:
    """Each caller in turn sends the cell's request; each must get the matrix's status, and
    every refusal is problem+json."""
    world = await _world(app, client)
    send = _request(*cell)
    got: dict[str, int] = {}
    for caller in CALLERS:
        response = await send(world, caller)
        got[caller] = response.status_code
        if response.status_code in {401, 403, 404}:
            assert response.headers["content-type"] == "application/problem+json"
        if response.status_code == 204 and cell == ("DELETE", "/notes/{note_id}"):
            world = await _world_after_delete(world)
        if response.status_code == 204 and cell == ("DELETE", "/auth/sessions/{session_id}"):
            world.session_id = await _owner_session(world.client)  # a live one to probe
    assert got == dict(zip(CALLERS, MATRIX[cell], strict=True))


async def _world_after_delete(world: World) -> World:
    """The owner deleted the note: later callers probe a fresh note of the owner's."""
    owner_token = (await login(world.client, "owner"))["access_token"]
    created = await world.client.post(
        "/notes", json={"title": "again", "body": "<p>x</p>"}, headers=bearer(owner_token)
    )
    world.note_id = created.json()["id"]
    return world
