"""CORS: listed origins get access with credentials, others get nothing; refusals are problems."""

from __future__ import annotations

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bastion.middleware import CORSMiddleware, RequestIdMiddleware

ALLOWED = "https://app.example.com"
OTHER = "https://evil.example"


async def _thing(_request: Request) -> JSONResponse:
    return JSONResponse({"ok": True}, headers={"Vary": "Accept-Encoding"})


def _client(origins: list[str]) -> httpx.AsyncClient:
    routes = [Route("/thing", _thing, methods=["GET", "POST", "DELETE"])]
    app = RequestIdMiddleware(CORSMiddleware(Starlette(routes=routes), origins=origins))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


def _preflight(origin: str, method: str = "DELETE", headers: str | None = None) -> dict[str, str]:
    request_headers = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers is not None:
        request_headers["Access-Control-Request-Headers"] = headers
    return request_headers


def _vary(response: httpx.Response) -> set[str]:
    return {
        part.strip().lower()
        for value in response.headers.get_list("vary")
        for part in value.split(",")
    }


async def test_an_allowed_origin_gets_its_origin_and_credentials() -> None:
    async with _client([ALLOWED, "https://other.example.com"]) as client:
        response = await client.get("/thing", headers={"Origin": ALLOWED})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ALLOWED
    assert response.headers["access-control-allow-credentials"] == "true"
    exposed = {h.strip() for h in response.headers["access-control-expose-headers"].split(",")}
    assert {"X-Request-ID", "RateLimit", "RateLimit-Policy", "Retry-After"} <= exposed
    assert "WWW-Authenticate" in exposed
    assert {"origin", "accept-encoding"} <= _vary(response)


@pytest.mark.parametrize(
    "origin", [OTHER, "http://app.example.com", "https://app.example.com:8443", "null"]
)
async def test_a_refused_origin_gets_no_cors_headers(origin: str) -> None:
    async with _client([ALLOWED]) as client:
        response = await client.get("/thing", headers={"Origin": origin})
    assert response.status_code == 200  # the browser, not the server, withholds the response
    assert not [name for name in response.headers if name.startswith("access-control-")]
    assert "origin" in _vary(response)


async def test_no_origin_no_cors_headers() -> None:
    async with _client([ALLOWED]) as client:
        response = await client.get("/thing")
    assert not [name for name in response.headers if name.startswith("access-control-")]


async def test_an_allowed_preflight_is_answered_and_cached() -> None:
    async with _client([ALLOWED]) as client:
        response = await client.options(
            "/thing", headers=_preflight(ALLOWED, "DELETE", "Authorization, X-CSRF-Token")
        )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ALLOWED
    assert response.headers["access-control-allow-credentials"] == "true"
    assert response.headers["access-control-max-age"] == "600"
    methods = {m.strip() for m in response.headers["access-control-allow-methods"].split(",")}
    assert methods == {"GET", "POST", "PUT", "PATCH", "DELETE"}
    allowed = {
        h.strip().lower() for h in response.headers["access-control-allow-headers"].split(",")
    }
    assert {"authorization", "content-type", "x-request-id", "x-csrf-token"} <= allowed


@pytest.mark.parametrize(
    "headers",
    [
        _preflight(OTHER),
        _preflight(ALLOWED, "TRACE"),
        _preflight(ALLOWED, "GET", "X-Evil"),
        {**_preflight(ALLOWED), "Access-Control-Request-Private-Network": "true"},
    ],
    ids=["origin", "method", "header", "private-network"],
)
async def test_a_refused_preflight_is_a_400_problem_granting_nothing(
    headers: dict[str, str],
) -> None:
    async with _client([ALLOWED]) as client:
        response = await client.options("/thing", headers=headers)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == 400
    assert problem["request_id"] == response.headers["x-request-id"]
    assert not [name for name in response.headers if name.startswith("access-control-")]
    assert {"origin", "access-control-request-method"} <= _vary(response)
    assert OTHER not in response.text


async def test_star_allows_every_origin_but_never_with_credentials() -> None:
    async with _client(["*"]) as client:
        simple = await client.get("/thing", headers={"Origin": OTHER})
        preflight = await client.options("/thing", headers=_preflight(OTHER, "POST"))
    assert simple.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in simple.headers
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in preflight.headers


async def test_an_options_request_that_is_no_preflight_reaches_the_app() -> None:
    async with _client([ALLOWED]) as client:
        response = await client.options("/thing", headers={"Origin": ALLOWED})
    assert response.status_code == 405  # the route's own answer
    assert response.headers["access-control-allow-origin"] == ALLOWED
