"""Liveness and readiness for load balancers and orchestrators."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel

from bastion.dependencies import AppDatabase, public
from bastion.ratelimiting import RATE_LIMITED_RESPONSES
from bastion.routing import PolicyRoute
from bastion.services import services_of
from bastion.storage import StorageUnavailable
from bastion.storage.outages import Outage

router = APIRouter(prefix="/health", tags=["operations"], route_class=PolicyRoute)


class HealthStatus(BaseModel):
    status: str


# HEAD (used by some load balancers) gets its own undocumented route: one route with both
# methods would give the OpenAPI document a duplicate operation id.
# Liveness is not rate limited: it must answer whatever happens to the rate-limit store, or
# an orchestrator would restart healthy processes during a Redis outage.
# Probes call it often and the answer never changes: the body is encoded once, here.
_LIVE_BODY = HealthStatus(status="ok").model_dump_json().encode()


@router.head("/live", include_in_schema=False, dependencies=[public(rate_limit=None)])
@router.get("/live", response_model=HealthStatus, dependencies=[public(rate_limit=None)])
async def live() -> Response:
    """The process serves requests; says nothing about its dependencies."""
    return Response(_LIVE_BODY, media_type="application/json")


@router.head("/ready", include_in_schema=False, dependencies=[public()])
@router.get(
    "/ready",
    responses={
        503: {"description": "the database or Redis does not answer"},
        **RATE_LIMITED_RESPONSES,
    },
    dependencies=[public()],
)
async def ready(database: AppDatabase, request: Request) -> HealthStatus:
    """The database (and Redis, when configured) answer; a 503 tells a load balancer to
    send traffic elsewhere."""
    services = services_of(request.app)
    if not services.keys.available:  # start-up work still waits for the database
        raise StorageUnavailable(outage=Outage("database", "StartUpIncomplete"))
    authenticator = services.authenticator
    database_ok, revocations_ok = await asyncio.gather(
        database.ping(), authenticator.revocations.ping()
    )
    if not database_ok:
        raise StorageUnavailable(outage=Outage("database", "ReadinessProbeFailed"))
    if not revocations_ok:
        raise StorageUnavailable(outage=Outage("redis", "ReadinessProbeFailed"))
    return HealthStatus(status="ok")
