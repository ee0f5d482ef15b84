"""The migrations build exactly the schema the models describe, on every backend."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from fastapi import FastAPI
from sqlalchemy import JSON, Uuid, column, insert, inspect, table, text
from sqlalchemy.sql.expression import TableClause

from bastion.config import Settings
from bastion.storage.database import Database
from bastion.storage.migrate import alembic_config
from bastion.storage.tables import NOTE_TRIGRAM_INDEXES, SQLITE_SEARCH_TABLES, Base, UTCDateTime


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


async def test_the_idempotency_key_migration_downgrades_and_upgrades_again(
    app: FastAPI,
) -> None:
    def tables_down_and_up(connection: Any) -> tuple[set[str], set[str]]:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.downgrade(config, "0007")
        after_downgrade = set(inspect(connection).get_table_names())
        command.upgrade(config, "head")
        return after_downgrade, set(inspect(connection).get_table_names())

    async with app.state.bastion.database.engine.begin() as connection:
        downgraded, upgraded = await connection.run_sync(tables_down_and_up)
    assert "idempotency_keys" not in downgraded
    # 0011's tables go down and come back with it.
    later = {"recovery_codes", "mfa_challenges", "email_tokens", "mail_outbox"}
    assert upgraded == downgraded | {"idempotency_keys", *later}


def _note_objects(connection: Any) -> set[str]:
    """The notes table's columns and indexes, and every table's name."""
    inspector = inspect(connection)
    return (
        {column["name"] for column in inspector.get_columns("notes")}
        | {str(index["name"]) for index in inspector.get_indexes("notes")}
        | set(inspector.get_table_names())
    )


def _old_table(name: str, *columns: str, uuids: tuple[str, ...] = ()) -> TableClause:
    """A table as revision 0005 had it, for inserting rows the current models cannot."""
    types: dict[str, Any] = {"roles": JSON(), "created_at": UTCDateTime(),
                             "updated_at": UTCDateTime(), "expires_at": UTCDateTime()}
    return table(
        name,
        *(column(name, Uuid() if name in uuids else types.get(name)) for name in columns),
    )


_OLD_USERS = _old_table(
    "users", "id", "username", "email", "age", "password_hash", "roles", "disabled",
    "token_version", "failed_logins", "lockouts", "created_at", "updated_at", uuids=("id",),
)
_OLD_SESSIONS = _old_table(
    "sessions", "id", "user_id", "scope", "created_at", "expires_at", uuids=("id", "user_id")
)
_OLD_NOTES = _old_table(
    "notes", "id", "owner_id", "title", "body", "created_at", "updated_at",
    uuids=("id", "owner_id"),
)


async def test_upgrading_keeps_every_row_of_an_existing_deployment(settings: Settings) -> None:
    """A deployment at 0005 with an account, a session and a note keeps all three through
    every later migration. (0006 first dropped a column with batch mode's table rebuild: with
    foreign keys on, SQLite's DROP TABLE users cascaded and deleted sessions and notes.)"""
    database = Database.from_settings(settings)
    user_id, now = uuid.uuid4(), datetime.now(UTC)

    def migrate_to(connection: Any, revision: str) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, revision)

    try:
        async with database.engine.begin() as connection:
            await connection.run_sync(migrate_to, "0005")
        stamps = {"created_at": now}
        async with database.transaction() as session:
            await session.execute(
                insert(_OLD_USERS).values(
                    id=user_id, username="alice", email="alice@example.com", age=30,
                    password_hash="hash", roles=["user"], disabled=False, token_version=0,
                    failed_logins=0, lockouts=0, updated_at=now, **stamps,
                )
            )
            await session.execute(
                insert(_OLD_SESSIONS).values(
                    id=uuid.uuid4(), user_id=user_id, scope="", expires_at=now, **stamps
                )
            )
            await session.execute(
                insert(_OLD_NOTES).values(
                    id=uuid.uuid4(), owner_id=user_id, title="title", body="body",
                    updated_at=now, **stamps,
                )
            )
        async with database.engine.begin() as connection:
            await connection.run_sync(migrate_to, "head")
        async with database.transaction() as session:
            counts = [
                (await session.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one()  # noqa: S608
                for table in ("users", "sessions", "notes")
            ]
        assert counts == [1, 1, 1]
    finally:
        await database.dispose()
