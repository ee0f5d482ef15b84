"""GET /auth/sessions and DELETE /auth/sessions/{id}: a user's own sessions, on SQLite and
PostgreSQL."""

from __future__ import annotations

from typing import Any

import httpx
import jwt
from fastapi import FastAPI
from sqlalchemy import select

from bastion.audit.events import AuditEventType
from bastion.storage.tables import AuditEvent
from tests.identity.helpers import bearer, login, me, password_form, refresh, register

PHONE = "Mozilla/5.0 (Linux; Android 15) phone"
LAPTOP = "Mozilla/5.0 (X11; Linux x86_64) laptop"
SESSION_FIELDS = {"id", "kind", "created_at", "last_used_at", "client_ip", "user_agent", "current"}


async def login_from(client: httpx.AsyncClient, username: str, agent: str) -> dict[str, Any]:
    client.headers["user-agent"] = agent
    try:
        return await login(client, username)
    finally:
        del client.headers["user-agent"]


def sid(tokens: dict[str, Any]) -> str:
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    session_id: str = claims["sid"]
    return session_id


async def sessions_of(client: httpx.AsyncClient, tokens: dict[str, Any]) -> list[dict[str, Any]]:
    response = await client.get("/auth/sessions", headers=bearer(tokens["access_token"]))
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def test_a_user_sees_each_live_session_with_its_device(client: httpx.AsyncClient) -> None:
    await register(client, "alice")
    phone = await login_from(client, "alice", PHONE)
    laptop = await login_from(client, "alice", LAPTOP)
    await register(client, "bob")
    await login(client, "bob")

    listed = await sessions_of(client, laptop)
    assert [item["id"] for item in listed] == [sid(laptop), sid(phone)]  # newest first
    for item in listed:
        assert set(item) == SESSION_FIELDS
        assert item["kind"] == "bearer"
        assert item["client_ip"] == "127.0.0.1"
        assert item["last_used_at"] == item["created_at"]
    assert [item["user_agent"] for item in listed] == [LAPTOP, PHONE]
    assert [item["current"] for item in listed] == [True, False]
    assert [item["current"] for item in await sessions_of(client, phone)] == [False, True]


async def test_a_refresh_is_a_use_and_an_ended_session_is_not_listed(
    client: httpx.AsyncClient,
) -> None:
    await register(client, "alice")
    first = await login(client, "alice")
    second = await login(client, "alice")
    rotated = (await refresh(client, first["refresh_token"])).json()
    [_, older] = await sessions_of(client, second)
    assert older["id"] == sid(rotated)
    assert older["last_used_at"] > older["created_at"]

    response = await client.post("/auth/logout", headers=bearer(second["access_token"]))
    assert response.status_code == 204
    assert [item["id"] for item in await sessions_of(client, rotated)] == [sid(rotated)]


async def test_ending_a_session_refuses_its_tokens_at_once(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    await register(client, "alice")
    lost_phone = await login_from(client, "alice", PHONE)
    laptop = await login_from(client, "alice", LAPTOP)
    response = await client.delete(
        f"/auth/sessions/{sid(lost_phone)}", headers=bearer(laptop["access_token"])
    )
    assert response.status_code == 204, response.text
    assert response.content == b""
    assert (await me(client, lost_phone["access_token"])).status_code == 401
    assert (await refresh(client, lost_phone["refresh_token"])).status_code == 400
    assert (await me(client, laptop["access_token"])).status_code == 200
    assert [item["id"] for item in await sessions_of(client, laptop)] == [sid(laptop)]

    async with app.state.bastion.database.transaction() as session:
        events = list(
            await session.scalars(
                select(AuditEvent).where(AuditEvent.type == AuditEventType.LOGOUT.value)
            )
        )
    [event] = events
    assert event.details == {"session_id": sid(lost_phone), "kind": "bearer", "current": False}
    assert event.actor_id == event.subject_id


async def test_the_current_session_can_be_ended_too(client: httpx.AsyncClient) -> None:
    await register(client, "alice")
    tokens = await login(client, "alice")
    response = await client.delete(
        f"/auth/sessions/{sid(tokens)}", headers=bearer(tokens["access_token"])
    )
    assert response.status_code == 204
    assert (await me(client, tokens["access_token"])).status_code == 401


async def test_another_users_session_is_a_404_like_none_at_all(client: httpx.AsyncClient) -> None:
    await register(client, "alice")
    await register(client, "mallory")
    alice = await login(client, "alice")
    mallory = await login(client, "mallory")
    answers = []
    for target in (sid(alice), "00000000-0000-0000-0000-000000000000", "not-a-uuid", "' OR 1=1"):
        response = await client.delete(
            f"/auth/sessions/{target}", headers=bearer(mallory["access_token"])
        )
        assert response.status_code == 404, (target, response.text)
        answers.append(response.json()["detail"])
    assert len(set(answers)) == 1
    assert (await me(client, alice["access_token"])).status_code == 200
    assert sid(alice) not in {item["id"] for item in await sessions_of(client, mallory)}


async def test_an_ended_session_cannot_be_ended_again(client: httpx.AsyncClient) -> None:
    await register(client, "alice")
    old = await login(client, "alice")
    current = await login(client, "alice")
    path = f"/auth/sessions/{sid(old)}"
    assert (await client.delete(path, headers=bearer(current["access_token"]))).status_code == 204
    assert (await client.delete(path, headers=bearer(current["access_token"]))).status_code == 404


async def test_sessions_need_a_token_and_page_with_a_cursor(client: httpx.AsyncClient) -> None:
    assert (await client.get("/auth/sessions")).status_code == 401
    assert (await client.delete(f"/auth/sessions/{'0' * 32}")).status_code == 401
    await register(client, "alice")
    logins = [await login(client, "alice") for _ in range(3)]
    seen: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, str | int] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        response = await client.get(
            "/auth/sessions", params=params, headers=bearer(logins[0]["access_token"])
        )
        page = response.json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [sid(tokens) for tokens in reversed(logins)]
    forged = await client.get(
        "/auth/sessions", params={"cursor": "abc.def"}, headers=bearer(logins[0]["access_token"])
    )
    assert forged.status_code == 400


async def test_a_user_agent_is_stored_as_printable_text_only(client: httpx.AsyncClient) -> None:
    await register(client, "alice")
    # A bidi override (U+202E in UTF-8), which would reverse how the rest is displayed.
    agent = b"evil\xe2\x80\xaeagent " + b"x" * 300
    response = await client.post(
        "/auth/token", data=password_form("alice"), headers=[(b"user-agent", agent)]
    )
    [item] = await sessions_of(client, response.json())
    assert item["user_agent"].startswith("evil???agent x")
    assert len(item["user_agent"]) == 200
