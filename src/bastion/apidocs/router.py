"""Interactive docs served from installed files: no CDN, so they work offline and the docs
CSP can forbid every other host."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import orjson
from fastapi import APIRouter, FastAPI, Request
from starlette.responses import FileResponse, HTMLResponse, Response
from swagger_ui_bundle import swagger_ui_path

from bastion.dependencies import public
from bastion.routing import PolicyRoute

DOCS_PATH = "/docs"
OPENAPI_PATH = "/openapi.json"
_INIT_SCRIPT = (files("bastion.apidocs") / "swagger-init.js").read_bytes()
_PAGE = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>bastion API</title>
<link rel="stylesheet" href="{DOCS_PATH}/static/swagger-ui.css">
<link rel="icon" type="image/png" href="{DOCS_PATH}/static/favicon-32x32.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{DOCS_PATH}/static/swagger-ui-bundle.js"></script>
<script src="{DOCS_PATH}/swagger-init.js"></script>
</body>
</html>
"""

router = APIRouter(include_in_schema=False, dependencies=[public()], route_class=PolicyRoute)


@router.get(OPENAPI_PATH)
async def openapi_document(request: Request) -> Response:
    """The document, with the docs' policy and quota like every route but the health
    probes (FastAPI's own ``openapi_url`` route has neither)."""
    return Response(_rendered(request.app), media_type="application/json")


_RENDERED_KEY = "bastion.openapi_json"


def _rendered(app: FastAPI) -> bytes:
    rendered: bytes | None = getattr(app.state, _RENDERED_KEY, None)
    if rendered is None:
        rendered = orjson.dumps(app.openapi())
        setattr(app.state, _RENDERED_KEY, rendered)
    return rendered


@router.get(DOCS_PATH)
async def docs_page() -> HTMLResponse:
    return HTMLResponse(_PAGE)


@router.get(f"{DOCS_PATH}/swagger-init.js")
async def docs_init_script() -> Response:
    return Response(_INIT_SCRIPT, media_type="text/javascript")


# The files the page above loads, and nothing else of the bundle: not its stock index.html
# (which points at petstore.swagger.io), oauth2-redirect.html or source maps. Each is a
# route with the docs' policy and quota, like the page.
_BUNDLE = Path(str(swagger_ui_path))
DOCS_FILES = {
    "swagger-ui.css": "text/css; charset=utf-8",
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "favicon-32x32.png": "image/png",
}


def _serves(name: str, media_type: str) -> None:
    path = _BUNDLE / name

    async def docs_file() -> FileResponse:
        return FileResponse(path, media_type=media_type)

    router.get(f"{DOCS_PATH}/static/{name}", name=f"docs-static-{name}")(docs_file)


for _name, _media_type in DOCS_FILES.items():
    _serves(_name, _media_type)


def mount_docs(app: FastAPI) -> None:
    app.router.routes.extend(router.routes)  # flat, like bastion.app.add_routes


def self_hosted_docs(app: FastAPI) -> None:
    """A toolkit app that kept FastAPI's default ``/docs``: its page loads Swagger UI from a
    CDN, which the docs' CSP refuses, so it would render blank. Served from these files
    instead, under the same path, with the app's own ``/openapi.json``."""
    if app.docs_url != DOCS_PATH or app.openapi_url != OPENAPI_PATH:
        return  # turned off, or moved: left as the app declared it
    app.router.routes[:] = [
        route for route in app.router.routes if getattr(route, "path", None) != DOCS_PATH
    ]
    app.router.routes.extend(
        route for route in router.routes if getattr(route, "path", None) != OPENAPI_PATH
    )
    app.state.public_paths.discard(DOCS_PATH)
