"""Mass assignment: a body may set only the fields its schema names.

Fields the server owns (``id``, ``owner_id``, ``shared_with``, the timestamps) in a create,
update or share body are a 422, and nothing is stored: no note created under someone else's
name, no owner changed, no share slipped in.
"""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import FastAPI

from tests.notes import account, create_note, share_count, stored_notes

NOTE_ID = "7d8a7c8e-8a80-4c8a-9a0e-2b6f2f5f1a11"


def smuggled(victim_id: str) -> dict[str, Any]:
    return {
        "id": NOTE_ID,
        "owner_id": victim_id,
        "shared_with": ["mallory"],
        "created_at": "2000-01-01T00:00:00Z",
        "updated_at": "2000-01-01T00:00:00Z",
    }


# An unknown field is refused at the body, without its name (the client chose it).
UNKNOWN_FIELDS = {"loc": ["body"], "msg": "Unknown fields are not allowed."}


def refused_fields(response: httpx.Response) -> list[Any]:
    assert response.status_code == 422, response.text
    return list(response.json()["errors"])


async def test_create_refuses_server_fields(app: FastAPI, client: httpx.AsyncClient) -> None:
    alice = await account(client, "alice")
    mallory = await account(client, "mallory")
    for field, value in smuggled(alice.id).items():
        response = await client.post(
            "/notes", json={"title": "t", "body": "b", field: value}, headers=mallory.headers
        )
        assert refused_fields(response) == [UNKNOWN_FIELDS]
    everything = await client.post(
        "/notes", json={"title": "t", "body": "b", **smuggled(alice.id)}, headers=mallory.headers
    )
    assert refused_fields(everything) == [UNKNOWN_FIELDS]
    assert await stored_notes(app) == []
    assert await share_count(app) == 0


async def test_update_refuses_server_fields(app: FastAPI, client: httpx.AsyncClient) -> None:
    mallory = await account(client, "mallory")
    alice = await account(client, "alice")
    note = await create_note(client, mallory, "mine")
    for field, value in smuggled(alice.id).items():
        for body in ({field: value}, {"title": "changed", field: value}):
            response = await client.patch(
                f"/notes/{note['id']}", json=body, headers=mallory.headers
            )
            assert UNKNOWN_FIELDS in refused_fields(response)
    (stored,) = await stored_notes(app)
    assert str(stored.id) == note["id"]
    assert str(stored.owner_id) == mallory.id
    assert stored.title == "mine"  # the valid part of a refused body was not applied either
    read = await client.get(f"/notes/{note['id']}", headers=mallory.headers)
    assert read.json() == note
    assert await share_count(app) == 0


async def test_share_refuses_anything_but_a_username(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    alice = await account(client, "alice")
    bob = await account(client, "bob")
    note = await create_note(client, alice)
    for extra in [{"user_id": bob.id}, {"note_id": note["id"]}, {"permission": "write"}]:
        response = await client.post(
            f"/notes/{note['id']}/shares", json={"username": "bob", **extra}, headers=alice.headers
        )
        assert refused_fields(response) == [UNKNOWN_FIELDS]
    assert await share_count(app) == 0


async def test_bodies_must_be_json_objects(app: FastAPI, client: httpx.AsyncClient) -> None:
    alice = await account(client, "alice")
    note = await create_note(client, alice)
    for body in [[], ["title", "body"], "title", 1, None]:
        for method, url in [
            ("POST", "/notes"),
            ("PATCH", f"/notes/{note['id']}"),
            ("POST", f"/notes/{note['id']}/shares"),
        ]:
            response = await client.request(
                method,
                url,
                content=httpx.Request("POST", "/", json=body).content,
                headers={**alice.headers, "content-type": "application/json"},
            )
            assert response.status_code == 422, (method, url, body)
    assert len(await stored_notes(app)) == 1
    assert await share_count(app) == 0
