"""Liveness and readiness for load balancers and orchestrators."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel

from bastion.dependencies import AppDatabase, public
from bastion.errors import unavailable_response
from bastion.routing import PolicyRoute
from bastion.services import services_of
from bastion.storage.outages import Outage

router = APIRouter(prefix="/health", tags=["operations"], route_class=PolicyRoute)


class HealthStatus(BaseModel):
    status: str


# HEAD (used by some load balancers) gets its own undocumented route: one route with both
# methods would give the OpenAPI document a duplicate operation id.
# Neither probe is rate limited: orchestrators and load balancers call them freely, and they
# must answer whatever happens to the rate-limit store: liveness, or an orchestrator would
# restart healthy processes during a Redis outage; readiness, to say which dependency is
# down rather than fail at the quota. Readiness costs a ``SELECT 1`` and a ``PING``.
# Probes call it often and the answer never changes: the body is encoded once, here.
_LIVE_BODY = HealthStatus(status="ok").model_dump_json().encode()
_READY_BODY = _LIVE_BODY


@router.head("/live", include_in_schema=False, dependencies=[public(rate_limit=None)])
@router.get("/live", response_model=HealthStatus, dependencies=[public(rate_limit=None)])
async def live() -> Response:
    """The process serves requests; says nothing about its dependencies."""
    return Response(_LIVE_BODY, media_type="application/json")


# What the readiness probe's 503 says of each dependency, under ``checks``: which one to
# look at. Only the names of the service's own dependencies, never an address or an error.
OK, UNAVAILABLE, STARTING = "ok", "unavailable", "starting"
READINESS_503 = {
    "description": (
        "the database or Redis does not answer; `checks` names each dependency's state, "
        'e.g. `{"database": "ok", "redis": "unavailable"}` (`redis` only when configured; '
        '`"starting"` while start-up work waits for the database)'
    ),
}


@router.head("/ready", include_in_schema=False, dependencies=[public(rate_limit=None)])
@router.get(
    "/ready",
    responses={503: READINESS_503},
    dependencies=[public(rate_limit=None)],
    response_model=HealthStatus,
)
async def ready(database: AppDatabase, request: Request) -> Response:
    """The database (and Redis, when configured) answer; a 503 tells a load balancer to
    send traffic elsewhere, and its ``checks`` tell the operator which dependency is down."""
    services = services_of(request.app)
    revocations = services.authenticator.revocations
    if services.keys.available:
        database_ok, redis_ok = await asyncio.gather(database.ping(), revocations.ping())
        database_state = OK if database_ok else UNAVAILABLE
    else:  # start-up work still waits for the database: no need to ask it
        redis_ok = await revocations.ping()
        database_state = STARTING
    if database_state == OK and redis_ok:
        return Response(_READY_BODY, media_type="application/json")
    checks = {"database": database_state}
    if services.settings.redis_url is not None:
        checks["redis"] = OK if redis_ok else UNAVAILABLE
    if database_state == STARTING:
        outage = Outage("database", "StartUpIncomplete")
    else:
        outage = Outage("database" if database_state == UNAVAILABLE else "redis",
                        "ReadinessProbeFailed")
    return unavailable_response(request, outage, extensions={"checks": checks})
