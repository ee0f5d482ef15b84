"""ProxyHeadersMiddleware: the scope's client and scheme change only for a trusted peer."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from bastion.middleware import ProxyHeadersMiddleware, SecureHeadersMiddleware
from bastion.security.client_ip import ProxyHeader, client_address
from bastion.security.trusted_proxies import TrustedProxies

PROXY = "10.0.0.9"
CLIENT = "203.0.113.7"
SPOOFED = "6.6.6.6"


async def _whoami(request: Request) -> JSONResponse:
    return JSONResponse({"client": client_address(request.scope), "scheme": request.url.scheme})


def _client(
    peer: str, *, trusted: list[str], header: ProxyHeader = "x-forwarded-for"
) -> httpx.AsyncClient:
    app = ProxyHeadersMiddleware(
        SecureHeadersMiddleware(Starlette(routes=[Route("/", _whoami)])),
        trusted=trusted,
        header=header,
    )
    transport = httpx.ASGITransport(app=app, client=(peer, 50123))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


async def test_an_untrusted_peer_keeps_its_own_address_and_scheme() -> None:
    async with _client(CLIENT, trusted=[PROXY]) as client:
        response = await client.get(
            "/",
            headers={
                "X-Forwarded-For": SPOOFED,
                "X-Forwarded-Proto": "https",
                "Forwarded": f"for={SPOOFED};proto=https",
            },
        )
    assert response.json() == {"client": CLIENT, "scheme": "http"}
    assert "strict-transport-security" not in response.headers


async def test_a_trusted_proxy_names_the_client_and_the_scheme() -> None:
    async with _client(PROXY, trusted=["10.0.0.0/8"]) as client:
        response = await client.get(
            "/",
            headers={"X-Forwarded-For": f"{SPOOFED}, {CLIENT}", "X-Forwarded-Proto": "https"},
        )
    assert response.json() == {"client": CLIENT, "scheme": "https"}
    # HSTS works behind a TLS-terminating proxy.
    assert response.headers["strict-transport-security"].startswith("max-age=")


async def test_only_the_chosen_header_is_believed() -> None:
    headers = {"X-Forwarded-For": SPOOFED, "Forwarded": f'for="{CLIENT}:1234";proto=https'}
    async with _client(PROXY, trusted=[PROXY], header="forwarded") as client:
        forwarded = (await client.get("/", headers=headers)).json()
    async with _client(PROXY, trusted=[PROXY]) as client:
        x_forwarded = (await client.get("/", headers=headers)).json()
    assert forwarded == {"client": CLIENT, "scheme": "https"}
    assert x_forwarded == {"client": SPOOFED, "scheme": "http"}


async def test_a_trusted_proxy_without_headers_is_the_client() -> None:
    async with _client(PROXY, trusted=[PROXY]) as client:
        response = await client.get("/")
    assert response.json() == {"client": PROXY, "scheme": "http"}


async def test_an_invalid_proto_leaves_the_scheme() -> None:
    async with _client(PROXY, trusted=[PROXY]) as client:
        response = await client.get("/", headers={"X-Forwarded-Proto": "javascript"})
    assert response.json()["scheme"] == "http"


async def _call(middleware: ProxyHeadersMiddleware, scope: dict[str, Any]) -> Scope:
    seen: list[Scope] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope)

    middleware.app = app

    async def receive() -> Message:
        return {"type": "lifespan.startup"}

    async def send(message: Message) -> None:
        pass

    await middleware(scope, receive, send)
    return seen[0]


def _middleware(trusted: list[str]) -> ProxyHeadersMiddleware:
    async def unused(scope: Scope, receive: Receive, send: Send) -> None:
        raise AssertionError

    return ProxyHeadersMiddleware(unused, trusted=TrustedProxies(trusted))


@pytest.mark.parametrize(("proto", "scheme"), [("https", "wss"), ("http", "ws")])
async def test_websocket_scopes_get_the_client_and_a_websocket_scheme(
    proto: str, scheme: str
) -> None:
    scope = {
        "type": "websocket",
        "scheme": "ws",
        "client": (PROXY, 1),
        "headers": [(b"x-forwarded-for", CLIENT.encode()), (b"x-forwarded-proto", proto.encode())],
    }
    seen = await _call(_middleware([PROXY]), scope)
    assert seen["client"] == (CLIENT, 0)
    assert seen["scheme"] == scheme


async def test_other_scopes_and_peerless_requests_pass_untouched() -> None:
    lifespan: dict[str, Any] = {"type": "lifespan"}
    assert await _call(_middleware([PROXY]), dict(lifespan)) == lifespan
    peerless: dict[str, Any] = {"type": "http", "scheme": "http", "client": None, "headers": []}
    assert await _call(_middleware([PROXY]), dict(peerless)) == peerless
