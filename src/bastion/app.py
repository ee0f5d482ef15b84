"""``create_app`` is the one place where middleware order and routers are wired.

Request path, outermost first: request id → access log → secure headers → server errors →
body limit → router. Secure headers sit outside the server-error catcher so even a 500 has
them; the access log sits outside both so it records the final status.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from starlette.middleware import Middleware

from bastion import __version__
from bastion.apidocs.router import mount_docs
from bastion.config import Settings
from bastion.errors import install_problem_handlers
from bastion.health.router import router as health_router
from bastion.logs import configure_logging
from bastion.middleware import (
    AccessLogMiddleware,
    BodyLimitMiddleware,
    RequestIdMiddleware,
    SecureHeadersMiddleware,
    ServerErrorMiddleware,
)
from bastion.storage import Database

TOKEN_URL = "/auth/token"  # noqa: S105 (a path, not a secret)
OAUTH2_SCHEME_NAME = "OAuth2PasswordBearer"


def _middleware(settings: Settings) -> list[Middleware]:
    return [
        Middleware(RequestIdMiddleware),
        Middleware(AccessLogMiddleware),
        Middleware(SecureHeadersMiddleware),
        Middleware(ServerErrorMiddleware),
        Middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes),
    ]


def _openapi_with_password_flow(app: FastAPI) -> dict[str, Any]:
    """The spec, declaring the OAuth2 password flow so Swagger UI's Authorize works."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
        schemes.setdefault(
            OAUTH2_SCHEME_NAME,
            {"type": "oauth2", "flows": {"password": {"tokenUrl": TOKEN_URL, "scopes": {}}}},
        )
        app.openapi_schema = schema
    return app.openapi_schema


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    database = Database.from_settings(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        await database.dispose()

    app = FastAPI(
        title="bastion",
        version=__version__,
        description="A secure-by-default API: accounts, tokens, access control, audit.",
        docs_url=None,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
        openapi_url="/openapi.json",
        middleware=_middleware(settings),
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.database = database
    install_problem_handlers(app)
    app.include_router(health_router)
    mount_docs(app)
    app.openapi = lambda: _openapi_with_password_flow(app)  # type: ignore[method-assign]
    return app


def app_from_environment() -> FastAPI:
    """The uvicorn factory: each worker process reads the environment and sets up logging."""
    settings = Settings()
    configure_logging(settings.log_level)
    return create_app(settings)
