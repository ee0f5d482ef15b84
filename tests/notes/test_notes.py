"""/notes on SQLite and PostgreSQL: CRUD, sharing, visibility, search, pagination, cursors.

The attacks (other users' ids, mass assignment, injection) have their own modules; this one
pins the behaviour a client relies on.
"""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from sqlalchemy import event, select
from sqlalchemy.engine import Engine

from bastion.notes.listing import listing_purpose
from bastion.notes.visibility import Viewer
from bastion.security.principal import Principal
from bastion.storage.tables import AuditEvent, Note, NoteShare
from tests.identity.helpers import register
from tests.notes import (
    Account,
    account,
    admin_account,
    create_note,
    list_all_pages,
    share,
    share_count,
    stored_notes,
)

# -- create, read, update, delete ----------------------------------------------------------


async def test_note_life_cycle(app: FastAPI, client: httpx.AsyncClient) -> None:
    alice = await account(client, "alice")

    created = await client.post(
        "/notes", json={"title": "  Groceries ", "body": "<p>milk</p>"}, headers=alice.headers
    )
    assert created.status_code == 201, created.text
    note = created.json()
    assert set(note) == {
        "id", "owner_id", "title", "body", "shared_with", "created_at", "updated_at"
    }
    assert note["owner_id"] == alice.id
    assert note["title"] == "  Groceries "  # stored as sent: nothing trimmed silently
    assert note["body"] == "<p>milk</p>"
    assert note["shared_with"] == []
    assert note["created_at"] == note["updated_at"]
    assert created.headers["location"] == f"/notes/{note['id']}"

    read = await client.get(f"/notes/{note['id']}", headers=alice.headers)
    assert read.status_code == 200
    assert read.json() == note

    patched = await client.patch(
        f"/notes/{note['id']}", json={"title": "Shopping"}, headers=alice.headers
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["title"] == "Shopping"
    assert patched.json()["body"] == "<p>milk</p>"  # what was not sent did not change
    assert patched.json()["created_at"] == note["created_at"]
    assert patched.json()["updated_at"] > note["updated_at"]

    body_only = await client.patch(
        f"/notes/{note['id']}", json={"body": "<p>eggs</p>"}, headers=alice.headers
    )
    assert body_only.json()["title"] == "Shopping"
    assert body_only.json()["body"] == "<p>eggs</p>"

    unchanged = await client.patch(f"/notes/{note['id']}", json={}, headers=alice.headers)
    assert unchanged.status_code == 200
    assert unchanged.json() == body_only.json()  # an empty PATCH is not a change

    deleted = await client.delete(f"/notes/{note['id']}", headers=alice.headers)
    assert deleted.status_code == 204
    assert deleted.content == b""
    assert "content-type" not in deleted.headers
    assert (await client.get(f"/notes/{note['id']}", headers=alice.headers)).status_code == 404
    assert (await client.delete(f"/notes/{note['id']}", headers=alice.headers)).status_code == 404
    assert await stored_notes(app) == []


async def test_title_is_plain_text_of_1_to_200_characters(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    alice = await account(client, "alice")
    refused = [
        "", " ", " \t ", "a" * 201, "line\nbreak", "bell\x07", "nul\x00", "rtl\u202eoverride"
    ]
    for title in refused:
        response = await client.post(
            "/notes", json={"title": title, "body": "x"}, headers=alice.headers
        )
        assert response.status_code == 422, repr(title)
        assert response.json()["errors"][0]["loc"] == ["body", "title"]
    accepted = ["a", "a" * 200, "tab\tinside", "é" * 200, "🙂" * 200, "<b>not html</b>"]
    for title in accepted:
        note = await create_note(client, alice, title)
        assert note["title"] == title
    assert len(await stored_notes(app)) == len(accepted)


async def test_body_is_limited_before_and_sanitized_before_storing(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    alice = await account(client, "alice")
    largest = await create_note(client, alice, body="a" * 65_536)
    assert len(largest["body"]) == 65_536
    # Over the limit even though sanitizing would have made it shorter: checked first.
    for body in ["a" * 65_537, "<script>" + "a" * 65_536 + "</script>"]:
        response = await client.post(
            "/notes", json={"title": "t", "body": body}, headers=alice.headers
        )
        assert response.status_code == 422
        assert response.json()["errors"][0]["loc"] == ["body", "body"]

    dirty = (
        '<p onclick="steal()">hi<script>alert(1)</script></p>'
        '<a href="javascript:alert(1)">x</a><img src=x onerror=alert(1)>'
    )
    note = await create_note(client, alice, body=dirty)
    for needle in ["script", "onclick", "onerror", "javascript:", "alert"]:
        assert needle not in note["body"]
    assert note["body"].startswith("<p>hi</p>")
    stored = {row.id: row.body for row in await stored_notes(app)}
    assert stored[uuid.UUID(note["id"])] == note["body"]  # the database holds the clean form

    patched = await client.patch(
        f"/notes/{note['id']}", json={"body": "<b onmouseover=x()>b</b>"}, headers=alice.headers
    )
    assert patched.json()["body"] == "<b>b</b>"


async def test_update_fields_may_be_left_out_but_not_null(client: httpx.AsyncClient) -> None:
    alice = await account(client, "alice")
    note = await create_note(client, alice)
    for body in [{"title": None}, {"body": None}, {"title": " "}, {"title": "a" * 201}]:
        response = await client.patch(f"/notes/{note['id']}", json=body, headers=alice.headers)
        assert response.status_code == 422, body
    read = await client.get(f"/notes/{note['id']}", headers=alice.headers)
    assert read.json() == note


# -- sharing and visibility ----------------------------------------------------------------


async def test_sharing_gives_read_access_and_is_idempotent(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    alice = await account(client, "alice")
    bob = await account(client, "bob")
    carol = await account(client, "carol")
    note = await create_note(client, alice)

    first = await share(client, alice, note["id"], "carol")
    assert first.status_code == 200, first.text
    assert first.json()["shared_with"] == ["carol"]
    # Usernames compare case-insensitively; the list is sorted.
    second = await share(client, alice, note["id"], "BOB")
    assert second.json()["shared_with"] == ["bob", "carol"]
    again = await share(client, alice, note["id"], "bob")
    assert again.status_code == 200
    assert again.json() == second.json()
    assert await share_count(app) == 2
    assert again.json()["updated_at"] == note["updated_at"]  # sharing is not an edit

    # A sharee sees the note, but only their own name among those it is shared with.
    for sharee in (bob, carol):
        read = await client.get(f"/notes/{note['id']}", headers=sharee.headers)
        assert read.status_code == 200
        assert read.json()["shared_with"] == [sharee.username]
        listed = await list_all_pages(client, sharee)
        assert [item["id"] for item in listed] == [note["id"]]
        assert listed[0]["shared_with"] == [sharee.username]
    owner_view = await client.get(f"/notes/{note['id']}", headers=alice.headers)
    assert owner_view.json()["shared_with"] == ["bob", "carol"]


async def test_shared_with_is_sorted_the_same_on_every_backend(
    client: httpx.AsyncClient,
) -> None:
    alice = await account(client, "alice")
    note = await create_note(client, alice)
    names = ["zzz", "abc", "a_bc", "a.bc", "a-bc", "a0bc"]
    for name in names:
        await register(client, name)
        await share(client, alice, note["id"], name)
    read = await client.get(f"/notes/{note['id']}", headers=alice.headers)
    # Code point order, whatever the database's collation would say about "." and "_".
    assert read.json()["shared_with"] == ["a-bc", "a.bc", "a0bc", "a_bc", "abc", "zzz"]


async def test_a_page_costs_two_queries(app: FastAPI, client: httpx.AsyncClient) -> None:
    """One query for the page, one for the shares of all its notes: never one per note."""
    alice = await account(client, "alice")
    await account(client, "bob")
    for index in range(10):
        note = await create_note(client, alice, f"note {index}")
        await share(client, alice, note["id"], "bob")
    statements: list[str] = []

    def record(*args: Any) -> None:
        statements.append(str(args[2]))

    # Every engine: the listing reads on the database's reader, not on its writer.
    event.listen(Engine, "before_cursor_execute", record)
    try:
        response = await client.get("/notes", headers=alice.headers)
    finally:
        event.remove(Engine, "before_cursor_execute", record)
    assert len(response.json()["items"]) == 10
    assert all(item["shared_with"] == ["bob"] for item in response.json()["items"])
    selects = [statement for statement in statements if statement.lstrip().startswith("SELECT")]
    assert len(selects) == 2, selects


async def test_sharing_with_nobody_or_oneself_is_refused(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    alice = await account(client, "alice")
    note = await create_note(client, alice)
    for username in ["nobody", "alice", "ALICE"]:
        response = await share(client, alice, note["id"], username)
        assert response.status_code == 422, username
        problem = response.json()
        assert problem["errors"][0]["loc"] == ["body", "username"]
        assert username.lower() not in response.text  # the value is never echoed
    for username in ["", "ab", "no spaces", "x" * 33, "a/b"]:
        response = await share(client, alice, note["id"], username)
        assert response.status_code == 422, username
    assert await share_count(app) == 0


async def test_listing_shows_own_and_shared_notes_only(client: httpx.AsyncClient) -> None:
    alice = await account(client, "alice")
    bob = await account(client, "bob")
    alices = await create_note(client, alice, "alice's")
    shared = await create_note(client, alice, "shared with bob")
    bobs = await create_note(client, bob, "bob's")
    await share(client, alice, shared["id"], "bob")

    assert {n["id"] for n in await list_all_pages(client, alice)} == {alices["id"], shared["id"]}
    assert {n["id"] for n in await list_all_pages(client, bob)} == {bobs["id"], shared["id"]}
    # all=false is the default, spelled out.
    explicit = await list_all_pages(client, bob, all="false")
    assert {n["id"] for n in explicit} == {bobs["id"], shared["id"]}


async def test_every_note_needs_read_all(app: FastAPI, client: httpx.AsyncClient) -> None:
    alice = await account(client, "alice")
    bob = await account(client, "bob")
    admin = await admin_account(app, client, "root")
    alices = await create_note(client, alice, "alice's")
    bobs = await create_note(client, bob, "bob's")
    await share(client, alice, alices["id"], "bob")

    denied = await client.get("/notes", params={"all": "true"}, headers=bob.headers)
    assert denied.status_code == 403
    assert denied.headers["content-type"] == "application/problem+json"
    async with app.state.bastion.database.transaction() as session:
        events = (
            await session.scalars(select(AuditEvent).where(AuditEvent.type == "access_denied"))
        ).all()
    assert [(event.actor_id, event.details["missing"]) for event in events] == [
        (bob.id, "notes:read_all")
    ]

    everything = await list_all_pages(client, admin, all="true")
    assert [n["id"] for n in everything] == [bobs["id"], alices["id"]]
    # The administrator sees who a note is shared with, as its owner does.
    assert everything[1]["shared_with"] == ["bob"]
    # Without all=true an administrator lists their own notes like anyone else.
    assert await list_all_pages(client, admin) == []
    # ... and may read any note by id; writing stays with the owner.
    read = await client.get(f"/notes/{alices['id']}", headers=admin.headers)
    assert read.status_code == 200
    assert read.json()["shared_with"] == ["bob"]
    patched = await client.patch(
        f"/notes/{alices['id']}", json={"title": "mine now"}, headers=admin.headers
    )
    assert patched.status_code == 404
    assert (await client.delete(f"/notes/{alices['id']}", headers=admin.headers)).status_code == 404

    # The permission is the token's, not the role's: a narrower admin token gets no more.
    narrow = await client.post(
        "/auth/token",
        data={
            "grant_type": "password",
            "username": "root",
            "password": "correct horse battery staple",
            "scope": "notes:read notes:write",
        },
    )
    narrow_headers = {"Authorization": f"Bearer {narrow.json()['access_token']}"}
    forbidden = await client.get("/notes", params={"all": "true"}, headers=narrow_headers)
    assert forbidden.status_code == 403
    hidden = await client.get(f"/notes/{alices['id']}", headers=narrow_headers)
    assert hidden.status_code == 404


async def test_routes_need_a_token_with_the_right_permission(client: httpx.AsyncClient) -> None:
    alice = await account(client, "alice")
    note = await create_note(client, alice)
    reader = await client.post(
        "/auth/token",
        data={
            "grant_type": "password",
            "username": "alice",
            "password": "correct horse battery staple",
            "scope": "notes:read",
        },
    )
    read_only = {"Authorization": f"Bearer {reader.json()['access_token']}"}
    path = f"/notes/{note['id']}"
    writes: list[tuple[str, str, dict[str, Any] | None]] = [
        ("POST", "/notes", {"title": "t", "body": "b"}),
        ("PATCH", path, {"title": "t"}),
        ("DELETE", path, None),
        ("POST", f"{path}/shares", {"username": "alice"}),
    ]
    reads: list[tuple[str, str, dict[str, Any] | None]] = [
        ("GET", "/notes", None), ("GET", path, None)
    ]
    for method, url, body in writes + reads:
        anonymous = await client.request(method, url, json=body)
        assert anonymous.status_code == 401, (method, url)
        assert anonymous.headers["www-authenticate"].startswith("Bearer")
    for method, url, body in writes:
        response = await client.request(method, url, json=body, headers=read_only)
        assert response.status_code == 403, (method, url)
    for method, url, _ in reads:
        assert (await client.request(method, url, headers=read_only)).status_code == 200
    assert (await client.get(path, headers=alice.headers)).json() == note


async def test_one_token_verification_per_request(
    app: FastAPI, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The route and its note dependency both declare the permission; FastAPI's cache makes
    that one verification, not two."""
    alice = await account(client, "alice")
    note = await create_note(client, alice)
    authenticator = app.state.bastion.authenticator
    calls: list[str] = []
    original = authenticator.authenticate

    async def counting(token: str) -> Principal:
        calls.append(token)
        principal: Principal = await original(token)
        return principal

    monkeypatch.setattr(authenticator, "authenticate", counting)
    path = f"/notes/{note['id']}"
    requests: list[tuple[str, str, dict[str, Any] | None]] = [
        ("GET", "/notes", None),
        ("GET", path, None),
        ("PATCH", path, {"title": "t"}),
        ("POST", f"{path}/shares", {"username": "nobody"}),
        ("DELETE", path, None),
    ]
    for method, url, body in requests:
        calls.clear()
        await client.request(method, url, json=body, headers=alice.headers)
        assert len(calls) == 1, (method, url)


# -- search ---------------------------------------------------------------------------------


async def test_search_matches_every_character_literally(client: httpx.AsyncClient) -> None:
    alice = await account(client, "alice")
    bob = await account(client, "bob")
    titles = [
        "100% sure", "1000 sure", "snake_case", "snakeXcase", "back\\slash", "backslash",
        "O'Brien", "O Brien", 'say "hi"', "naïve café", "smile 🙂", "Straße",
    ]
    ids = [(await create_note(client, alice, title, "<p>plain</p>"))["id"] for title in titles]
    await create_note(client, bob, "bob's 100% private snake_case note")

    async def found(q: str) -> set[str]:
        return {note["title"] for note in await list_all_pages(client, alice, q=q)}

    assert await found("%") == {"100% sure"}
    assert await found("0%") == {"100% sure"}
    assert await found("_") == {"snake_case"}
    assert await found("e_c") == {"snake_case"}
    assert await found("\\") == {"back\\slash"}
    assert await found("k\\s") == {"back\\slash"}
    assert await found("'") == {"O'Brien"}
    assert await found("o'b") == {"O'Brien"}
    assert await found('"hi"') == {'say "hi"'}
    assert await found("café") == {"naïve café"}
    assert await found("NAïVE") == {"naïve café"}  # ASCII letters fold, ï matches itself
    assert await found("🙂") == {"smile 🙂"}
    assert await found("straße") == {"Straße"}
    # Case folding is ASCII-only, the same on SQLite and PostgreSQL: É is not é.
    assert await found("CAFÉ") == set()
    assert await found("SURE") == {"100% sure", "1000 sure"}
    assert await found("%%") == set()
    assert await found("no such text") == set()
    # An empty q is no filter.
    assert await found("") == set(titles)
    assert len(ids) == len(titles)


async def test_search_looks_in_the_body_text(client: httpx.AsyncClient) -> None:
    alice = await account(client, "alice")
    await create_note(client, alice, "cartoon", "<p>Tom &amp; Jerry <b>chase</b> &lt;3</p>")
    await create_note(client, alice, "other", "<p>Tom and Jerry</p>")

    async def found(q: str) -> list[str]:
        return [note["title"] for note in await list_all_pages(client, alice, q=q)]

    assert await found("tom & jerry") == ["cartoon"]
    assert await found("<3") == ["cartoon"]
    assert await found("CHASE") == ["cartoon"]
    assert sorted(await found("jerry")) == ["cartoon", "other"]


async def test_search_never_widens_visibility(app: FastAPI, client: httpx.AsyncClient) -> None:
    alice = await account(client, "alice")
    bob = await account(client, "bob")
    admin = await admin_account(app, client, "root")
    await create_note(client, alice, "secret plans")
    mine = await create_note(client, bob, "my plans")
    assert [n["id"] for n in await list_all_pages(client, bob, q="plans")] == [mine["id"]]
    assert await list_all_pages(client, bob, q="secret") == []
    every = await list_all_pages(client, admin, q="plans", all="true")
    assert {n["title"] for n in every} == {"secret plans", "my plans"}


async def test_search_text_is_bounded_plain_text(client: httpx.AsyncClient) -> None:
    alice = await account(client, "alice")
    for q in ["a" * 201, "nul\x00", "tab\x0b", "\u200bzero-width"]:
        response = await client.get("/notes", params={"q": q}, headers=alice.headers)
        assert response.status_code == 422, repr(q)
        assert response.json()["errors"][0]["loc"] == ["query", "q"]
    ok = await client.get("/notes", params={"q": "a" * 200}, headers=alice.headers)
    assert ok.status_code == 200


# -- pagination -----------------------------------------------------------------------------


async def insert_notes(
    app: FastAPI, owner: Account, count: int, *, created_at: datetime | None = None
) -> list[uuid.UUID]:
    """Notes written straight to the database; all with the same ``created_at`` when
    given, to exercise the id tie-break."""
    ids = [uuid.uuid4() for _ in range(count)]
    base = datetime.now(UTC)
    async with app.state.bastion.database.transaction() as session:
        for index, note_id in enumerate(ids):
            when = created_at or base - timedelta(seconds=index + 1)
            session.add(
                Note(
                    id=note_id,
                    owner_id=uuid.UUID(owner.id),
                    title=f"bulk {index}",
                    body="<p>bulk</p>",
                    created_at=when,
                    updated_at=when,
                )
            )
    return ids


def expected_order(notes: list[Note]) -> list[str]:
    ordered = sorted(notes, key=lambda note: (note.created_at, note.id.hex), reverse=True)
    return [str(note.id) for note in ordered]


async def test_pages_walk_every_note_exactly_once_newest_first(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    alice = await account(client, "alice")
    bob = await account(client, "bob")
    for index in range(4):
        await create_note(client, alice, f"api {index}")
    await insert_notes(app, alice, 5)
    # Five notes created in the same microsecond: only the id orders them.
    await insert_notes(app, alice, 5, created_at=datetime(2026, 1, 1, 12, 0, tzinfo=UTC))
    shared = await create_note(client, bob, "bob's, shared")
    await share(client, bob, shared["id"], "alice")
    await create_note(client, bob, "bob's, private")
    visible = [note for note in await stored_notes(app) if note.title != "bob's, private"]
    assert len(visible) == 15

    for limit in [1, 2, 3, 4, 5, 15, 16, 100]:
        pages: list[list[dict[str, Any]]] = []
        cursor: str | None = None
        while True:
            params: dict[str, str | int] = {"limit": limit}
            if cursor:
                params["cursor"] = cursor
            response = await client.get("/notes", params=params, headers=alice.headers)
            assert response.status_code == 200, response.text
            page = response.json()
            pages.append(page["items"])
            cursor = page["next_cursor"]
            if cursor is None:
                break
        walked = [item["id"] for items in pages for item in items]
        assert walked == expected_order(visible), limit
        assert all(len(items) == limit for items in pages[:-1])
        assert 0 < len(pages[-1]) <= limit  # never an empty last page


async def test_default_page_size_is_20(app: FastAPI, client: httpx.AsyncClient) -> None:
    alice = await account(client, "alice")
    await insert_notes(app, alice, 21)
    first = (await client.get("/notes", headers=alice.headers)).json()
    assert len(first["items"]) == 20
    second = (
        await client.get("/notes", params={"cursor": first["next_cursor"]}, headers=alice.headers)
    ).json()
    assert len(second["items"]) == 1
    assert second["next_cursor"] is None


async def test_pagination_of_search_and_of_every_note(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    alice = await account(client, "alice")
    bob = await account(client, "bob")
    admin = await admin_account(app, client, "root")
    await insert_notes(app, alice, 7)
    await insert_notes(app, bob, 6)
    everything = await list_all_pages(client, admin, all="true", limit=4)
    assert len({note["id"] for note in everything}) == len(everything) == 13
    matching = await list_all_pages(client, alice, q="BULK 1", limit=1)
    assert [note["title"] for note in matching] == ["bulk 1"]
    tens = await list_all_pages(client, bob, q="bulk", limit=2)
    assert len(tens) == 6


async def test_limit_outside_1_to_100_is_refused(client: httpx.AsyncClient) -> None:
    alice = await account(client, "alice")
    for limit in ["0", "101", "-1", "x", "1.5", "", "1e2", "99999999999999999999"]:
        response = await client.get("/notes", params={"limit": limit}, headers=alice.headers)
        assert response.status_code == 422, limit
        assert response.json()["errors"][0]["loc"] == ["query", "limit"]
    for limit in ["1", "100"]:
        assert (
            await client.get("/notes", params={"limit": limit}, headers=alice.headers)
        ).status_code == 200


def _edited(cursor: str) -> str:
    payload, tag = cursor.split(".")
    raw = bytearray(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    raw[-3] ^= 1  # one bit of the position, signature untouched
    return f"{base64.urlsafe_b64encode(bytes(raw)).rstrip(b'=').decode()}.{tag}"


async def test_cursors_that_this_listing_did_not_issue_are_refused(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    alice = await account(client, "alice")
    bob = await account(client, "bob")
    admin = await admin_account(app, client, "root")
    await insert_notes(app, alice, 3)
    await insert_notes(app, bob, 3)
    await insert_notes(app, admin, 3)

    async def next_cursor(caller: Account, **params: str | int) -> str:
        page = await client.get("/notes", params={"limit": 1, **params}, headers=caller.headers)
        cursor: str = page.json()["next_cursor"]
        assert cursor
        return cursor

    own = await next_cursor(alice)
    searched = await next_cursor(alice, q="bulk")
    every = await next_cursor(admin, all="true")
    admins_own = await next_cursor(admin)
    position = orjson.dumps(["2026-01-01T00:00:00+00:00", str(uuid.uuid4())])
    payload = base64.urlsafe_b64encode(position).rstrip(b"=").decode()
    forged = f"{payload}.{base64.urlsafe_b64encode(b'0' * 16).rstrip(b'=').decode()}"
    purpose = listing_purpose(
        viewer=Viewer(user_id=uuid.UUID(alice.id), read_all=False), all_notes=False, q=None
    )
    signed_nonsense = [
        app.state.bastion.cursors.encode(purpose, position)
        for position in (["x", "y"], [], ["2026-01-01T00:00:00", str(uuid.uuid4())], [1, 2])
    ]

    refused: list[tuple[Account, dict[str, str], str]] = [
        (alice, {}, "garbage"),
        (alice, {}, "a.b"),
        (alice, {}, "..."),
        (alice, {}, "é.é"),
        (alice, {}, forged),
        (alice, {}, _edited(own)),
        (alice, {}, own + "A"),
        (alice, {}, own[:-2]),
        (alice, {"q": "bulk 2"}, searched),  # another search
        (alice, {}, searched),  # the search's cursor without the search
        (alice, {"q": "bulk"}, own),  # ... and the other way round
        (bob, {}, own),  # another user's cursor
        (admin, {}, every),  # the all=true cursor on the caller's own listing
        (admin, {"all": "true"}, admins_own),
        *((alice, {}, cursor) for cursor in signed_nonsense),
    ]
    for caller, params, cursor in refused:
        response = await client.get(
            "/notes", params={**params, "cursor": cursor}, headers=caller.headers
        )
        assert response.status_code == 400, (params, cursor)
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["detail"] == "The cursor is not valid for this listing."
        assert cursor not in response.text

    too_long = await client.get("/notes", params={"cursor": "a" * 513}, headers=alice.headers)
    assert too_long.status_code == 422
    # The genuine cursors still work where they belong.
    for caller, params, cursor in [
        (alice, {}, own), (alice, {"q": "bulk"}, searched), (admin, {"all": "true"}, every)
    ]:
        response = await client.get(
            "/notes", params={**params, "cursor": cursor}, headers=caller.headers
        )
        assert response.status_code == 200


async def test_deleting_a_note_deletes_its_shares(app: FastAPI, client: httpx.AsyncClient) -> None:
    alice = await account(client, "alice")
    await account(client, "bob")
    note = await create_note(client, alice)
    await share(client, alice, note["id"], "bob")
    assert await share_count(app) == 1
    await client.delete(f"/notes/{note['id']}", headers=alice.headers)
    async with app.state.bastion.database.transaction() as session:
        assert (await session.scalars(select(NoteShare))).all() == []
