"""Serves the web console's files under ``/app``: no CDN, no build step, no inline code."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from bastion.dependencies import public
from bastion.routing import PolicyRoute

CONSOLE_PATH = "/app"

router = APIRouter(include_in_schema=False, dependencies=[public()], route_class=PolicyRoute)


def mount_console(app: FastAPI) -> None:
    app.router.routes.extend(router.routes)  # flat, like bastion.app.add_routes
