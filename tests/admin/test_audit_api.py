"""GET /admin/audit: newest first, filtered, paginated, and only the event's own fields.

On SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from bastion.audit.events import AuditEventType
from bastion.config import Settings
from tests.admin import PROBLEM, events, make_admin, patch_user
from tests.conftest import FAST_HASHING, make_settings
from tests.identity.helpers import login, password_grant, register

WRONG_PASSWORD = "wrong but long enough password"
EVENT_FIELDS = {
    "seq", "occurred_at", "type", "outcome", "actor_id", "subject_id", "client_ip",
    "request_id", "details",
}


@pytest.fixture
def settings(tmp_path: Path, database_url: str | None) -> Settings:
    return make_settings(
        tmp_path / "data", database_url=database_url, rate_limits_enabled=False, **FAST_HASHING
    )


async def audit(
    client: httpx.AsyncClient, headers: dict[str, str], **params: str | int
) -> httpx.Response:
    return await client.get("/admin/audit", headers=headers, params=params)


async def items(
    client: httpx.AsyncClient, headers: dict[str, str], **params: str | int
) -> list[dict[str, Any]]:
    response = await audit(client, headers, **params)
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["items"]
    return found


async def test_events_come_newest_first_with_their_fields_and_no_hashes(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    root, headers = await make_admin(app, client)
    listed = await items(client, headers, limit=100)
    stored = await events(app)
    assert [item["seq"] for item in listed] == [event.seq for event in stored]
    seqs = [item["seq"] for item in listed]
    assert seqs == sorted(seqs, reverse=True)
    assert all(set(item) == EVENT_FIELDS for item in listed)
    newest = listed[0]
    assert newest["type"] == "login_success"
    assert newest["actor_id"] == root
    assert datetime.fromisoformat(newest["occurred_at"]).tzinfo is not None
    assert "hash" not in str(listed)


async def test_filters_by_type_user_and_time(app: FastAPI, client: httpx.AsyncClient) -> None:
    root, headers = await make_admin(app, client)
    bob = (await register(client, "bob"))["id"]
    assert (await password_grant(client, "bob", WRONG_PASSWORD)).status_code == 400
    middle = datetime.now(UTC)
    await login(client, "bob")

    failures = await items(client, headers, type="login_failure")
    assert [(item["type"], item["subject_id"]) for item in failures] == [("login_failure", bob)]

    about_bob = await items(client, headers, user_id=bob)
    assert [item["type"] for item in about_bob] == [
        "login_success", "login_failure", "registration",
    ]
    assert all(bob in (item["actor_id"], item["subject_id"]) for item in about_bob)
    assert root not in {item["subject_id"] for item in about_bob}

    recent = await items(client, headers, since=middle.isoformat())
    assert [item["type"] for item in recent] == ["login_success"]
    assert recent[0]["subject_id"] == bob
    # The same moment in another zone selects the same events.
    elsewhere = middle.astimezone(timezone(timedelta(hours=-5)))
    assert await items(client, headers, since=elsewhere.isoformat()) == recent

    combined = await items(client, headers, type="login_success", user_id=root)
    assert [item["actor_id"] for item in combined] == [root]
    assert await items(client, headers, type="unlock") == []


async def test_invalid_filters_are_422(app: FastAPI, client: httpx.AsyncClient) -> None:
    _root, headers = await make_admin(app, client)
    for params in (
        {"type": "login"},
        {"type": "LOGIN_SUCCESS"},
        {"user_id": "bob"},
        {"since": "yesterday"},
        {"since": "2026-01-01T00:00:00"},  # no time zone: ambiguous, refused
        # Not RFC 3339 date-times, which the document promises: pydantic read a number as a
        # Unix time and a bare date as its midnight.
        {"since": "0.5"},
        {"since": "1700000000"},
        {"since": "2026-01-01"},
        # Not the hyphenated UUID that "format: uuid" means; pydantic alone took them.
        {"user_id": "12345678123456781234567812345678"},
        {"user_id": "{12345678-1234-5678-1234-567812345678}"},
        {"user_id": "urn:uuid:12345678-1234-5678-1234-567812345678"},
        {"limit": 0},
        {"limit": 101},
    ):
        response = await audit(client, headers, **params)
        assert response.status_code == 422, params
        assert response.headers["content-type"] == PROBLEM
        assert response.json()["errors"]


async def test_pagination_visits_every_event_once_and_refuses_forged_cursors(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    _root, headers = await make_admin(app, client)
    for name in ("bob", "carol", "dave"):
        await register(client, name)
    everything = [item["seq"] for item in await items(client, headers, limit=100)]
    assert len(everything) >= 5

    seen: list[int] = []
    cursor: str | None = None
    while True:
        params: dict[str, str | int] = {"limit": 2}
        if cursor is not None:
            params["cursor"] = cursor
        response = await audit(client, headers, **params)
        assert response.status_code == 200, response.text
        page = response.json()
        seen.extend(item["seq"] for item in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    # Events written while paging (none here) would come on no page: keyset, not offsets.
    assert seen == everything

    filtered = (await audit(client, headers, type="registration", limit=1)).json()
    assert len(filtered["items"]) == 1
    second = await items(
        client, headers, type="registration", limit=1, cursor=filtered["next_cursor"]
    )
    assert second[0]["seq"] < filtered["items"][0]["seq"]

    payload, tag = filtered["next_cursor"].split(".")
    users_cursor = (await client.get("/admin/users", headers=headers, params={"limit": 1})).json()[
        "next_cursor"
    ]
    for forged in ("x", f"{payload}.{tag[::-1]}", f"{tag}.{payload}", users_cursor):
        response = await audit(client, headers, cursor=forged)
        assert response.status_code == 400, forged
        assert response.headers["content-type"] == PROBLEM


async def test_admin_actions_are_in_the_log_with_the_admin_as_actor(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    root, headers = await make_admin(app, client)
    bob = (await register(client, "bob"))["id"]
    granted = await patch_user(client, headers, bob, {"roles": ["auditor", "user"]})
    assert granted.status_code == 200
    assert (await patch_user(client, headers, bob, {"disabled": True})).status_code == 200
    assert (await client.post(f"/admin/users/{bob}/unlock", headers=headers)).status_code == 204

    by_type = {
        kind: await items(client, headers, type=kind, user_id=bob)
        for kind in ("role_change", "disable", "unlock")
    }
    for kind, found in by_type.items():
        assert len(found) == 1, kind
        assert (found[0]["actor_id"], found[0]["subject_id"], found[0]["outcome"]) == (
            root,
            bob,
            "success",
        ), kind
        assert found[0]["request_id"]
    assert by_type["role_change"][0]["details"] == {"before": "user", "after": "auditor user"}
    assert by_type["disable"][0]["details"] == {"disabled": True}
    assert by_type["unlock"][0]["details"] == {"was_locked": False}
    assert [event.type for event in await events(app, limit=3)] == [
        AuditEventType.UNLOCK, AuditEventType.DISABLE, AuditEventType.ROLE_CHANGE,
    ]
