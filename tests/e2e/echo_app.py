"""The service plus two test-only routes, served by the same hardened uvicorn set-up.

The service has no route yet that reads a JSON body or fails unexpectedly; these two let the
end-to-end tests drive the body limit, validation and the 500 path through the real server:

- ``POST /echo`` takes a strict model (unknown fields rejected) and returns the name only;
- ``GET /boom`` raises an exception whose message looks like internals that must never leak.
"""

from __future__ import annotations

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict

from bastion.app import app_from_environment
from bastion.dependencies import public

BOOM_MESSAGE = "secret-internal-detail /etc/passwd SELECT * FROM users"


class EchoIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    password: str


class EchoOut(BaseModel):
    name: str


def create_echo_app() -> FastAPI:
    app = app_from_environment()

    @app.post("/echo", dependencies=[public()])
    async def echo(body: EchoIn) -> EchoOut:
        return EchoOut(name=body.name)

    @app.get("/boom", dependencies=[public()])
    async def boom() -> None:
        raise RuntimeError(BOOM_MESSAGE)

    return app
