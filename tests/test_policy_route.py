"""``PolicyRoute`` checks a route's policy before FastAPI solves its dependencies, with the
same outcome as the policy dependency: 401 before 403, audited denials, the principal handed
to whatever asked for it; and it falls back to FastAPI where it cannot do that."""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.routing import APIRoute

from bastion.app import create_app
from bastion.audit.events import AuditEventType
from bastion.audit.service import list_events
from bastion.dependencies import BearerToken, CurrentPrincipal, authenticated, public, require
from bastion.routing import PolicyRoute
from bastion.security.principal import Principal
from bastion.security.tokens import access_token_claims
from bastion.storage.deadlines import deadline_for
from bastion.storage.migrate import upgrade_to_head
from tests.conftest import FAST_HASHING, make_settings
from tests.identity.helpers import bearer

NotesReader = Annotated[Principal, require("notes:read")]


async def note_owner(principal: NotesReader) -> str:
    """A dependency of its own that asks for the principal, like ``VisibleNote``."""
    return principal.user_id


Owner = Annotated[str, Depends(note_owner)]


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[FastAPI]:
    """SQLite only (conftest's ``client`` uses this app): the policies touch no database."""
    application = create_app(make_settings(tmp_path / "data", **FAST_HASHING))
    await upgrade_to_head(application.state.bastion.database.engine)
    async with application.router.lifespan_context(application):
        yield application


async def token(app: FastAPI, *scopes: str, subject: str | None = None) -> str:
    """An access token signed by the app's key ring, without a login."""
    services = app.state.bastion
    ring = await services.keys.ring()
    claims = access_token_claims(
        issuer=services.settings.issuer,
        audience=services.settings.audience,
        subject=subject or str(uuid.uuid4()),
        session_id=str(uuid.uuid4()),
        scopes=list(scopes),
        lifetime=900,
        now=int(time.time()),
    )
    return str(ring.sign(claims))


@pytest.fixture
def policy_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records every call FastAPI makes to a bearer-token policy as a dependency."""
    calls: list[str] = []
    original = BearerToken.__call__

    @functools.wraps(original)  # FastAPI reads the signature through __wrapped__
    async def recording(self: BearerToken, *args: Any, **kwargs: Any) -> Principal:
        calls.append("bearer")
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(BearerToken, "__call__", recording)
    return calls


def _innermost(asgi_app: Any) -> Any:
    """Under a route's body limit (FastAPI's max_body_size), the handler it wraps."""
    while hasattr(asgi_app, "app"):
        asgi_app = asgi_app.app
    return asgi_app


def test_create_app_serves_every_api_route_with_the_policy_check_first(app: FastAPI) -> None:
    assert app.router.route_class is PolicyRoute
    routes = [
        route
        for route in app.router.routes
        if getattr(route, "methods", None) and route.path != "/openapi.json"  # type: ignore[attr-defined]
    ]
    handlers = {_innermost(route.app).__qualname__ for route in routes}  # type: ignore[attr-defined]
    assert handlers == {"request_response.<locals>.app"}
    for route in routes:
        if isinstance(route, APIRoute) and (route.methods or set()) & {"POST", "PATCH", "PUT"}:
            assert route.max_body_size is not None, route.path
            assert isinstance(route, PolicyRoute), route.path


async def test_the_principal_reaches_every_parameter_without_solving_the_policy(
    app: FastAPI, client: httpx.AsyncClient, policy_calls: list[str]
) -> None:
    @app.get("/direct")
    async def direct(principal: NotesReader) -> dict[str, str]:
        return {"user": principal.user_id}

    @app.get("/with-request")
    async def with_request(request: Request, who: CurrentPrincipal) -> dict[str, str]:
        return {"user": who.user_id, "path": request.url.path}

    @app.get("/sync")
    def sync(principal: NotesReader) -> dict[str, str]:
        return {"user": principal.user_id}

    @app.get("/nested", dependencies=[require("notes:read")])
    async def nested(owner: Owner) -> dict[str, str]:
        return {"user": owner}

    user = str(uuid.uuid4())
    headers = bearer(await token(app, "notes:read", subject=user))
    for path in ("/direct", "/with-request", "/sync", "/nested"):
        anonymous = await client.get(path)
        assert anonymous.status_code == 401, path
        response = await client.get(path, headers=headers)
        assert response.status_code == 200, (path, response.text)
        assert response.json()["user"] == user
    assert (await client.get("/with-request", headers=headers)).json()["path"] == "/with-request"
    assert policy_calls == []


async def test_401_comes_before_403_and_the_first_failing_policy_answers(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    @app.get("/two", dependencies=[require("audit:read")])
    async def two(principal: NotesReader) -> dict[str, str]:
        return {"user": principal.user_id}

    assert (await client.get("/two")).status_code == 401
    assert (await client.get("/two", headers=bearer("forged"))).status_code == 401
    user = str(uuid.uuid4())
    headers = {**bearer(await token(app, "notes:read", subject=user)), "X-Request-ID": "two-1"}
    denied = await client.get("/two", headers=headers)
    assert denied.status_code == 403
    async with app.state.bastion.database.transaction() as session:
        (event,) = await list_events(session, type=AuditEventType.ACCESS_DENIED, limit=10)
    assert (event.actor_id, event.request_id) == (user, "two-1")
    assert event.details == {"method": "GET", "route": "/two", "missing": "audit:read"}

    both = bearer(await token(app, "notes:read", "audit:read"))
    assert (await client.get("/two", headers=both)).status_code == 200


async def test_a_refused_token_is_answered_before_the_body_is_read(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    @app.post("/write", dependencies=[require("notes:write")])
    async def write(body: dict[str, str]) -> dict[str, str]:
        return body

    malformed = await client.post(
        "/write", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert malformed.status_code == 401
    headers = bearer(await token(app, "notes:write"))
    ok = await client.post("/write", json={"a": "b"}, headers=headers)
    assert ok.json() == {"a": "b"}


async def test_a_route_is_counted_once_per_request_against_the_first_policy(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    @app.get("/counted", dependencies=[public(), authenticated()])
    async def counted() -> None: ...

    headers = bearer(await token(app))
    first = await client.get("/counted", headers=headers)
    second = await client.get("/counted", headers=headers)
    assert first.status_code == second.status_code == 200
    # public() comes first: counted per address, once a request (r drops by one).
    remaining = [int(r.headers["ratelimit"].split("r=")[1].split(";")[0]) for r in (first, second)]
    assert remaining[0] - remaining[1] == 1
    assert len(second.headers.get_list("ratelimit")) == 1


async def test_an_overridden_policy_is_served_by_fastapi(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    @app.get("/overridden")
    async def overridden(principal: NotesReader) -> dict[str, str]:
        return {"user": principal.user_id}

    fake = Principal("someone", "s", "t", frozenset({"notes:read"}), 0, 0)
    policy = require("notes:read").dependency
    app.dependency_overrides[policy] = lambda: fake
    try:
        assert (await client.get("/overridden")).json() == {"user": "someone"}
    finally:
        app.dependency_overrides.clear()
    assert (await client.get("/overridden")).status_code == 401


async def test_an_included_policy_router_keeps_its_prefix_and_router_policy(
    app: FastAPI, client: httpx.AsyncClient, policy_calls: list[str]
) -> None:
    router = APIRouter(route_class=PolicyRoute)

    @router.get("/items/{item_id}")
    async def item(item_id: str, principal: NotesReader) -> dict[str, str]:
        return {"item": item_id, "user": principal.user_id}

    app.include_router(router, prefix="/inside", dependencies=[require("audit:read")])
    narrow = bearer(await token(app, "notes:read"))
    first = await client.get("/inside/items/1")
    assert first.status_code == 401, first.text
    assert (await client.get("/inside/items/1", headers=narrow)).status_code == 403
    both = bearer(await token(app, "notes:read", "audit:read"))
    response = await client.get("/inside/items/1", headers=both)
    assert response.json()["item"] == "1"
    # An included router's route is FastAPI's: its dependant carries the router's policy.
    assert policy_calls


async def _two_deadlines() -> dict[str, bool]:
    """Whether two units of work, 10 ms apart, would end at the same moment."""
    first = deadline_for(time.monotonic(), 5.0)
    await asyncio.sleep(0.01)
    return {"shared": deadline_for(time.monotonic(), 5.0) == first}


async def test_every_request_a_policy_route_serves_has_one_storage_deadline(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """A login is two units of work: they share one deadline, so a frozen database answers
    503 within the timeout, not twice it (issue 11, finding 3)."""
    app.get("/deadline/public", dependencies=[public()])(_two_deadlines)
    app.get("/deadline/unguarded")(_two_deadlines)  # no policy: still a PolicyRoute
    router = APIRouter(route_class=PolicyRoute)
    router.get("/deadline/included", dependencies=[public()])(_two_deadlines)
    app.include_router(router)
    for path in ("/deadline/public", "/deadline/unguarded", "/deadline/included"):
        assert (await client.get(path)).json() == {"shared": True}, path
    assert not (await _two_deadlines())["shared"]  # outside a request: a deadline per step
