"""The two apps the throughput benchmark serves: a bare FastAPI route, and the same route
behind bastion's whole stack (middleware, require() with a bearer token)."""

from __future__ import annotations

import os
from typing import Annotated

from fastapi import FastAPI

from bastion.app import app_from_environment
from bastion.dependencies import require
from bastion.security.principal import Principal


def bare() -> FastAPI:
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/bench")
    async def bench() -> dict[str, str]:
        return {"status": "ok"}

    return app


def guarded() -> FastAPI:
    os.environ.setdefault("BASTION_LOG_LEVEL", "INFO")
    app = app_from_environment()

    @app.get("/bench")
    async def bench(principal: Annotated[Principal, require("notes:read")]) -> dict[str, str]:
        return {"status": "ok", "user": principal.user_id}

    return app


def bare_with_bastions_routes() -> FastAPI:
    """The bare route behind bastion's route table (FastAPI matches routes one by one, so
    the table's length costs both apps alike) but none of its security."""
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    app.router.routes.extend(app_from_environment().router.routes)

    @app.get("/bench")
    async def bench() -> dict[str, str]:
        return {"status": "ok"}

    return app

