"""The migrations build exactly the schema the models describe, on every backend."""

from __future__ import annotations

from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from fastapi import FastAPI
from sqlalchemy import inspect

from bastion.storage.migrate import alembic_config
from bastion.storage.tables import NOTE_TRIGRAM_INDEXES, SQLITE_SEARCH_TABLES, Base


def _not_a_search_object(name: str | None, type_: str, _parents: dict[str, Any]) -> bool:
    """Leaves out, by exact name, only the search objects the models cannot describe (an
    FTS5 table and its shadow tables; expression GIN indexes); every column, index and
    table of the models is still compared. They are checked below and in
    tests/notes/test_search_index.py."""
    if type_ == "table":
        return name not in SQLITE_SEARCH_TABLES
    if type_ == "index":
        return name not in NOTE_TRIGRAM_INDEXES
    return True


async def test_the_migrated_schema_matches_the_models(app: FastAPI) -> None:
    """A model column without its migration (or the reverse) shows up here as a diff."""

    def differences(connection: Any) -> list[Any]:
        context = MigrationContext.configure(
            connection, opts={"compare_type": False, "include_name": _not_a_search_object}
        )
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


async def test_the_note_search_migration_downgrades_and_upgrades_again(app: FastAPI) -> None:
    """0007 reviewed like code: its downgrade removes what it made, and it applies again."""

    def down_and_up(connection: Any) -> tuple[set[str], set[str]]:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.downgrade(config, "0006")
        after_downgrade = _note_objects(connection)
        command.upgrade(config, "head")
        return after_downgrade, _note_objects(connection)

    async with app.state.bastion.database.engine.begin() as connection:
        downgraded, upgraded = await connection.run_sync(down_and_up)
    assert downgraded.isdisjoint({"size_bytes", "ix_notes_owner_id_size_bytes"})
    assert downgraded.isdisjoint({*SQLITE_SEARCH_TABLES, *NOTE_TRIGRAM_INDEXES})
    backend = app.state.bastion.database.backend
    expected = set(SQLITE_SEARCH_TABLES[:1] if backend == "sqlite" else NOTE_TRIGRAM_INDEXES)
    assert {"size_bytes", "ix_notes_owner_id_size_bytes", *expected} <= upgraded


def _note_objects(connection: Any) -> set[str]:
    """The notes table's columns and indexes, and every table's name."""
    inspector = inspect(connection)
    return (
        {column["name"] for column in inspector.get_columns("notes")}
        | {str(index["name"]) for index in inspector.get_indexes("notes")}
        | set(inspector.get_table_names())
    )
