"""/admin/users: listing, roles, disabling, unlocking; every change effective at once.

On SQLite and PostgreSQL. The login rate limit is off: these tests log in more often than
a client IP may per minute, and the limiter has tests of its own.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from fastapi import FastAPI

from bastion.app import create_app
from bastion.audit.events import AuditEventType
from bastion.config import Settings
from bastion.storage.migrate import upgrade_to_head
from tests.admin import PROBLEM, events, make_admin, patch_user, set_roles
from tests.conftest import FAST_HASHING, make_settings
from tests.identity.helpers import (
    PASSWORD,
    bearer,
    login,
    me,
    password_grant,
    refresh,
    register,
)
from tests.servers.redis import RedisServer

WRONG_PASSWORD = "wrong but long enough password"
INVALID_GRANT = {
    "error": "invalid_grant",
    "error_description": "The credentials or the grant are not valid.",
}


@pytest.fixture
def settings(tmp_path: Path, database_url: str | None) -> Settings:
    return make_settings(
        tmp_path / "data", database_url=database_url, rate_limits_enabled=False, **FAST_HASHING
    )


def scope_of(access_token: str) -> set[str]:
    claims = jwt.decode(access_token, options={"verify_signature": False})
    return set(str(claims["scope"]).split())


def admin_routes(user_id: str) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        ("GET", "/admin/users", {}),
        ("PATCH", f"/admin/users/{user_id}", {"json": {"disabled": True}}),
        ("POST", f"/admin/users/{user_id}/unlock", {}),
        ("GET", "/admin/audit", {}),
    ]


# -- who may call -------------------------------------------------------------------------


async def test_a_plain_user_is_refused_everywhere_and_each_refusal_is_audited(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    alice = (await register(client))["id"]
    headers = bearer((await login(client))["access_token"])
    routes = admin_routes(alice)
    for method, path, extra in routes:
        response = await client.request(method, path, headers=headers, **extra)
        assert response.status_code == 403, (method, path, response.text)
        assert response.headers["content-type"] == PROBLEM
        assert response.json()["status"] == 403

    denied = await events(app, AuditEventType.ACCESS_DENIED)
    assert len(denied) == len(routes)
    assert {event.actor_id for event in denied} == {alice}
    assert {event.outcome for event in denied} == {"denied"}
    assert {(event.details["method"], event.details["route"]) for event in denied} == {
        ("GET", "/admin/users"),
        ("PATCH", "/admin/users/{user_id}"),
        ("POST", "/admin/users/{user_id}/unlock"),
        ("GET", "/admin/audit"),
    }
    # Nothing was changed by the refused PATCH.
    assert (await me(client, (await login(client))["access_token"])).status_code == 200


async def test_without_a_token_every_admin_route_is_401(client: httpx.AsyncClient) -> None:
    for method, path, extra in admin_routes(str(uuid.uuid4())):
        response = await client.request(method, path, **extra)
        assert response.status_code == 401, (method, path)
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert response.headers["content-type"] == PROBLEM


async def test_an_auditor_reads_the_audit_log_but_not_the_users(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    auditor = (await register(client, "audrey"))["id"]
    await set_roles(app, auditor, ["auditor"])
    headers = bearer((await login(client, "audrey"))["access_token"])
    assert (await client.get("/admin/audit", headers=headers)).status_code == 200
    assert (await client.get("/admin/users", headers=headers)).status_code == 403


# -- listing ------------------------------------------------------------------------------


async def test_the_listing_pages_through_every_user_exactly_once(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    root, headers = await make_admin(app, client)
    registered = [root] + [(await register(client, f"user{n}"))["id"] for n in range(6)]

    seen: list[dict[str, Any]] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, str | int] = {"limit": 2}
        if cursor is not None:
            params["cursor"] = cursor
        response = await client.get("/admin/users", headers=headers, params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["items"]) <= 2
        seen.extend(page["items"])
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 4
    assert [item["id"] for item in seen] == registered  # oldest first, each once
    first = seen[0]
    assert set(first) == {
        "id", "username", "email", "age", "roles", "created_at", "disabled", "locked_until",
        "email_verified", "mfa_enabled",
    }
    assert first["roles"] == ["admin", "user"]
    assert first["disabled"] is False
    assert first["locked_until"] is None

    everyone = (await client.get("/admin/users", headers=headers)).json()
    assert len(everyone["items"]) == len(registered)
    assert everyone["next_cursor"] is None


async def test_listing_bounds_and_forged_cursors_are_refused(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    _root, headers = await make_admin(app, client)
    for limit in (0, 101, -1):
        response = await client.get("/admin/users", headers=headers, params={"limit": limit})
        assert response.status_code == 422, limit
        assert response.headers["content-type"] == PROBLEM
    await register(client, "bob")
    cursor = (await client.get("/admin/users", headers=headers, params={"limit": 1})).json()[
        "next_cursor"
    ]
    assert cursor
    payload, tag = cursor.split(".")
    audit_cursor = (await client.get("/admin/audit", headers=headers, params={"limit": 1})).json()[
        "next_cursor"
    ]
    for forged in (
        "nonsense",
        f"{payload}.{'A' * len(tag)}",
        f"{payload[:-2]}.{tag}",
        audit_cursor,  # signed by the server, but for another listing
    ):
        response = await client.get("/admin/users", headers=headers, params={"cursor": forged})
        assert response.status_code == 400, forged
        assert response.headers["content-type"] == PROBLEM


# -- changing roles -----------------------------------------------------------------------


async def test_role_changes_are_validated_and_nothing_else_can_be_assigned(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    _root, headers = await make_admin(app, client)
    bob = (await register(client, "bob"))["id"]
    refused: list[Any] = [
        {"roles": ["superuser"]},
        {"roles": ["user", "root"]},
        {"roles": "admin"},
        {"roles": [1]},
        {"roles": None},
        {"disabled": "yes"},
        {"disabled": None},
        {},
        [],
        {"password_hash": "$argon2id$v=19$m=8,t=1,p=1$x$y"},
        {"email": "mallory@example.com"},
        {"username": "mallory"},
        {"id": str(uuid.uuid4())},
        {"tokens_revoked_before": 0},
        {"roles": ["user"], "failed_logins": 0},
    ]
    for body in refused:
        response = await patch_user(client, headers, bob, body)
        assert response.status_code == 422, (body, response.text)
        assert response.headers["content-type"] == PROBLEM
        assert "$argon2id$" not in response.text

    users = (await client.get("/admin/users", headers=headers)).json()["items"]
    assert [user["roles"] for user in users if user["id"] == bob] == [["user"]]
    assert await events(app, AuditEventType.ROLE_CHANGE) == []


async def test_unknown_and_malformed_user_ids_are_404(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    _root, headers = await make_admin(app, client)
    for user_id in (str(uuid.uuid4()), "not-a-uuid", "1"):
        response = await patch_user(client, headers, user_id, {"roles": ["user"]})
        assert response.status_code == 404, user_id
        assert response.headers["content-type"] == PROBLEM
        unlock = await client.post(f"/admin/users/{user_id}/unlock", headers=headers)
        assert unlock.status_code == 404, user_id


async def test_granting_a_role_refuses_older_tokens_at_once(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    root, headers = await make_admin(app, client)
    bob = (await register(client, "bob"))["id"]
    old = await login(client, "bob")
    assert "audit:read" not in scope_of(old["access_token"])

    response = await patch_user(client, headers, bob, {"roles": ["user", "auditor", "user"]})
    assert response.status_code == 200, response.text
    assert response.json()["roles"] == ["auditor", "user"]  # de-duplicated, sorted
    assert "password_hash" not in response.text

    assert (await me(client, old["access_token"])).status_code == 401
    refreshed = await refresh(client, old["refresh_token"])
    assert refreshed.status_code == 200, refreshed.text
    # A refresh never widens what the login granted (RFC 6749 §6): it works, within the
    # new roles. A new login gets the new role's permissions.
    assert scope_of(refreshed.json()["access_token"]) <= {"notes:read", "notes:write", "audit:read"}
    assert (await me(client, refreshed.json()["access_token"])).status_code == 200
    fresh = await login(client, "bob")
    assert "audit:read" in scope_of(fresh["access_token"])
    audit = await client.get("/admin/audit", headers=bearer(fresh["access_token"]))
    assert audit.status_code == 200, audit.text

    [change] = await events(app, AuditEventType.ROLE_CHANGE)
    assert change.actor_id == root
    assert change.subject_id == bob
    assert change.outcome == "success"
    assert change.details == {"before": "user", "after": "auditor user"}


async def test_removing_a_role_takes_its_permissions_away_at_once(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    _root, headers = await make_admin(app, client)
    bob = (await register(client, "bob"))["id"]
    await set_roles(app, bob, ["auditor", "user"])
    old = await login(client, "bob")
    old_headers = bearer(old["access_token"])
    assert (await client.get("/admin/audit", headers=old_headers)).status_code == 200

    response = await patch_user(client, headers, bob, {"roles": ["user"]})
    assert response.status_code == 200, response.text

    assert (await client.get("/admin/audit", headers=old_headers)).status_code == 401
    refreshed = await refresh(client, old["refresh_token"])
    assert refreshed.status_code == 200, refreshed.text
    new_token = refreshed.json()["access_token"]
    assert scope_of(new_token) == {"notes:read", "notes:write"}
    assert (await client.get("/admin/audit", headers=bearer(new_token))).status_code == 403


async def test_the_same_roles_again_change_nothing(app: FastAPI, client: httpx.AsyncClient) -> None:
    _root, headers = await make_admin(app, client)
    bob = (await register(client, "bob"))["id"]
    token = (await login(client, "bob"))["access_token"]
    response = await patch_user(client, headers, bob, {"roles": ["user"], "disabled": False})
    assert response.status_code == 200
    assert (await me(client, token)).status_code == 200
    assert await events(app, AuditEventType.ROLE_CHANGE) == []
    assert await events(app, AuditEventType.DISABLE) == []


async def test_the_last_admin_cannot_demote_or_disable_themselves(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    root, headers = await make_admin(app, client)
    bodies: list[dict[str, Any]] = [{"roles": ["user"]}, {"roles": []}, {"disabled": True}]
    for body in bodies:
        response = await patch_user(client, headers, root, body)
        assert response.status_code == 409, (body, response.text)
        assert response.headers["content-type"] == PROBLEM
    # Still an admin, with a working token.
    assert (await client.get("/admin/users", headers=headers)).status_code == 200
    refusals = [
        event
        for event in await events(app)
        if event.type in {"role_change", "disable"}
    ]
    assert [(event.type, event.outcome, event.details["reason"]) for event in refusals] == [
        ("disable", "denied", "self_disable"),
        ("role_change", "denied", "last_admin"),
        ("role_change", "denied", "last_admin"),
    ]
    assert {event.actor_id for event in refusals} == {root}


async def test_with_two_admins_one_may_demote_the_other_but_not_the_last(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    root, headers = await make_admin(app, client)
    carol = (await register(client, "carol"))["id"]
    promoted = await patch_user(client, headers, carol, {"roles": ["admin", "user"]})
    assert promoted.status_code == 200, promoted.text
    carol_headers = bearer((await login(client, "carol"))["access_token"])

    # An admin never disables themselves, even when another admin would remain.
    assert (await patch_user(client, carol_headers, carol, {"disabled": True})).status_code == 409
    # A disabled admin does not count as the remaining one.
    assert (await patch_user(client, carol_headers, root, {"disabled": True})).status_code == 200
    assert (await patch_user(client, carol_headers, carol, {"roles": ["user"]})).status_code == 409
    assert (await patch_user(client, carol_headers, root, {"disabled": False})).status_code == 200
    assert (await client.get("/admin/users", headers=headers)).status_code == 401  # ended
    headers = bearer((await login(client, "root"))["access_token"])
    assert (await client.get("/admin/users", headers=headers)).status_code == 200

    demoted = await patch_user(client, carol_headers, root, {"roles": ["user"]})
    assert demoted.status_code == 200, demoted.text
    assert demoted.json()["roles"] == ["user"]
    # root's token lost its admin permissions at once; carol is the last admin now.
    assert (await client.get("/admin/users", headers=headers)).status_code == 401
    assert (await patch_user(client, carol_headers, carol, {"roles": ["user"]})).status_code == 409


# -- disabling ----------------------------------------------------------------------------


async def test_disabling_ends_every_session_and_login_until_enabled_again(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    root, headers = await make_admin(app, client)
    bob = (await register(client, "bob"))["id"]
    sessions = [await login(client, "bob"), await login(client, "bob")]
    wrong = await password_grant(client, "bob", WRONG_PASSWORD)

    response = await patch_user(client, headers, bob, {"disabled": True})
    assert response.status_code == 200, response.text
    assert response.json()["disabled"] is True

    for tokens in sessions:
        assert (await me(client, tokens["access_token"])).status_code == 401
        refused = await refresh(client, tokens["refresh_token"])
        assert refused.status_code == 400
        assert refused.json() == INVALID_GRANT
    disabled_login = await password_grant(client, "bob")
    assert disabled_login.status_code == wrong.status_code == 400
    assert disabled_login.json() == wrong.json() == INVALID_GRANT

    enabled = await patch_user(client, headers, bob, {"disabled": False})
    assert enabled.status_code == 200, enabled.text
    assert enabled.json()["disabled"] is False
    fresh = await login(client, "bob")
    assert (await me(client, fresh["access_token"])).status_code == 200
    for tokens in sessions:  # what was ended stays ended
        assert (await me(client, tokens["access_token"])).status_code == 401

    toggles = await events(app, AuditEventType.DISABLE)
    assert [(event.details["disabled"], event.actor_id, event.subject_id) for event in toggles] == [
        (False, root, bob),
        (True, root, bob),
    ]


# -- unlocking ----------------------------------------------------------------------------


async def test_an_admin_unlocks_a_locked_account_at_once(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    root, headers = await make_admin(app, client)
    bob = (await register(client, "bob"))["id"]
    for _ in range(5):
        assert (await password_grant(client, "bob", WRONG_PASSWORD)).status_code == 400
    assert (await password_grant(client, "bob", PASSWORD)).json() == INVALID_GRANT  # locked
    users = (await client.get("/admin/users", headers=headers)).json()["items"]
    [locked] = [user for user in users if user["id"] == bob]
    assert locked["locked_until"] is not None

    response = await client.post(f"/admin/users/{bob}/unlock", headers=headers)
    assert response.status_code == 204
    assert response.content == b""

    assert (await password_grant(client, "bob", PASSWORD)).status_code == 200
    users = (await client.get("/admin/users", headers=headers)).json()["items"]
    assert [user["locked_until"] for user in users if user["id"] == bob] == [None]
    [unlock] = await events(app, AuditEventType.UNLOCK)
    assert (unlock.actor_id, unlock.subject_id, unlock.outcome) == (root, bob, "success")
    assert unlock.details == {"was_locked": True}


# -- revocations outlive the revocation store ---------------------------------------------


async def _start(settings: Settings) -> tuple[FastAPI, httpx.AsyncClient]:
    app = create_app(settings)
    await upgrade_to_head(app.state.bastion.database.engine)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")
    return app, client


async def test_a_role_change_outlives_a_restart(tmp_path: Path, database_url: str | None) -> None:
    settings = make_settings(
        tmp_path / "data", database_url=database_url, rate_limits_enabled=False, **FAST_HASHING
    )
    app, client = await _start(settings)
    async with app.router.lifespan_context(app), client:
        _root, headers = await make_admin(app, client)
        bob = (await register(client, "bob"))["id"]
        old = (await login(client, "bob"))["access_token"]
        assert (await patch_user(client, headers, bob, {"roles": ["auditor"]})).status_code == 200
        assert (await me(client, old)).status_code == 401

    app, client = await _start(settings)  # a new process: its revocation store starts empty
    async with app.router.lifespan_context(app), client:
        assert (await me(client, old)).status_code == 401
        fresh = (await login(client, "bob"))["access_token"]
        assert (await me(client, fresh)).status_code == 200


async def test_a_role_change_outlives_a_wiped_redis(
    tmp_path: Path, own_redis: RedisServer
) -> None:
    settings = make_settings(
        tmp_path / "data", redis_url=own_redis.url, rate_limits_enabled=False, **FAST_HASHING
    )
    app, client = await _start(settings)
    async with app.router.lifespan_context(app), client:
        _root, headers = await make_admin(app, client)
        bob = (await register(client, "bob"))["id"]
        old = (await login(client, "bob"))["access_token"]
        # A role change ends no session: only the user's cut-off refuses the old token.
        assert (await patch_user(client, headers, bob, {"roles": ["auditor"]})).status_code == 200
        assert (await me(client, old)).status_code == 401

        own_redis.stop()
        own_redis.start()  # same port, empty

        assert (await me(client, old)).status_code == 401
        fresh = (await login(client, "bob"))["access_token"]
        assert (await me(client, fresh)).status_code == 200
