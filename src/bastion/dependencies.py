"""``Annotated`` aliases that routes declare; each is an ``async def`` (no threadpool hop)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from bastion.config import Settings
from bastion.storage import Database


async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def _database(request: Request) -> Database:
    database: Database = request.app.state.database
    return database


async def _transaction(request: Request) -> AsyncIterator[AsyncSession]:
    database: Database = request.app.state.database
    async with database.transaction() as session:
        yield session


AppSettings = Annotated[Settings, Depends(_settings)]
AppDatabase = Annotated[Database, Depends(_database)]
# scope="function": the transaction commits when the route returns, before the response is
# sent, so a failed commit is reported to the client instead of a success it never got.
DbSession = Annotated[AsyncSession, Depends(_transaction, scope="function")]
