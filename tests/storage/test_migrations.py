"""The migrations build exactly the schema the models describe, on every backend."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from fastapi import FastAPI
from sqlalchemy import inspect

from bastion.storage.tables import Base


async def test_the_migrated_schema_matches_the_models(app: FastAPI) -> None:
    """A model column without its migration (or the reverse) shows up here as a diff."""

    def differences(connection: Any) -> list[Any]:
        context = MigrationContext.configure(connection, opts={"compare_type": False})
        return list(compare_metadata(context, Base.metadata))

    async with app.state.bastion.database.engine.connect() as connection:
        assert await connection.run_sync(differences) == []


async def test_users_no_longer_carry_the_unused_token_version(app: FastAPI) -> None:
    def columns(connection: Any) -> set[str]:
        return {column["name"] for column in inspect(connection).get_columns("users")}

    async with app.state.bastion.database.engine.connect() as connection:
        found = await connection.run_sync(columns)
    assert "token_version" not in found
    assert "tokens_revoked_before" in found
