"""Serves the web console's files under ``/app``: no CDN, no build step, no inline code.

The console is three static files (``static/``): one page, its module script and its style
sheet, read once at import. It talks to the JSON API in cookie mode like any other client;
nothing here renders data. ``/app`` redirects to ``/app/`` (the page's relative base);
``/app/static/<name>`` serves only the files listed below, and anything else under ``/app``
is the ordinary 404 problem (no route matches it). Each file is a route with the console's
policy and quota, like the docs' files.
"""

from __future__ import annotations

import hashlib
from importlib.resources import files

from fastapi import APIRouter, FastAPI, Request
from starlette.responses import RedirectResponse, Response

from bastion.dependencies import public
from bastion.routing import PolicyRoute

CONSOLE_PATH = "/app"
STATIC_PATH = f"{CONSOLE_PATH}/static"
INDEX_FILE = "index.html"
INDEX_MEDIA_TYPE = "text/html; charset=utf-8"
# The files index.html loads, and nothing else of the directory.
CONSOLE_FILES = {
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
}
# Unversioned file names: a browser may keep a copy but asks each time (a 304 when the
# ETag still matches), so a new release is never half-loaded from a stale cache.
CACHE_CONTROL = "no-cache"

_STATIC = files("bastion.console") / "static"


class _StaticFile:
    """One file's bytes, media type and strong ETag, computed once."""

    def __init__(self, name: str, media_type: str) -> None:
        self.content = (_STATIC / name).read_bytes()
        self.media_type = media_type
        self.etag = f'"{hashlib.sha256(self.content).hexdigest()[:32]}"'

    def response(self, request: Request) -> Response:
        headers = {"ETag": self.etag, "Cache-Control": CACHE_CONTROL}
        if self.etag in _etags(request.headers.get("if-none-match", "")):
            return Response(status_code=304, headers=headers)
        return Response(self.content, media_type=self.media_type, headers=headers)


def _etags(header: str) -> set[str]:
    return {part.strip().removeprefix("W/") for part in header.split(",") if part.strip()}


router = APIRouter(include_in_schema=False, dependencies=[public()], route_class=PolicyRoute)

_INDEX = _StaticFile(INDEX_FILE, INDEX_MEDIA_TYPE)


@router.get(CONSOLE_PATH)
async def console_root() -> RedirectResponse:
    """``/app`` → ``/app/``: a path, never a URL built from the request's ``Host``."""
    return RedirectResponse(f"{CONSOLE_PATH}/", status_code=308)


@router.get(f"{CONSOLE_PATH}/")
async def console_page(request: Request) -> Response:
    return _INDEX.response(request)


def _serves(name: str, media_type: str) -> None:
    served = _StaticFile(name, media_type)

    async def console_file(request: Request) -> Response:
        return served.response(request)

    router.get(f"{STATIC_PATH}/{name}", name=f"console-static-{name}")(console_file)


for _name, _media_type in CONSOLE_FILES.items():
    _serves(_name, _media_type)


def mount_console(app: FastAPI) -> None:
    app.router.routes.extend(router.routes)  # flat, like bastion.app.add_routes
