"""API3:2023 Broken Object Property Level Authorization: which fields a caller may set or see.

Writing (mass assignment): a body may set only the fields its schema names. Every property of
an account that the server owns (its id, roles, lock counters, token cut-off, password hash,
timestamps) is smuggled into a registration, a password change and the token form; each is
refused or ignored, and the account stays what the server made it. The notes bodies and the
admin PATCH have their own attacks (``tests/notes/test_mass_assignment.py``,
``tests/admin/test_users.py``).

Reading (excessive data exposure): a whole session of every kind of caller is recorded, and
no response, error or header carries a password, a password hash, a refresh-token hash, a
signing key, a service secret, the audit chain's hashes or the lockout and token bookkeeping;
tokens appear only in the token endpoint's answer that issued them.

Only statuses are asserted of refusals: the shape of a 422 is not what is under attack here.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import argon2
import httpx
import jwt
from fastapi import FastAPI
from sqlalchemy import func, select

from bastion.identity.schemas import PasswordChangeRequest, RegisterRequest
from bastion.security.permissions import ROLE_PERMISSIONS
from bastion.storage.tables import (
    AuditEvent,
    RefreshToken,
    ServiceSecret,
    SigningKeyRecord,
    User,
)
from tests.admin import make_admin, set_roles
from tests.identity.helpers import (
    NEW_PASSWORD,
    PASSWORD,
    account_form,
    bearer,
    login,
    password_grant,
    refresh,
    register,
)

ATTACKER_PASSWORD = "the attacker's very own passphrase"
ATTACKER_HASH = argon2.PasswordHasher(memory_cost=1024, time_cost=1).hash(ATTACKER_PASSWORD)
# Every column of ``users`` a registration does not name, with the value an attacker would
# want in it. A new column fails ``test_registration_sets_no_property_the_server_owns``
# until it is listed here, so someone decides whether a client may set it.
SERVER_OWNED_USER_FIELDS: dict[str, Any] = {
    "id": "00000000-0000-0000-0000-000000000001",
    "password_hash": ATTACKER_HASH,
    "roles": ["admin", "user"],
    "disabled": False,
    "tokens_revoked_before": 0,
    "failed_logins": -1_000_000,
    "lockouts": 0,
    "locked_until": None,
    "email_verified": True,
    "totp_secret": "JBSWY3DPEHPK3PXP",
    "mfa_enabled": False,
    "totp_last_step": 99_999_999_999,
    "created_at": "2000-01-01T00:00:00Z",
    "updated_at": "2000-01-01T00:00:00Z",
}
# Names that are no column but that a careless schema might map onto one.
ROLE_LOOKALIKES: dict[str, Any] = {
    "role": "admin",
    "is_admin": True,
    "admin": True,
    "permissions": ["users:write"],
    "scope": "users:read users:write",
}
USER_PERMISSIONS = ROLE_PERMISSIONS["user"]
# Keys no response may carry at any depth: secrets, their hashes, and the bookkeeping behind
# lockout, revocation and the audit chain. (``lockouts`` is not among them: a ``lockout``
# audit event states how many locks the account has had, as docs/security-model.md says.)
FORBIDDEN_KEYS = frozenset(
    {
        "password",
        "current_password",
        "new_password",
        "password_hash",
        "failed_logins",
        "tokens_revoked_before",
        "token_version",
        "token_hash",
        "private_key_pem",
        "hash",
        "prev_hash",
        "totp_secret",
        "totp_last_step",
        "code_hash",
    }
)
TOKEN_PATH = "/auth/token"


async def user_count(app: FastAPI) -> int:
    async with app.state.bastion.database.transaction() as session:
        return int(await session.scalar(select(func.count()).select_from(User)) or 0)


def scope_of(access_token: str) -> frozenset[str]:
    claims = jwt.decode(access_token, options={"verify_signature": False})
    return frozenset(str(claims["scope"]).split())


def subject_of(access_token: str) -> str:
    claims = jwt.decode(access_token, options={"verify_signature": False})
    return str(claims["sub"])


# -- writing: mass assignment --------------------------------------------------------------


def test_the_smuggled_fields_are_every_column_a_registration_does_not_name() -> None:
    columns = {column.name for column in User.__table__.columns}
    named = set(RegisterRequest.model_fields)
    assert set(SERVER_OWNED_USER_FIELDS) == columns - named


async def test_registration_sets_no_property_the_server_owns(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    smuggled = {**SERVER_OWNED_USER_FIELDS, **ROLE_LOOKALIKES}
    attempts = [{name: value} for name, value in smuggled.items()] + [smuggled]
    for extra in attempts:
        response = await client.post("/auth/register", json={**account_form("mallory"), **extra})
        assert response.status_code == 422, (extra, response.status_code)
        assert ATTACKER_HASH not in response.text
    assert await user_count(app) == 0

    # The name was not taken by any refused attempt; the account gets the server's defaults.
    created = await register(client, "mallory")
    assert created["id"] != SERVER_OWNED_USER_FIELDS["id"]
    assert created["roles"] == ["user"]
    assert not created["created_at"].startswith("2000")
    tokens = await login(client, "mallory")
    assert scope_of(tokens["access_token"]) == USER_PERMISSIONS
    assert (await password_grant(client, "mallory", ATTACKER_PASSWORD)).status_code == 400


async def test_a_password_change_sets_nothing_but_the_password(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    alice = await register(client, "alice")
    headers = bearer((await login(client, "alice"))["access_token"])
    change = {"current_password": PASSWORD, "new_password": NEW_PASSWORD}
    assert set(change) == set(PasswordChangeRequest.model_fields)
    extras = [
        {"username": "root"},
        {"email": "mallory@example.com"},
        {"user_id": str(uuid.uuid4())},
        {"password_hash": ATTACKER_HASH},
        *({name: value} for name, value in ROLE_LOOKALIKES.items()),
        {"roles": ["admin"]},
        {"disabled": False, "failed_logins": 0},
    ]
    for extra in extras:
        response = await client.post("/auth/password", json={**change, **extra}, headers=headers)
        assert response.status_code == 422, (extra, response.status_code)
    # Nothing of a refused body was applied, the new password included.
    assert (await password_grant(client, "alice", NEW_PASSWORD)).status_code == 400
    assert (await password_grant(client, "alice", ATTACKER_PASSWORD)).status_code == 400
    tokens = await login(client, "alice")
    me = await client.get("/auth/me", headers=bearer(tokens["access_token"]))
    assert me.json() == alice
    assert scope_of(tokens["access_token"]) == USER_PERMISSIONS
    assert await user_count(app) == 1


async def test_the_token_form_takes_no_identity_or_role_from_the_client(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """RFC 6749 §3.2: parameters the endpoint does not know are ignored, never applied."""
    root_id, _ = await make_admin(app, client)
    alice = await register(client, "alice")
    response = await password_grant(
        client, "alice", PASSWORD, sub=root_id, user_id=root_id, roles="admin", role="admin"
    )
    if response.status_code == 400:  # refusing the extra parameters is as safe
        assert response.json()["error"] == "invalid_request"
        return
    assert response.status_code == 200, response.text
    access_token = response.json()["access_token"]
    assert subject_of(access_token) == alice["id"]
    assert scope_of(access_token) == USER_PERMISSIONS
    assert (await client.get("/admin/users", headers=bearer(access_token))).status_code == 403


# -- reading: excessive data exposure ------------------------------------------------------


class Recorder:
    """Every response the client receives, read to the end, in order."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.responses: list[httpx.Response] = []
        client.event_hooks = {"request": [], "response": [self.keep]}

    async def keep(self, response: httpx.Response) -> None:
        await response.aread()
        self.responses.append(response)


async def a_session_of_every_caller(app: FastAPI, client: httpx.AsyncClient) -> None:
    """Accounts, tokens, notes, shares, refusals, a lockout and the admin's reading of it."""
    _, root = await make_admin(app, client)
    auditor = await register(client, "audrey")
    await set_roles(app, auditor["id"], ["auditor"])
    audrey = bearer((await login(client, "audrey"))["access_token"])
    alice = await register(client, "alice")
    await register(client, "bob")
    first = await login(client, "alice")
    alice_headers = bearer(first["access_token"])
    bob_headers = bearer((await login(client, "bob"))["access_token"])

    await client.get("/auth/me", headers=alice_headers)
    created = await client.post(
        "/notes", json={"title": "t", "body": "<p>b</p>"}, headers=alice_headers
    )
    note = f"/notes/{created.json()['id']}"
    await client.patch(note, json={"title": "changed"}, headers=alice_headers)
    await client.post(f"{note}/shares", json={"username": "bob"}, headers=alice_headers)
    await client.get(note, headers=bob_headers)
    await client.get("/notes", headers=bob_headers)
    await client.get("/notes", params={"all": "true"}, headers=root)
    await client.get(note, headers=audrey)  # 403
    await client.get("/admin/users", headers=alice_headers)  # 403
    await client.get(f"/notes/{uuid.uuid4()}", headers=alice_headers)  # 404
    await client.get("/auth/me", headers=bearer("not.a.token"))  # 401
    await refresh(client, first["refresh_token"])
    await refresh(client, first["refresh_token"])  # reuse: the session is revoked
    second = await login(client, "alice")
    await client.post(
        "/auth/password",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=bearer(second["access_token"]),
    )
    for _ in range(6):  # past the lockout threshold: failures, a lockout, a locked refusal
        await password_grant(client, "alice", "a wrong but long enough guess")
    await client.get("/.well-known/jwks.json")
    await client.get("/admin/users", headers=root)
    await client.get("/admin/audit", params={"limit": "100"}, headers=root)
    await client.get("/admin/audit", params={"limit": "100"}, headers=audrey)
    await client.patch(f"/admin/users/{alice['id']}", json={"disabled": True}, headers=root)
    await client.post(f"/admin/users/{alice['id']}/unlock", headers=root)
    await client.get("/admin/users", headers=root)
    await client.post("/auth/revoke", data={"token": second["refresh_token"]})
    await client.post("/auth/logout", headers=bob_headers)


async def stored_secrets(app: FastAPI) -> dict[str, str]:
    """What the database holds that no client may ever read back, by where it is."""
    found: dict[str, str] = {
        "a password": PASSWORD,
        "a new password": NEW_PASSWORD,
        "a wrong guess": "a wrong but long enough guess",
    }
    async with app.state.bastion.database.transaction() as session:
        for user in await session.scalars(select(User)):
            found[f"{user.username}'s password hash"] = user.password_hash
        for number, token_hash in enumerate(await session.scalars(select(RefreshToken.token_hash))):
            found[f"refresh-token hash {number}"] = token_hash
        for key in await session.scalars(select(SigningKeyRecord)):
            for number, line in enumerate(key.private_key_pem.splitlines()):
                if not line.startswith("-----"):
                    found[f"private key {key.kid} line {number}"] = line
        for secret in await session.scalars(select(ServiceSecret)):
            found[f"service secret {secret.name}"] = secret.value
        for event in await session.scalars(select(AuditEvent)):
            found[f"audit event {event.seq}'s hash"] = event.hash
    return found


def keys_of(value: Any) -> Iterator[str]:
    """Every key of every object, at any depth of a JSON document."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from keys_of(item)
    elif isinstance(value, list):
        for item in value:
            yield from keys_of(item)


def issued_tokens(responses: list[httpx.Response]) -> dict[str, int]:
    """Every access and refresh token issued, with the index of the answer that issued it."""
    issued: dict[str, int] = {}
    for index, response in enumerate(responses):
        if response.request.url.path == TOKEN_PATH and response.status_code == 200:
            body = response.json()
            issued[body["access_token"]] = index
            issued[body["refresh_token"]] = index
    return issued


async def test_no_response_carries_a_secret_or_bookkeeping(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    recorder = Recorder(client)
    await a_session_of_every_caller(app, client)
    responses = recorder.responses
    assert {response.status_code for response in responses} >= {200, 201, 204, 400, 401, 403, 404}
    secrets = await stored_secrets(app)
    tokens = issued_tokens(responses)
    assert len(tokens) >= 10

    leaks: list[str] = []
    for index, response in enumerate(responses):
        where = f"{response.request.method} {response.request.url.path} ({response.status_code})"
        exposed = response.text + "\n" + "\n".join(
            f"{name}: {value}" for name, value in response.headers.multi_items()
        )
        leaks += [f"{where}: {what}" for what, value in secrets.items() if value in exposed]
        leaks += [
            f"{where}: a token issued by answer {issuer}"
            for token, issuer in tokens.items()
            if issuer != index and token in exposed
        ]
        if response.headers.get("content-type", "").endswith("json") and response.content:
            keys = set(keys_of(response.json())) & FORBIDDEN_KEYS
            leaks += [f"{where}: the key {key!r}" for key in sorted(keys)]
    assert leaks == []
