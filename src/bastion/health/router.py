"""Liveness and readiness for load balancers and orchestrators."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from bastion.dependencies import AppDatabase
from bastion.storage import StorageUnavailable

router = APIRouter(prefix="/health", tags=["operations"])


class HealthStatus(BaseModel):
    status: str


@router.api_route("/live", methods=["GET", "HEAD"])
async def live() -> HealthStatus:
    """The process serves requests; says nothing about its dependencies."""
    return HealthStatus(status="ok")


@router.api_route(
    "/ready",
    methods=["GET", "HEAD"],
    responses={503: {"description": "the database does not answer"}},
)
async def ready(database: AppDatabase) -> HealthStatus:
    """The database answers; a 503 tells a load balancer to send traffic elsewhere."""
    if not await database.ping():
        raise StorageUnavailable
    return HealthStatus(status="ok")
