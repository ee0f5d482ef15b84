"""The route template that logs, audit events and rate-limit keys name."""

from __future__ import annotations

import httpx
from fastapi import APIRouter, FastAPI, Request

from bastion.middleware.route_template import route_template


async def test_the_template_includes_an_included_routers_prefix() -> None:
    app = FastAPI()
    router = APIRouter()

    @router.get("/items/{item_id}")
    async def item(item_id: str, request: Request) -> dict[str, str | None]:
        return {"template": route_template(request.scope)}

    @app.get("/flat/{item_id}")
    async def flat(item_id: str, request: Request) -> dict[str, str | None]:
        return {"template": route_template(request.scope)}

    app.include_router(router, prefix="/v1")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        assert (await client.get("/v1/items/3")).json() == {"template": "/v1/items/{item_id}"}
        assert (await client.get("/flat/3")).json() == {"template": "/flat/{item_id}"}


def test_no_route_no_template() -> None:
    assert route_template({"type": "http", "path": "/nope"}) is None
