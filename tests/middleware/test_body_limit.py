"""Bodies over the limit get 413 problem+json and are never read whole."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.types import Receive, Scope, Send

from bastion.errors import install_problem_handlers
from bastion.middleware import BodyLimitMiddleware, RequestIdMiddleware

LIMIT = 1024
CHUNK = 256


class Payload(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str


def _fastapi_app(calls: list[str]) -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)

    @app.post("/items")
    async def create(payload: Payload) -> dict[str, int]:
        calls.append("create")
        return {"length": len(payload.text)}

    return app


def _client(app: object) -> httpx.AsyncClient:
    wrapped = RequestIdMiddleware(BodyLimitMiddleware(app, max_body_bytes=LIMIT))  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=wrapped), base_url="http://test")


def assert_413_problem(response: httpx.Response) -> None:
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == 413
    assert problem["request_id"] == response.headers["x-request-id"]


async def test_a_body_within_the_limit_passes() -> None:
    calls: list[str] = []
    async with _client(_fastapi_app(calls)) as client:
        response = await client.post("/items", json={"text": "x" * (LIMIT - 20)})
    assert response.status_code == 200
    assert calls == ["create"]


async def test_a_declared_length_over_the_limit_is_refused_before_the_app_runs() -> None:
    calls: list[str] = []
    async with _client(_fastapi_app(calls)) as client:
        response = await client.post("/items", json={"text": "x" * LIMIT})
    assert_413_problem(response)
    assert calls == []


async def test_a_chunked_body_is_cut_off_when_it_crosses_the_limit() -> None:
    calls: list[str] = []
    pulled: list[int] = []

    async def endless() -> AsyncIterator[bytes]:
        yield b'{"text": "'
        for index in range(10_000):  # 2.5 MB if it were all read
            pulled.append(index)
            yield b"x" * CHUNK

    async with _client(_fastapi_app(calls)) as client:
        response = await client.post("/items", content=endless())
    assert_413_problem(response)
    assert calls == []
    assert len(pulled) <= LIMIT // CHUNK + 2  # stopped at the limit, not at the end


async def reads_everything(scope: Scope, receive: Receive, send: Send) -> None:
    """A plain ASGI app that reads the whole body and answers its length."""
    body = await Request(scope, receive).body()
    await PlainTextResponse(str(len(body)))(scope, receive, send)


async def chunks() -> AsyncIterator[bytes]:
    """A chunked body of 20 chunks, over LIMIT."""
    for _ in range(20):
        yield b"y" * CHUNK


async def test_a_plain_asgi_app_reading_too_much_gets_a_413_problem() -> None:
    async with _client(reads_everything) as client:
        response = await client.post("/", content=chunks())
    assert_413_problem(response)


async def test_a_lying_content_length_does_not_help() -> None:
    wrapped = BodyLimitMiddleware(reads_everything, max_body_bytes=LIMIT)
    messages = [
        {"type": "http.request", "body": b"z" * CHUNK, "more_body": True} for _ in range(8)
    ]
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return messages.pop(0)

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/",
        "headers": [(b"content-length", b"10")],
        "query_string": b"",
    }
    await wrapped(scope, receive, send)  # type: ignore[arg-type]
    assert sent[0]["status"] == 413


async def test_a_chunked_body_on_a_get_is_counted_too() -> None:
    """Only a request that can carry no body (no length, or 0, and not chunked) skips the
    count; a GET with a chunked body does not."""
    async with _client(reads_everything) as client:
        response = await client.request("GET", "/", content=chunks())
        empty = await client.get("/")
    assert_413_problem(response)
    assert empty.status_code == 200
    assert empty.text == "0"
