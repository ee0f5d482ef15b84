"""The apps the benchmarks serve beside bastion: bare FastAPI routes, each the baseline of
one target in docs/performance.md, and the old throughput.py's ``guarded`` app.

The ORM baselines follow the full-stack FastAPI template (``backend/app/api/deps.py``): a
session per request from a dependency, then ``session.get(Model, id)``, on the very SQLite
file bastion serves, so both read the same row through the same driver (aiosqlite).
``BENCH_DATABASE_URL`` names that file; the bench sets it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException
from pydantic import BaseModel, ConfigDict
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from bastion.app import app_from_environment
from bastion.dependencies import require
from bastion.identity.schemas import UserPublic
from bastion.security.principal import Principal
from bastion.storage.tables import Note, User


def _bare_app() -> FastAPI:
    return FastAPI(openapi_url=None, docs_url=None, redoc_url=None)


def bare() -> FastAPI:
    """A constant JSON answer: the cheapest route FastAPI serves."""
    app = _bare_app()

    @app.get("/bench")
    async def bench() -> dict[str, str]:
        return {"status": "ok"}

    return app


class _NoteOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    owner_id: uuid.UUID
    title: str
    body: str
    created_at: datetime
    updated_at: datetime


_sessions: list[async_sessionmaker[AsyncSession]] = []


async def _session() -> AsyncIterator[AsyncSession]:
    async with _sessions[0]() as opened:
        yield opened


# Module level: FastAPI resolves the (postponed) annotations in the module's namespace.
Session = Annotated[AsyncSession, Depends(_session)]


def orm() -> FastAPI:
    """``GET /bench/users/{id}`` and ``GET /bench/notes/{id}``: one ``session.get`` each,
    no authentication, no middleware."""
    engine = create_async_engine(os.environ["BENCH_DATABASE_URL"])
    _sessions[:] = [async_sessionmaker(engine, expire_on_commit=False)]
    app = _bare_app()

    @app.get("/bench/users/{user_id}")
    async def read_user(user_id: uuid.UUID, db: Session) -> UserPublic:
        user = await db.get(User, user_id)
        if user is None:
            raise HTTPException(404)
        return UserPublic.model_validate(user)

    @app.get("/bench/notes/{note_id}")
    async def read_note(note_id: uuid.UUID, db: Session) -> _NoteOut:
        note = await db.get(Note, note_id)
        if note is None:
            raise HTTPException(404)
        return _NoteOut.model_validate(note)

    return app


def guarded() -> FastAPI:
    """bastion's app plus ``/bench`` behind ``require()`` (used by throughput.py)."""
    os.environ.setdefault("BASTION_LOG_LEVEL", "INFO")
    app = app_from_environment()

    @app.get("/bench")
    async def bench(principal: Annotated[Principal, require("notes:read")]) -> dict[str, str]:
        return {"status": "ok", "user": principal.user_id}

    return app


def bare_with_bastions_routes() -> FastAPI:
    """The bare route behind bastion's route table (FastAPI matches routes one by one, so
    the table's length costs both apps alike) but none of its security."""
    app = _bare_app()
    app.router.routes.extend(app_from_environment().router.routes)

    @app.get("/bench")
    async def bench() -> dict[str, str]:
        return {"status": "ok"}

    return app
