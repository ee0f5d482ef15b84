"""Insecure direct object references: another user's note id is worth nothing.

For every route that takes a note id, a note that exists but is not the caller's answers
exactly like a note that does not exist and like an id that is not even a UUID: same
status, same body (but the request id), same headers. A sharee may read, nothing more;
once the owner deletes the note, the sharee gets the same 404 as everyone else.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from bastion.app import create_app
from bastion.route_inventory import route_policies
from tests.conftest import make_settings
from tests.notes import (
    Account,
    account,
    admin_account,
    comparable,
    create_note,
    list_all_pages,
    share,
    share_count,
    stored_notes,
)

# Every route with a note id, and a body that would be valid if the note were the caller's.
NOTE_ROUTES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/notes/{note_id}", None),
    ("PATCH", "/notes/{note_id}", {"title": "taken over", "body": "<p>mine</p>"}),
    ("DELETE", "/notes/{note_id}", None),
    ("POST", "/notes/{note_id}/shares", {"username": "mallory"}),
]
WRITE_ROUTES = [route for route in NOTE_ROUTES if route[0] != "GET"]
MALFORMED_IDS = [
    "not-a-uuid", "1", "0", "%20", "{}", "null", "00000000-0000-0000-0000-00000000000g"
]


def test_every_note_id_route_is_covered(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path / "data"))  # routes only: never started
    routes = {
        (methods, path): policy
        for methods, path, policy in route_policies(app)
        if "{note_id}" in path
    }
    assert set(routes) == {(method, path) for method, path, _ in NOTE_ROUTES}
    assert routes == {
        ("GET", "/notes/{note_id}"): "require: notes:read",
        ("PATCH", "/notes/{note_id}"): "require: notes:write",
        ("DELETE", "/notes/{note_id}"): "require: notes:write",
        ("POST", "/notes/{note_id}/shares"): "require: notes:write",
    }


async def call(
    client: httpx.AsyncClient,
    caller: Account,
    route: tuple[str, str, dict[str, Any] | None],
    note_id: str,
    body: dict[str, Any] | None = None,
) -> httpx.Response:
    method, path, default_body = route
    return await client.request(
        method,
        path.format(note_id=note_id),
        json=body if body is not None else default_body,
        headers=caller.headers,
    )


async def test_another_users_note_is_indistinguishable_from_none(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    alice = await account(client, "alice")
    mallory = await account(client, "mallory")
    note = await create_note(client, alice, "alice's secret", "<p>secret</p>")

    for route in NOTE_ROUTES:
        reference = comparable(await call(client, mallory, route, str(uuid.uuid4())))
        assert reference[0] == 404, route
        assert reference[1]["detail"] == "The note does not exist."
        foreign = comparable(await call(client, mallory, route, note["id"]))
        assert foreign == reference, route
        for malformed in MALFORMED_IDS:
            assert comparable(await call(client, mallory, route, malformed)) == reference, (
                route,
                malformed,
            )
        # An invalid body does not tell them apart either: the note is checked first.
        if route[2] is not None:
            bad = {"owner_id": mallory.id}
            missing = comparable(await call(client, mallory, route, str(uuid.uuid4()), bad))
            assert missing == reference
            assert comparable(await call(client, mallory, route, note["id"], bad)) == reference

    # Nothing happened to the note.
    read = await client.get(f"/notes/{note['id']}", headers=alice.headers)
    assert read.json() == note
    assert await share_count(app) == 0
    assert await list_all_pages(client, mallory) == []
    assert await list_all_pages(client, mallory, q="secret") == []


async def test_a_sharee_may_read_but_not_write(app: FastAPI, client: httpx.AsyncClient) -> None:
    alice = await account(client, "alice")
    bob = await account(client, "bob")
    await account(client, "mallory")
    note = await create_note(client, alice, "shared", "<p>read only</p>")
    await share(client, alice, note["id"], "bob")

    read = await client.get(f"/notes/{note['id']}", headers=bob.headers)
    assert read.status_code == 200
    assert read.json()["title"] == "shared"
    for route in WRITE_ROUTES:
        reference = comparable(await call(client, bob, route, str(uuid.uuid4())))
        assert comparable(await call(client, bob, route, note["id"])) == reference, route
        assert reference[0] == 404
    # Re-sharing is the owner's decision: bob cannot pass the note on.
    assert await share_count(app) == 1
    owner_view = await client.get(f"/notes/{note['id']}", headers=alice.headers)
    assert owner_view.json() == {**note, "shared_with": ["bob"]}


async def test_after_deletion_the_sharee_gets_the_same_404(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    alice = await account(client, "alice")
    bob = await account(client, "bob")
    note = await create_note(client, alice)
    await share(client, alice, note["id"], "bob")
    assert (await client.delete(f"/notes/{note['id']}", headers=alice.headers)).status_code == 204

    for route in NOTE_ROUTES:
        reference = comparable(await call(client, bob, route, str(uuid.uuid4())))
        assert comparable(await call(client, bob, route, note["id"])) == reference, route
    assert await list_all_pages(client, bob) == []
    assert await share_count(app) == 0


async def test_read_all_reads_but_never_writes_others_notes(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    alice = await account(client, "alice")
    admin = await admin_account(app, client, "root")
    note = await create_note(client, alice)

    read = await client.get(f"/notes/{note['id']}", headers=admin.headers)
    assert read.status_code == 200
    for route in WRITE_ROUTES:
        reference = comparable(await call(client, admin, route, str(uuid.uuid4())))
        assert comparable(await call(client, admin, route, note["id"])) == reference, route
    assert [stored.title for stored in await stored_notes(app)] == [note["title"]]
