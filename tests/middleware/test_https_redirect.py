"""HTTPS redirect: plain HTTP gets a 307 to the same URL over TLS; HTTPS passes."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from bastion.middleware import HTTPSRedirectMiddleware, ProxyHeadersMiddleware, RequestIdMiddleware


async def _ok(_request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


def _client(base_url: str, *, peer: str = "127.0.0.1") -> httpx.AsyncClient:
    app = RequestIdMiddleware(
        ProxyHeadersMiddleware(
            HTTPSRedirectMiddleware(
                Starlette(routes=[Route("/{path:path}", _ok, methods=["GET", "POST"])])
            ),
            trusted=["10.0.0.9"],
        )
    )
    transport = httpx.ASGITransport(app=app, client=(peer, 4321))
    return httpx.AsyncClient(transport=transport, base_url=base_url)


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_plain_http_is_redirected_keeping_method_path_and_query(method: str) -> None:
    async with _client("http://api.example.com:8080") as client:
        response = await client.request(method, "/notes/a%2Fb?q=x%20y&cursor=abc")
    assert response.status_code == 307  # the client repeats the same method and body
    assert response.headers["location"] == "https://api.example.com/notes/a%2Fb?q=x%20y&cursor=abc"
    assert response.content == b""


async def test_https_passes() -> None:
    async with _client("https://api.example.com") as client:
        response = await client.get("/notes")
    assert response.status_code == 200
    assert response.text == "ok"


async def test_https_reported_by_a_trusted_proxy_passes() -> None:
    async with _client("http://api.example.com", peer="10.0.0.9") as client:
        response = await client.get("/notes", headers={"X-Forwarded-Proto": "https"})
    assert response.status_code == 200


async def test_https_claimed_by_a_client_is_redirected() -> None:
    async with _client("http://api.example.com") as client:
        response = await client.get("/notes", headers={"X-Forwarded-Proto": "https"})
    assert response.status_code == 307


async def test_ipv6_hosts_keep_their_brackets() -> None:
    async with _client("http://[2001:db8::1]:8000") as client:
        response = await client.get("/")
    assert response.headers["location"] == "https://[2001:db8::1]/"


async def _raw(scope: dict[str, Any]) -> list[Message]:
    sent: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise AssertionError("the app must not run")

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        sent.append(message)

    base = {"type": "http", "scheme": "http", "method": "GET", "path": "/", "query_string": b""}
    await HTTPSRedirectMiddleware(app)({**base, **scope}, receive, send)
    return sent


@pytest.mark.parametrize(
    "hosts",
    [
        [],
        [b"a.example", b"b.example"],
        [b"evil.example/path"],
        [b"evil.example\r\nSet-Cookie: x=1"],
        [b"user@evil.example"],
        [b""],
    ],
)
async def test_no_redirect_to_an_unusable_host(hosts: list[bytes]) -> None:
    start, body = await _raw({"headers": [(b"host", host) for host in hosts]})
    assert start["status"] == 400
    assert dict(start["headers"])[b"content-type"] == b"application/problem+json"
    assert json.loads(body["body"])["status"] == 400


async def test_a_path_cannot_break_out_of_the_location() -> None:
    start, _ = await _raw(
        {
            "headers": [(b"host", b"api.example.com")],
            "path": "/a\r\nb c",
            "raw_path": b"/\xffa\r\nb c",
            "query_string": b"x=\r\n",
        }
    )
    location = dict(start["headers"])[b"location"]
    assert location == b"https://api.example.com/%FFa%0D%0Ab%20c?x=%0D%0A"


async def test_without_raw_path_the_path_is_encoded() -> None:
    start, _ = await _raw({"headers": [(b"host", b"api.example.com")], "path": "/é x"})
    assert dict(start["headers"])[b"location"] == b"https://api.example.com/%C3%A9%20x"


async def test_plain_websockets_are_refused_and_secure_ones_pass() -> None:
    sent = await _raw({"type": "websocket", "scheme": "ws", "headers": []})
    assert sent == [{"type": "websocket.close", "code": 1008}]
    ran: list[bool] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        ran.append(True)

    async def nothing() -> Message:
        raise AssertionError

    async def ignore(message: Message) -> None:
        raise AssertionError

    await HTTPSRedirectMiddleware(app)({"type": "websocket", "scheme": "wss"}, nothing, ignore)
    await HTTPSRedirectMiddleware(app)({"type": "lifespan"}, nothing, ignore)
    assert ran == [True, True]
