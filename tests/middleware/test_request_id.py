"""X-Request-ID: sane incoming ids are echoed, anything else is replaced."""

from __future__ import annotations

import re

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from bastion.middleware import RequestIdMiddleware, request_id_of


async def _echo_scope_id(request: Request) -> PlainTextResponse:
    return PlainTextResponse(request_id_of(request.scope) or "")


def _client() -> httpx.AsyncClient:
    app = RequestIdMiddleware(Starlette(routes=[Route("/", _echo_scope_id)]))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


@pytest.mark.parametrize("sane", ["abc-123.X_y", "a", "0" * 64])
async def test_a_sane_request_id_is_echoed(sane: str) -> None:
    async with _client() as client:
        response = await client.get("/", headers={"X-Request-ID": sane})
    assert response.headers["x-request-id"] == sane
    assert response.text == sane  # the application sees the same id


@pytest.mark.parametrize(
    "insane",
    ["0" * 65, "<script>alert(1)</script>", "a b", "id\tfoo", "semi;colon", "é", "../../etc"],
)
async def test_an_insane_request_id_is_replaced(insane: str) -> None:
    async with _client() as client:
        response = await client.get("/", headers=[(b"x-request-id", insane.encode("utf-8"))])
    generated = response.headers["x-request-id"]
    assert generated != insane
    assert re.fullmatch(r"[0-9a-f]{32}", generated)


async def test_generated_ids_differ_per_request() -> None:
    async with _client() as client:
        first = await client.get("/")
        second = await client.get("/")
    assert first.headers["x-request-id"] != second.headers["x-request-id"]


async def test_only_one_request_id_header_is_sent() -> None:
    async with _client() as client:
        response = await client.get("/", headers={"X-Request-ID": "given"})
    assert response.headers.get_list("x-request-id") == ["given"]
