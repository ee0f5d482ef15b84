"""API4:2023 Unrestricted Resource Consumption: what one client can make the server spend.

Two costs no other test attacks through the app:

- **Argon2id memory.** Each password hash costs ``BASTION_PASSWORD_HASH_MEMORY_KIB`` (19 MiB
  by default), so a flood of logins must not run them all at once: at most four hash at a
  time per process (``PasswordHasher``'s limiter, docs/security-model.md#password-storage-
  argon2id), however many logins arrive. A hash is slowed down here so that the flood
  really overlaps, and the most hashes ever in flight are counted.
- **The JSON parser.** A body just under its route's limit, built to make the parser recurse
  or allocate (nesting tens of thousands deep, tens of thousands of keys), is a quick 4xx on
  every JSON route, stores nothing, and the server serves the next request.

The rest of API4 is attacked elsewhere; docs/security-testing.md lists where (body limits,
request heads, connections per address, quotas, storage limits, page sizes, slow databases).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import argon2
import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute

from bastion.services import services_of
from tests.admin import make_admin
from tests.identity.helpers import PASSWORD, password_grant
from tests.notes import account, create_note, stored_notes

# docs/security-model.md: "A limiter lets at most 4 run at once per process".
HASH_CONCURRENCY = 4
HASH_SECONDS = 0.05
FLOOD = 24
# A refusal of a hostile body must be cheap. Today the costliest, 30,000 unknown keys on a
# note route, takes 0.3-0.6 s (docs/security-testing.md, API4); a hang or a quadratic blow-up
# takes far longer.
QUICK_SECONDS = 2.0


class InFlight:
    """Counts the calls running at once of the functions it wraps, across threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.now = 0
        self.peak = 0

    def wrap(self, original: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                self.now += 1
                self.peak = max(self.peak, self.now)
            try:
                time.sleep(HASH_SECONDS)  # in the worker thread, as the real hash is
                return original(*args, **kwargs)
            finally:
                with self._lock:
                    self.now -= 1

        return counted


async def test_a_login_flood_runs_at_most_four_password_hashes_at_once(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    await account(client, "alice")
    hashes = InFlight()
    # argon2-cffi's hasher is what pwdlib runs: every hash and verification passes here.
    monkeypatch.setattr(argon2.PasswordHasher, "hash", hashes.wrap(argon2.PasswordHasher.hash))
    monkeypatch.setattr(
        argon2.PasswordHasher, "verify", hashes.wrap(argon2.PasswordHasher.verify)
    )
    logins = [password_grant(client, "alice", PASSWORD) for _ in range(FLOOD // 2)]
    logins += [password_grant(client, f"nobody{n}", PASSWORD) for n in range(FLOOD // 2)]
    answers = await asyncio.gather(*logins)
    assert sorted({answer.status_code for answer in answers}) == [200, 400]
    # Reaching the bound shows the flood overlapped; passing it, that nothing bounded it.
    assert hashes.peak == HASH_CONCURRENCY


def json_body_routes(app: FastAPI) -> list[tuple[str, str, int]]:
    """(method, path, body limit) of every route that reads a JSON body."""
    ceiling = services_of(app).settings.max_body_bytes
    found: list[tuple[str, str, int]] = []
    for route in app.routes:
        if isinstance(route, APIRoute) and route.body_field is not None:
            limit = getattr(route, "max_body_size", None) or ceiling
            methods = sorted(route.methods or ())
            found.extend((method, route.path, limit) for method in methods)
    return found


def hostile_bodies(limit: int) -> dict[str, bytes]:
    """JSON documents a little under ``limit`` bytes that are costly to parse naively."""
    room = limit - 64
    depth_of_lists = room // 2
    depth_of_objects = room // 6
    keys = room // 13  # '"k0000000":0,'
    return {
        f"{depth_of_lists} nested arrays": b"[" * depth_of_lists + b"]" * depth_of_lists,
        f"{depth_of_objects} nested objects": (
            b'{"a":' * depth_of_objects + b"0" + b"}" * depth_of_objects
        ),
        f"{keys} keys": b"{" + b",".join(b'"k%07d":0' % n for n in range(keys)) + b"}",
        "one long run of numbers": b"[" + b"0," * (room // 2 - 1) + b"0]",
    }


async def test_json_built_to_exhaust_the_parser_is_a_quick_refusal(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    owner = await account(client, "alice")
    await account(client, "bob")
    _, admin = await make_admin(app, client)
    note = await create_note(client, owner)
    routes = json_body_routes(app)
    assert {path for _, path, _ in routes} >= {"/notes", "/auth/register", "/admin/users/{user_id}"}

    slow: list[str] = []
    for method, path, limit in routes:
        url = path.format(note_id=note["id"], user_id=owner.id)
        caller = admin if path.startswith("/admin") else owner.headers
        headers = {**caller, "content-type": "application/json"}
        for name, body in hostile_bodies(limit).items():
            assert len(body) <= limit, (path, name)
            started = time.monotonic()
            response = await client.request(method, url, content=body, headers=headers)
            took = time.monotonic() - started
            assert 400 <= response.status_code < 500, (method, path, name, response.status_code)
            if took > QUICK_SECONDS:
                slow.append(f"{method} {path}, {name}: {took:.2f} s")
    assert slow == []
    assert [str(stored.id) for stored in await stored_notes(app)] == [note["id"]]
    assert (await client.get("/auth/me", headers=owner.headers)).status_code == 200
