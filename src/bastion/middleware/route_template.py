"""The template of the route a request matched (``/notes/{note_id}``), prefix included.

Logs, audit events and rate-limit keys name the template, never the raw path, so that ids
neither split statistics nor mint fresh quotas. ``scope["route"]`` alone is not enough:
for a router included with a prefix, FastAPI puts the router's own route there, whose path
lacks the prefix, and keeps the full template in its per-request route context. bastion's
own routes are added flat, where the two agree; a toolkit user's included routers are not.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# FastAPI (0.165) keeps the included route's effective context here; read defensively, as
# the names are FastAPI's internals, with scope["route"] as the fallback.
_FASTAPI_SCOPE_KEY = "fastapi"
_EFFECTIVE_ROUTE_CONTEXT_KEY = "effective_route_context"


def route_template(scope: Mapping[str, Any]) -> str | None:
    """The matched route's full path template, or None when no route matched."""
    fastapi_scope = scope.get(_FASTAPI_SCOPE_KEY)
    if isinstance(fastapi_scope, dict):
        context = fastapi_scope.get(_EFFECTIVE_ROUTE_CONTEXT_KEY)
        template = getattr(context, "path", None)
        if isinstance(template, str):
            return template
    template = getattr(scope.get("route"), "path", None)
    return template if isinstance(template, str) else None
