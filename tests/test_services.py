"""The route policies work in an app that ``create_app`` did not build, once it installs a
``Services`` and the service's security layer; and an app that forgot to is told so, not
served."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from fastapi import FastAPI

from bastion.app import (
    add_routes,
    build_services,
    install_services,
    service_security,
    start_services,
    stop_services,
)
from bastion.config import Settings
from bastion.dependencies import require
from bastion.identity.router import router as identity_router
from bastion.services import ServicesNotInstalled, services_of
from bastion.storage.migrate import upgrade_to_head
from tests.identity.helpers import bearer, login, register


def own_app(settings: Settings) -> FastAPI:
    """A team's own app: its own FastAPI, bastion's token endpoint and a guarded route."""
    services = build_services(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await start_services(app)
        yield
        await stop_services(services)

    app = FastAPI(lifespan=lifespan, openapi_url=None)
    service_security(services).install(app)  # policies, 401/403/429 as problem details
    install_services(app, services)
    add_routes(app, identity_router)

    @app.get("/reports", dependencies=[require("notes:read")])
    async def reports() -> dict[str, str]:
        return {"reports": "ok"}

    @app.get("/payroll", dependencies=[require("users:read")])
    async def payroll() -> dict[str, str]:
        return {"payroll": "secret"}

    return app


async def test_policies_guard_routes_of_an_app_not_built_by_create_app(
    settings: Settings,
) -> None:
    app = own_app(settings)
    await upgrade_to_head(services_of(app).database.engine)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            assert (await client.get("/reports")).status_code == 401
            assert (await client.get("/reports", headers=bearer("forged"))).status_code == 401
            await register(client, "alice")
            token = (await login(client, "alice"))["access_token"]
            allowed = await client.get("/reports", headers=bearer(token))
            assert allowed.status_code == 200, allowed.text
            assert (await client.get("/payroll", headers=bearer(token))).status_code == 403


def test_an_app_without_services_is_refused_with_a_clear_message() -> None:
    with pytest.raises(ServicesNotInstalled, match="install_services"):
        services_of(FastAPI())
