"""The CONTRACT.md security headers, on API responses, docs and errors alike."""

from __future__ import annotations

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from bastion.middleware import SecureHeadersMiddleware
from bastion.middleware.secure_headers import API_CSP, DOCS_CSP

EXPECTED = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
}


async def _leaky(_request: Request) -> Response:
    return PlainTextResponse(
        "ok",
        headers={
            "Server": "leaky/1.0",
            "Cache-Control": "public, max-age=3600",
            "X-Frame-Options": "ALLOWALL",
        },
    )


def _client(base_url: str = "http://test") -> httpx.AsyncClient:
    app = SecureHeadersMiddleware(
        Starlette(
            routes=[
                Route("/thing", _leaky),
                Route("/docs", _leaky),
                Route("/docs/static/x.js", _leaky),
                Route("/auth/token", _leaky),
                Route("/authority", _leaky),
            ]
        )
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url)


def assert_secure_headers(headers: httpx.Headers, csp: str = API_CSP) -> None:
    for name, value in EXPECTED.items():
        assert headers.get_list(name) == [value], name
    assert headers["content-security-policy"] == csp
    assert "camera=()" in headers["permissions-policy"]
    assert "server" not in headers


async def test_api_responses_get_every_header_and_no_server_name() -> None:
    async with _client() as client:
        response = await client.get("/thing")
    assert_secure_headers(response.headers)
    assert "strict-transport-security" not in response.headers
    assert response.headers["cache-control"] == "public, max-age=3600"


async def test_errors_get_the_headers_too() -> None:
    async with _client() as client:
        response = await client.get("/missing")
    assert response.status_code == 404
    assert_secure_headers(response.headers)


@pytest.mark.parametrize("path", ["/docs", "/docs/static/x.js"])
async def test_docs_get_their_own_narrow_policy(path: str) -> None:
    async with _client() as client:
        response = await client.get(path)
    assert_secure_headers(response.headers, csp=DOCS_CSP)
    assert "frame-ancestors 'none'" in DOCS_CSP
    assert "'unsafe-inline'" not in DOCS_CSP
    assert "http" not in DOCS_CSP  # no other host is allowed


async def test_hsts_only_over_https() -> None:
    async with _client("https://test") as client:
        response = await client.get("/thing")
    assert response.headers["strict-transport-security"].startswith("max-age=63072000")


async def test_auth_responses_are_never_cached() -> None:
    async with _client() as client:
        auth = await client.get("/auth/token")
        lookalike = await client.get("/authority")
    assert auth.headers.get_list("cache-control") == ["no-store"]
    assert lookalike.headers["cache-control"] == "public, max-age=3600"
