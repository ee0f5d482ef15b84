"""API5:2023 Broken Function Level Authorization: who may call which route at all.

The authorization matrix (``matrix.py``) lists every route for five callers (anonymous, a
plain user, another plain user, an auditor, an admin); a route it does not list fails
``test_the_matrix_covers_every_route``. The cells that name one note are API1's
(``test_api1_bola.py``).

Beyond the matrix: the admin routes under other spellings (case, dot segments, percent-
encoding, trailing slashes, other methods, method-override and re-routing headers), sent as
``bastion serve`` hands them to the app, must stay closed to a plain user; and an admin's token
narrowed by ``scope`` must open only what it was granted.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
import jwt
import orjson
import pytest
from fastapi import FastAPI

from bastion.audit.events import AuditEventType
from bastion.route_inventory import route_policies
from bastion.security.permissions import ROLE_PERMISSIONS
from tests.admin import events, make_admin
from tests.attacks.matrix import EXTRA_CELLS, FUNCTION_CELLS, MATRIX, assert_cell, cell_id
from tests.identity.helpers import bearer, login, register


def test_the_matrix_covers_every_route(app: FastAPI) -> None:
    routes = {(methods, path) for methods, path, _ in route_policies(app)}
    listed = set(MATRIX) - EXTRA_CELLS
    assert routes - listed == set(), "routes without a matrix entry: decide who may call them"
    assert listed - routes == set(), "matrix entries for routes that no longer exist"


@pytest.mark.parametrize("cell", FUNCTION_CELLS, ids=cell_id)
async def test_each_caller_gets_the_status_the_contract_gives(
    app: FastAPI, client: httpx.AsyncClient, cell: tuple[str, str]
) -> None:
    await assert_cell(app, client, cell)


# -- reaching an admin function by another name -------------------------------------------


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


async def send_raw(
    app: FastAPI, method: str, target: bytes, headers: dict[str, str], body: bytes = b""
) -> Answer:
    """One request straight into the ASGI app, its target exactly as a client wrote it:
    httpx would normalise dot segments away, uvicorn does not (it only percent-decodes
    ``path``), so this is what ``bastion serve`` hands the app."""
    raw_path, _, query = target.partition(b"?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": unquote(raw_path.decode("ascii")),
        "raw_path": raw_path,
        "query_string": query,
        "root_path": "",
        "headers": [(b"host", b"testserver")]
        + [(name.lower().encode(), value.encode()) for name, value in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    messages: list[MutableMapping[str, Any]] = []
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        return pending.pop() if pending else {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        messages.append(message)

    await app(scope, receive, send)
    start = next(message for message in messages if message["type"] == "http.response.start")
    return Answer(
        status=start["status"],
        headers={name.decode().lower(): value.decode() for name, value in start["headers"]},
        body=b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body"),
    )


# Spellings of the admin routes that a router, a proxy or a framework might take for the real
# one: case, doubled and dot segments, percent-encoding, suffixes, trailing slashes, other
# methods. ``{me}`` is the attacker's own id: each write would make them an admin.
ADMIN_ROUTE_TRICKS: list[tuple[str, str]] = [
    ("GET", "/admin/users/"),
    ("GET", "/ADMIN/users"),
    ("GET", "/Admin/Users"),
    ("GET", "//admin/users"),
    ("GET", "/admin//users"),
    ("GET", "/admin/./users"),
    ("GET", "/notes/../admin/users"),
    ("GET", "/notes/%2e%2e/admin/users"),
    ("GET", "/notes/..%2fadmin/users"),
    ("GET", "/%61dmin/users"),
    ("GET", "/admin/%75sers"),
    ("GET", "/admin%2fusers"),
    ("GET", "/admin/users%2f"),
    ("GET", "/admin/users;x=1"),
    ("GET", "/admin/users%00"),
    ("GET", "/admin/users%20"),
    ("GET", "/admin/users.json"),
    ("GET", "/admin/audit/"),
    ("GET", "/admin/audit?type=login_success"),
    ("HEAD", "/admin/users"),
    ("HEAD", "/admin/audit"),
    ("OPTIONS", "/admin/users"),
    ("POST", "/admin/users"),
    ("PUT", "/admin/users"),
    ("PATCH", "/admin/users/{me}"),
    ("PATCH", "/admin/users/{me}/"),
    ("PATCH", "/ADMIN/users/{me}"),
    ("PATCH", "/notes/../admin/users/{me}"),
    ("PUT", "/admin/users/{me}"),
    ("POST", "/admin/users/{me}"),
    ("GET", "/admin/users/{me}"),
    ("POST", "/admin/users/{me}/unlock"),
    ("POST", "/admin/users/{me}/unlock/"),
    ("GET", "/admin/users/{me}/unlock"),
]
# What a refused spelling may answer; a redirect must lead to one of these.
REFUSED = {400, 403, 404, 405}
# Headers some proxies and frameworks obey to re-route or re-method a request.
OVERRIDE_HEADERS = [
    {"X-HTTP-Method-Override": "PATCH"},
    {"X-HTTP-Method": "PATCH"},
    {"X-Method-Override": "PATCH"},
    {"X-Original-URL": "/admin/users"},
    {"X-Rewrite-URL": "/admin/users"},
    {"X-Forwarded-Prefix": "/admin"},
    {"X-Forwarded-Path": "/admin/users"},
]
PROMOTION = orjson.dumps({"roles": ["admin", "user"]})


async def test_no_spelling_of_an_admin_route_opens_it_to_a_plain_user(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    _, root = await make_admin(app, client)
    mallory = await register(client, "mallory")
    headers = bearer((await login(client, "mallory"))["access_token"])
    json_headers = {**headers, "content-type": "application/json"}

    opened: list[str] = []
    for method, path in ADMIN_ROUTE_TRICKS:
        target = path.format(me=mallory["id"]).encode()
        answer = await send_raw(app, method, target, json_headers, PROMOTION)
        if answer.status in {301, 302, 303, 307, 308}:
            location = urlsplit(answer.headers["location"])
            followed = location.path + (f"?{location.query}" if location.query else "")
            answer = await send_raw(app, method, followed.encode(), json_headers, PROMOTION)
        if answer.status not in REFUSED:
            opened.append(f"{method} {path}: {answer.status}")
    # Headers that re-route or re-method elsewhere are ignored: the route asked for answers.
    own_listing = await client.get("/notes", headers=headers)
    for override in OVERRIDE_HEADERS:
        listing = await send_raw(app, "GET", b"/notes", {**headers, **override})
        if (listing.status, orjson.loads(listing.body)) != (200, own_listing.json()):
            opened.append(f"GET /notes with {override}: {listing.status}")
        target = f"/admin/users/{mallory['id']}".encode()
        posted = await send_raw(app, "POST", target, {**json_headers, **override}, PROMOTION)
        if posted.status not in REFUSED:
            opened.append(f"POST {target.decode()} with {override}: {posted.status}")
    assert opened == []

    # And nothing changed: mallory is a plain user, and no admin action was recorded.
    users = (await client.get("/admin/users", headers=root)).json()["items"]
    assert [user["roles"] for user in users if user["id"] == mallory["id"]] == [["user"]]
    claims = jwt.decode(
        (await login(client, "mallory"))["access_token"], options={"verify_signature": False}
    )
    assert set(claims["scope"].split()) == ROLE_PERMISSIONS["user"]
    for kind in (AuditEventType.ROLE_CHANGE, AuditEventType.DISABLE, AuditEventType.UNLOCK):
        assert [event for event in await events(app, kind) if event.outcome == "success"] == []


async def test_an_admin_token_narrowed_by_scope_opens_only_what_it_was_granted(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """A token an admin asked for with a narrower ``scope`` (for a script, say) is worth
    exactly that scope, whatever the account's roles."""
    await make_admin(app, client)
    bob = await register(client, "bob")
    routes = [
        ("GET", "/admin/users", None, "users:read"),
        ("PATCH", f"/admin/users/{bob['id']}", {"disabled": True}, "users:write"),
        ("POST", f"/admin/users/{bob['id']}/unlock", None, "users:write"),
        ("GET", "/admin/audit", None, "audit:read"),
        ("GET", "/notes?all=true", None, "notes:read_all"),
    ]
    wrong: list[str] = []
    for scope in ("notes:read notes:write", "users:read", "audit:read"):
        tokens = await login(client, "root", scope=scope)
        assert set(tokens["scope"].split()) == set(scope.split())
        for method, path, body, needed in routes:
            response = await client.request(
                method, path, json=body, headers=bearer(tokens["access_token"])
            )
            allowed = needed in scope.split()
            if response.status_code != (200 if allowed else 403):
                wrong.append(f"scope {scope!r}: {method} {path} answered {response.status_code}")
    assert wrong == []
