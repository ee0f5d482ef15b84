"""Each route that takes a body declares how large it may be (FastAPI's ``max_body_size``),
under the global ``BASTION_MAX_BODY_BYTES``: a note route never refuses a valid note, however
its client escapes it, and a form of a few fields cannot make the server parse a megabyte."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from bastion.middleware.body_limit import SMALL_BODY_BYTES
from bastion.notes.schemas import MAX_TITLE_CHARACTERS, NOTE_BODY_BYTES
from bastion.security.sanitize import MAX_HTML_BYTES
from tests.notes import account


def _escaped(text: str) -> str:
    """``text`` as a JSON string with every character escaped, the largest form a JSON
    encoder may send (astral characters as surrogate pairs)."""
    units = text.encode("utf-16-be")
    pairs = [units[i : i + 2] for i in range(0, len(units), 2)]
    return '"' + "".join(f"\\u{pair.hex()}" for pair in pairs) + '"'


def _assert_413_problem(response: httpx.Response) -> None:
    assert response.status_code == 413, response.text[:200]
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == 413


async def test_the_largest_valid_note_escaped_to_the_full_is_accepted(
    client: httpx.AsyncClient,
) -> None:
    ann = await account(client, "ann")
    body = "<p>" + "a" * (MAX_HTML_BYTES - 7) + "</p>"
    title = "\U0001f600" * MAX_TITLE_CHARACTERS  # each a surrogate pair: 12 bytes escaped
    content = f'{{"title": {_escaped(title)}, "body": {_escaped(body)}}}'.encode()
    assert len(body.encode()) == MAX_HTML_BYTES
    assert len(content) > 6 * MAX_HTML_BYTES
    assert len(content) <= NOTE_BODY_BYTES
    headers = {**ann.headers, "Content-Type": "application/json"}
    created = await client.post("/notes", content=content, headers=headers)
    assert created.status_code == 201, created.text[:300]
    assert created.json()["body"] == body
    note_id = created.json()["id"]
    updated = await client.patch(f"/notes/{note_id}", content=content, headers=headers)
    assert updated.status_code == 200, updated.text[:300]


async def test_a_note_body_over_the_route_limit_is_refused_unread(
    client: httpx.AsyncClient,
) -> None:
    ann = await account(client, "ann")
    headers = {**ann.headers, "Content-Type": "application/json"}
    content = b'{"title": "t", "body": "' + b"x" * NOTE_BODY_BYTES + b'"}'
    _assert_413_problem(await client.post("/notes", content=content, headers=headers))


async def test_a_login_form_over_16_kib_is_refused(app: FastAPI, client: httpx.AsyncClient) -> None:
    """It used to be parsed up to the global 1 MiB."""
    form = b"grant_type=password&username=ann&password=" + b"p" * SMALL_BODY_BYTES
    response = await client.post(
        "/auth/token",
        content=form,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    _assert_413_problem(response)


async def test_small_body_routes_refuse_what_they_cannot_use(client: httpx.AsyncClient) -> None:
    ann = await account(client, "ann")
    oversized = b'{"username": "' + b"b" * SMALL_BODY_BYTES + b'"}'
    headers = {**ann.headers, "Content-Type": "application/json"}
    for method, path in [
        ("POST", "/auth/register"),
        ("POST", "/auth/password"),
        ("POST", "/notes/00000000-0000-0000-0000-000000000000/shares"),
        ("PATCH", "/admin/users/00000000-0000-0000-0000-000000000000"),
    ]:
        response = await client.request(method, path, content=oversized, headers=headers)
        _assert_413_problem(response)
