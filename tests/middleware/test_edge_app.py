"""The edge protections wired into the full service (``create_app``), as a client meets them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from bastion.app import create_app
from bastion.audit.events import AuditEventType
from bastion.audit.service import list_events
from bastion.middleware import (
    AccessLogMiddleware,
    BodyLimitMiddleware,
    CORSMiddleware,
    HTTPSRedirectMiddleware,
    ProxyHeadersMiddleware,
    RequestIdMiddleware,
    SecureHeadersMiddleware,
    ServerErrorMiddleware,
    TrustedHostMiddleware,
)
from bastion.storage.migrate import upgrade_to_head
from tests.conftest import FAST_HASHING, make_settings

PROXY = "10.0.0.9"
CLIENT = "198.51.100.23"
SPOOFED = "6.6.6.6"
FRONT_END = "https://app.example.com"

Service = Callable[..., AbstractAsyncContextManager[tuple[FastAPI, httpx.AsyncClient]]]


@pytest.fixture
def service(tmp_path: Path) -> Service:
    """The service on SQLite with ``overrides``, and a client at ``peer``."""

    @asynccontextmanager
    async def started(
        *, peer: str = CLIENT, base_url: str = "http://testserver", **overrides: Any
    ) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
        settings = make_settings(tmp_path / "data", **FAST_HASHING, **overrides)
        app = create_app(settings)
        await upgrade_to_head(app.state.bastion.database.engine)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app, client=(peer, 50123))
            async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
                yield app, client

    return started


async def _failed_login_ip(
    app: FastAPI, client: httpx.AsyncClient, headers: dict[str, str]
) -> str | None:
    response = await client.post(
        "/auth/token",
        data={"grant_type": "password", "username": "nobody", "password": "x" * 20},
        headers=headers,
    )
    assert response.status_code == 400, response.text
    async with app.state.bastion.database.transaction() as session:
        [event] = await list_events(session, type=AuditEventType.LOGIN_FAILURE, limit=10)
    return event.client_ip


async def test_a_spoofed_x_forwarded_for_is_ignored_without_a_trusted_proxy(
    service: Service,
) -> None:
    async with service() as (app, client):
        assert await _failed_login_ip(app, client, {"X-Forwarded-For": SPOOFED}) == CLIENT


async def test_a_spoofed_x_forwarded_for_is_ignored_from_an_untrusted_peer(
    service: Service,
) -> None:
    async with service(trusted_proxies=[PROXY]) as (app, client):
        assert await _failed_login_ip(app, client, {"X-Forwarded-For": SPOOFED}) == CLIENT


async def test_a_trusted_proxy_names_the_client_in_the_audit_log(service: Service) -> None:
    async with service(peer=PROXY, trusted_proxies=["10.0.0.0/8"]) as (app, client):
        ip = await _failed_login_ip(app, client, {"X-Forwarded-For": f"{SPOOFED}, {CLIENT}"})
    assert ip == CLIENT


async def test_forwarded_mode_believes_only_forwarded(service: Service) -> None:
    async with service(peer=PROXY, trusted_proxies=[PROXY], proxy_header="forwarded") as (
        app,
        client,
    ):
        ip = await _failed_login_ip(
            app, client, {"X-Forwarded-For": SPOOFED, "Forwarded": f'for="{CLIENT}:4711"'}
        )
    assert ip == CLIENT


@pytest.mark.parametrize("headers", [{"Host": "evil.example"}, {"Host": "testserver.evil.example"}])
async def test_a_foreign_host_gets_a_400_problem(service: Service, headers: dict[str, str]) -> None:
    async with service() as (_app, client):
        response = await client.get("/health/live", headers=headers)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["request_id"] == response.headers["x-request-id"]
    assert "evil" not in response.text
    assert response.headers["x-content-type-options"] == "nosniff"  # headers on refusals too


async def test_allowed_hosts_and_ports_are_served(service: Service) -> None:
    async with service(allowed_hosts=["api.example.com"]) as (_app, client):
        response = await client.get("/health/live", headers={"Host": "API.example.com:8443"})
        refused = await client.get("/health/live")  # testserver is not on this list
    assert response.status_code == 200
    assert refused.status_code == 400


async def test_cors_for_the_listed_front_end_only(service: Service) -> None:
    async with service(cors_origins=[FRONT_END]) as (_app, client):
        allowed = await client.get("/health/live", headers={"Origin": FRONT_END})
        refused = await client.get("/health/live", headers={"Origin": "https://evil.example"})
        preflight = await client.options(
            "/auth/me",
            headers={
                "Origin": FRONT_END,
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization",
            },
        )
        bad_preflight = await client.options(
            "/auth/me",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
        )
    assert allowed.headers["access-control-allow-origin"] == FRONT_END
    assert allowed.headers["access-control-allow-credentials"] == "true"
    assert "access-control-allow-origin" not in refused.headers
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == FRONT_END
    assert bad_preflight.status_code == 400
    assert bad_preflight.headers["content-type"] == "application/problem+json"
    assert bad_preflight.json()["request_id"] == bad_preflight.headers["x-request-id"]
    assert "access-control-allow-origin" not in bad_preflight.headers


async def test_https_redirect_and_hsts_behind_a_tls_terminating_proxy(service: Service) -> None:
    async with service(https_redirect=True) as (_app, client):
        redirected = await client.post("/auth/token", data={"grant_type": "password"})
    assert redirected.status_code == 307
    assert redirected.headers["location"] == "https://testserver/auth/token"
    assert redirected.headers["x-request-id"]

    async with service(peer=PROXY, trusted_proxies=[PROXY], https_redirect=True) as (_, client):
        served = await client.get("/health/live", headers={"X-Forwarded-Proto": "https"})
        plain = await client.get("/health/live", headers={"X-Forwarded-Proto": "http"})
    assert served.status_code == 200
    assert served.headers["strict-transport-security"].startswith("max-age=")
    assert plain.status_code == 307


async def test_the_redirect_never_points_at_a_foreign_host(service: Service) -> None:
    async with service(https_redirect=True) as (_app, client):
        response = await client.get("/health/live", headers={"Host": "evil.example"})
    assert response.status_code == 400
    assert "location" not in response.headers


def _classes(app: FastAPI) -> list[object]:
    return [middleware.cls for middleware in app.user_middleware]


def test_middleware_order(tmp_path: Path) -> None:
    everything = make_settings(
        tmp_path / "all",
        trusted_proxies=[PROXY],
        https_redirect=True,
        cors_origins=[FRONT_END],
    )
    assert _classes(create_app(everything)) == [
        ProxyHeadersMiddleware,
        RequestIdMiddleware,
        AccessLogMiddleware,
        SecureHeadersMiddleware,
        ServerErrorMiddleware,
        TrustedHostMiddleware,
        HTTPSRedirectMiddleware,
        CORSMiddleware,
        BodyLimitMiddleware,
    ]
    defaults = make_settings(tmp_path / "defaults", allowed_hosts=["*"])
    assert _classes(create_app(defaults)) == [
        RequestIdMiddleware,
        AccessLogMiddleware,
        SecureHeadersMiddleware,
        ServerErrorMiddleware,
        BodyLimitMiddleware,
    ]
