"""A resource server that trusts a bastion service's access tokens.

It holds no keys and no database of bastion's: it verifies each bearer token with the
public keys bastion publishes at ``/.well-known/jwks.json`` and, with ``RESOURCE_REDIS_URL``
(the same Redis as bastion's ``BASTION_REDIS_URL``), refuses at once the tokens bastion
revoked: a logout, a password change, a disabled account.

Configured by environment variables (defaults: a ``make run`` bastion on this host):

- ``RESOURCE_JWKS_URL``: bastion's JWKS, ``http://127.0.0.1:8000/.well-known/jwks.json``
- ``RESOURCE_ISSUER``: bastion's ``BASTION_ISSUER``, ``http://127.0.0.1:8000``
- ``RESOURCE_AUDIENCE``: bastion's ``BASTION_AUDIENCE``, ``bastion``
- ``RESOURCE_REDIS_URL``: bastion's ``BASTION_REDIS_URL``; unset, a revoked token keeps
  working here until it expires (15 minutes by default)

Run it with ``uvicorn app:app --app-dir examples/resource_server --port 8001``.
"""

from __future__ import annotations

import os
from typing import Annotated, Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from bastion.toolkit import BastionSecurity, JwksAuthenticator, Principal, public, require

BASTION = "http://127.0.0.1:8000"

authenticator = JwksAuthenticator(
    jwks_url=os.environ.get("RESOURCE_JWKS_URL", f"{BASTION}/.well-known/jwks.json"),
    issuer=os.environ.get("RESOURCE_ISSUER", BASTION),
    audience=os.environ.get("RESOURCE_AUDIENCE", "bastion"),
    redis_url=os.environ.get("RESOURCE_REDIS_URL") or None,
)
security = BastionSecurity(
    authenticator=authenticator,
    # This app's permission names: bastion grants them in a token's scope (a plain user
    # has notes:read; audit:read takes the auditor or admin role).
    permissions={"notes:read", "audit:read"},
    rate_limit=None,
)
# No interactive docs: FastAPI's pages load scripts from a CDN, which the security headers'
# Content-Security-Policy refuses, and every route must declare a policy.
app = FastAPI(
    title="reports (a bastion resource server)",
    lifespan=security.lifespan,
    docs_url=None,
    redoc_url=None,
    openapi_url=None,
)


@app.get("/reports")
async def reports(reader: Annotated[Principal, require("notes:read")]) -> dict[str, Any]:
    """Anyone whose token holds ``notes:read``; the policy hands over who it verified."""
    return {"reader_id": reader.user_id, "items": [{"id": 1, "title": "Quarterly numbers"}]}


@app.get("/audit-summary", dependencies=[require("audit:read")])
async def audit_summary() -> dict[str, Any]:
    """Auditors and admins only: a plain user's token lacks ``audit:read`` (403)."""
    return {"events_today": 42}


@app.get("/health", dependencies=[public()])
async def health() -> JSONResponse:
    """200 when this server can decide on a token now: bastion's keys loaded and, when
    configured, Redis answering; 503 otherwise."""
    if await authenticator.ready():
        return JSONResponse({"status": "ok"})
    return JSONResponse({"status": "unavailable"}, status_code=503)
