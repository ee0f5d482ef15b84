"""Deny by default: every route declares a policy, or the application refuses to start.

The refusal tests build their own app (the ``app`` fixture has started already when a test
body runs), add a route the way a toolkit user would, migrate, and enter the lifespan.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from bastion.apidocs.openapi import BROWSER_SESSION_SCHEME
from bastion.app import create_app
from bastion.audit.events import AuditEventType
from bastion.audit.service import list_events
from bastion.dependencies import (
    OAUTH2_SCHEME_NAME,
    CurrentPrincipal,
    authenticated,
    public,
    require,
)
from bastion.route_inventory import UnguardedRoutes, route_policies, unguarded_routes
from bastion.storage import Database
from bastion.storage.migrate import upgrade_to_head
from bastion.toolkit import UnknownPermissions
from tests.conftest import FAST_HASHING, make_settings
from tests.identity.helpers import bearer, login, register


@pytest.fixture
async def service_app(tmp_path: Path) -> AsyncIterator[FastAPI]:
    """The service app, built but neither migrated nor started."""
    application = create_app(make_settings(tmp_path / "data", **FAST_HASHING))
    yield application
    # The lifespan, when it refused to start, never reached its own dispose.
    database: Database = application.state.bastion.database
    await database.dispose()


@pytest.fixture
async def fresh_app(service_app: FastAPI) -> FastAPI:
    """Migrated but not started: a test adds routes, then starts it."""
    await upgrade_to_head(service_app.state.bastion.database.engine)
    return service_app


async def start(app: FastAPI) -> None:
    async with app.router.lifespan_context(app):
        pass


async def plain_endpoint(request: Request) -> PlainTextResponse:
    return PlainTextResponse("raw")


# --- refusing to start ------------------------------------------------------------------------


async def test_the_service_starts_as_shipped(fresh_app: FastAPI) -> None:
    await start(fresh_app)


async def test_a_route_without_a_policy_stops_the_app_from_starting(fresh_app: FastAPI) -> None:
    @fresh_app.get("/mine")
    async def mine() -> dict[str, str]:
        return {"secret": "everyone can read this"}

    with pytest.raises(UnguardedRoutes) as refused:
        await start(fresh_app)
    assert refused.value.offenders == ["GET /mine"]
    assert "GET /mine" in str(refused.value)
    assert "refusing to start" in str(refused.value)


async def test_every_unguarded_route_is_named_not_just_the_first(fresh_app: FastAPI) -> None:
    @fresh_app.get("/one")
    async def one() -> None: ...

    @fresh_app.delete("/two/{item}")
    async def two(item: int) -> None: ...

    with pytest.raises(UnguardedRoutes) as refused:
        await start(fresh_app)
    assert refused.value.offenders == ["GET /one", "DELETE /two/{item}"]


async def test_a_route_of_an_included_router_without_a_policy_is_refused(
    fresh_app: FastAPI,
) -> None:
    router = APIRouter(prefix="/things")

    @router.post("/stuff")
    async def stuff() -> None: ...

    fresh_app.include_router(router)
    with pytest.raises(UnguardedRoutes) as refused:
        await start(fresh_app)
    assert refused.value.offenders == ["POST /things/stuff"]


async def test_a_router_that_declares_public_covers_its_routes(fresh_app: FastAPI) -> None:
    router = APIRouter(prefix="/open", dependencies=[public()])

    @router.get("/page")
    async def page() -> None: ...

    fresh_app.include_router(router)
    await start(fresh_app)
    assert ("GET", "/open/page", "public") in route_policies(fresh_app)


async def test_a_policy_given_at_include_time_covers_the_routes(fresh_app: FastAPI) -> None:
    router = APIRouter()

    @router.get("/team")
    async def team() -> None: ...

    fresh_app.include_router(router, prefix="/inside", dependencies=[authenticated()])
    await start(fresh_app)
    assert ("GET", "/inside/team", "authenticated") in route_policies(fresh_app)


async def test_a_raw_starlette_route_is_refused_unless_named_public(fresh_app: FastAPI) -> None:
    fresh_app.router.routes.append(Route("/raw", plain_endpoint))
    with pytest.raises(UnguardedRoutes) as refused:
        await start(fresh_app)
    assert refused.value.offenders == ["Route /raw"]

    fresh_app.state.public_paths = {*fresh_app.state.public_paths, "/raw"}
    await start(fresh_app)


async def test_a_mount_is_refused_unless_named_public(
    fresh_app: FastAPI, tmp_path: Path
) -> None:
    (tmp_path / "files").mkdir()
    fresh_app.mount("/files", StaticFiles(directory=tmp_path / "files"))
    fresh_app.mount("/sub", Mount("", routes=[Route("/inner", plain_endpoint)]))
    with pytest.raises(UnguardedRoutes) as refused:
        await start(fresh_app)
    assert refused.value.offenders == ["Mount /files", "Mount /sub"]

    fresh_app.state.public_paths = {*fresh_app.state.public_paths, "/files", "/sub"}
    await start(fresh_app)


# --- what routes declare ----------------------------------------------------------------------


async def test_every_route_of_the_service_declares_a_policy(service_app: FastAPI) -> None:
    application = service_app
    policies = route_policies(application)
    assert policies, "no routes found"
    assert [entry for entry in policies if entry[2] is None] == []
    assert unguarded_routes(application) == []
    assert ("GET", "/health/live", "public") in policies
    assert ("POST", "/auth/token", "public") in policies
    assert ("GET", "/auth/me", "authenticated") in policies
    assert ("GET", "/docs/static/swagger-ui.css", "public") in policies
    assert not [entry for entry in policies if entry[0] == "Mount"]  # no file tree is served
    assert ("GET", "/openapi.json", "public") in policies  # metered like the docs
    # The contract gives every /notes and /admin route a permission, not just a login.
    for methods, path, policy in policies:
        if path.startswith(("/notes", "/admin")):
            assert policy is not None
            assert policy.startswith("require: "), (methods, path, policy)


async def test_a_policy_needed_by_a_dependency_counts(service_app: FastAPI) -> None:
    application = service_app

    @application.get("/whoami")
    async def whoami(principal: CurrentPrincipal) -> str:
        return principal.user_id

    @application.get("/both", dependencies=[public(), require("audit:read")])
    async def both() -> None: ...

    policies = route_policies(application)
    assert ("GET", "/whoami", "authenticated") in policies
    # The strictest declaration wins.
    assert ("GET", "/both", "require: audit:read") in policies


def test_a_requirement_of_no_permission_fails_at_declaration() -> None:
    with pytest.raises(ValueError, match="at least one permission"):
        require()


@pytest.mark.parametrize(
    "permissions",
    [("nonsense:perm",), ("notes:read", "notes:destroy"), ("NOTES:READ",)],
)
async def test_an_unknown_permission_stops_the_app_at_start(
    fresh_app: FastAPI, permissions: tuple[str, ...]
) -> None:
    """Permission names are the app's own (BastionSecurity(permissions=...)): one the app
    does not have is found when it starts, naming the route, never a 500 per request."""

    @fresh_app.get("/odd", dependencies=[require(*permissions)])
    async def odd() -> None: ...

    with pytest.raises(UnknownPermissions, match="GET /odd"):
        async with fresh_app.router.lifespan_context(fresh_app):
            pass


# --- enforcing a permission -------------------------------------------------------------------


def add_notes_reader(app: FastAPI) -> None:
    @app.get("/mine", dependencies=[require("notes:read")])
    async def mine() -> dict[str, str]:
        return {"notes": "mine"}


async def test_a_permission_route_answers_401_403_and_200(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    add_notes_reader(app)
    user = await register(client, "alice")

    anonymous = await client.get("/mine")
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
    assert anonymous.headers["content-type"] == "application/problem+json"

    garbage = await client.get("/mine", headers=bearer("not-a-token"))
    assert garbage.status_code == 401
    assert 'error="invalid_token"' in garbage.headers["www-authenticate"]

    narrow = await login(client, "alice", scope="notes:write")
    assert narrow["scope"] == "notes:write"
    denied = await client.get(
        "/mine", headers={**bearer(narrow["access_token"]), "X-Request-ID": "denied-1"}
    )
    assert denied.status_code == 403
    assert denied.headers["content-type"] == "application/problem+json"
    assert denied.json()["status"] == 403

    database: Database = app.state.bastion.database
    async with database.transaction() as session:
        events = await list_events(session, type=AuditEventType.ACCESS_DENIED, limit=10)
    (event,) = events
    assert (event.outcome, event.actor_id) == ("denied", user["id"])
    assert event.request_id == "denied-1"
    assert event.details == {"method": "GET", "route": "/mine", "missing": "notes:read"}

    full = await login(client, "alice")
    allowed = await client.get("/mine", headers=bearer(full["access_token"]))
    assert allowed.status_code == 200, allowed.text
    assert allowed.json() == {"notes": "mine"}


async def test_an_authenticated_route_needs_a_token_but_no_permission(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    @app.get("/anyone-logged-in", dependencies=[authenticated()])
    async def anyone() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/principal")
    async def principal(who: CurrentPrincipal) -> dict[str, str]:
        return {"user_id": who.user_id}

    user = await register(client, "bob")
    assert (await client.get("/anyone-logged-in")).status_code == 401
    tokens = await login(client, "bob", scope="notes:write")
    response = await client.get("/anyone-logged-in", headers=bearer(tokens["access_token"]))
    assert response.status_code == 200
    me = await client.get("/principal", headers=bearer(tokens["access_token"]))
    assert me.json() == {"user_id": user["id"]}


# --- the OpenAPI document ---------------------------------------------------------------------


async def test_the_openapi_document_shows_each_routes_security_requirement(
    service_app: FastAPI,
) -> None:
    application = service_app
    add_notes_reader(application)

    @application.get("/logged-in", dependencies=[authenticated()])
    async def logged_in() -> None: ...

    paths = application.openapi()["paths"]
    assert paths["/mine"]["get"]["security"] == [{OAUTH2_SCHEME_NAME: ["notes:read"]}]
    assert paths["/logged-in"]["get"]["security"] == [{OAUTH2_SCHEME_NAME: []}]
    # The browser session is stated once, for the console: API clients use the token.
    schemes = application.openapi()["components"]["securitySchemes"]
    assert schemes[BROWSER_SESSION_SCHEME]["in"] == "cookie"
    assert "security" not in paths["/health/live"]["get"]
    assert "security" not in paths["/auth/register"]["post"]
