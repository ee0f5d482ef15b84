"""Notes: a stored size for the per-user quota, and an index for search.

``notes.size_bytes`` (UTF-8 bytes of title + body) is summed over the ``(owner_id,
size_bytes)`` index to check the quota without reading bodies; existing notes are measured
here. The column is added in place (ALTER TABLE ADD COLUMN), never by a batch rebuild: on
SQLite, rebuilding ``notes`` drops its triggers and, with foreign keys on, DROP TABLE would
cascade into ``note_shares``.

Search (``bastion.notes.search``) is a substring match of ASCII-folded text:
- PostgreSQL: pg_trgm GIN indexes on exactly the expressions the query uses,
  ``lower((title) COLLATE "C")`` and the same for ``body``, so ``LIKE`` uses them.
  pg_trgm is a trusted extension since PostgreSQL 13 (the database owner may create it).
- SQLite: a contentless FTS5 table with the trigram tokenizer (case-sensitive, fed with
  ``lower()``, which folds A-Z only), kept in step with ``notes`` by triggers in the same
  statement, so every writer (the service, a cascade from a deleted user) keeps it right.
  FTS rows are keyed by ``note_search_keys.id``, an INTEGER PRIMARY KEY: the implicit rowid
  of ``notes`` may change on VACUUM, so it cannot be the key.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None

# A contentless table is given back the values it indexed to delete a row, so every
# 'delete' passes exactly what the insert passed: lower(title), lower(body).
_SQLITE_UPGRADE = [
    "CREATE TABLE note_search_keys ("
    " id INTEGER PRIMARY KEY, note_id CHAR(32) NOT NULL UNIQUE)",
    "CREATE VIRTUAL TABLE notes_search USING fts5("
    " title, body, content='', tokenize='trigram case_sensitive 1')",
    """CREATE TRIGGER notes_search_insert AFTER INSERT ON notes BEGIN
        INSERT INTO note_search_keys (note_id) VALUES (new.id);
        INSERT INTO notes_search (rowid, title, body)
            SELECT id, lower(new.title), lower(new.body)
            FROM note_search_keys WHERE note_id = new.id;
    END""",
    """CREATE TRIGGER notes_search_update AFTER UPDATE OF id, title, body ON notes BEGIN
        INSERT INTO notes_search (notes_search, rowid, title, body)
            SELECT 'delete', id, lower(old.title), lower(old.body)
            FROM note_search_keys WHERE note_id = old.id;
        UPDATE note_search_keys SET note_id = new.id WHERE note_id = old.id;
        INSERT INTO notes_search (rowid, title, body)
            SELECT id, lower(new.title), lower(new.body)
            FROM note_search_keys WHERE note_id = new.id;
    END""",
    """CREATE TRIGGER notes_search_delete AFTER DELETE ON notes BEGIN
        INSERT INTO notes_search (notes_search, rowid, title, body)
            SELECT 'delete', id, lower(old.title), lower(old.body)
            FROM note_search_keys WHERE note_id = old.id;
        DELETE FROM note_search_keys WHERE note_id = old.id;
    END""",
    "INSERT INTO note_search_keys (note_id) SELECT id FROM notes",
    "INSERT INTO notes_search (rowid, title, body)"
    " SELECT k.id, lower(n.title), lower(n.body)"
    " FROM notes AS n JOIN note_search_keys AS k ON k.note_id = n.id",
]
_SQLITE_DOWNGRADE = [
    "DROP TRIGGER notes_search_delete",
    "DROP TRIGGER notes_search_update",
    "DROP TRIGGER notes_search_insert",
    "DROP TABLE notes_search",
    "DROP TABLE note_search_keys",
]

_POSTGRESQL_UPGRADE = [
    "CREATE EXTENSION IF NOT EXISTS pg_trgm",
    'CREATE INDEX ix_notes_title_trgm ON notes USING gin (lower((title) COLLATE "C") gin_trgm_ops)',
    'CREATE INDEX ix_notes_body_trgm ON notes USING gin (lower((body) COLLATE "C") gin_trgm_ops)',
]
# The extension stays: other objects of the database may use it, and it is harmless.
_POSTGRESQL_DOWNGRADE = ["DROP INDEX ix_notes_body_trgm", "DROP INDEX ix_notes_title_trgm"]

_SIZE_OF_EXISTING = {
    "sqlite": "length(CAST(title AS BLOB)) + length(CAST(body AS BLOB))",
    # convert_to: UTF-8 bytes whatever the database's encoding.
    "postgresql": (
        "octet_length(convert_to(title, 'UTF8')) + octet_length(convert_to(body, 'UTF8'))"
    ),
}


def _run(statements: list[str]) -> None:
    for statement in statements:
        op.execute(statement)


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.add_column(
        "notes", sa.Column("size_bytes", sa.Integer(), server_default="0", nullable=False)
    )
    op.execute(f"UPDATE notes SET size_bytes = {_SIZE_OF_EXISTING[dialect]}")  # noqa: S608 (constant)
    op.create_index("ix_notes_owner_id_size_bytes", "notes", ["owner_id", "size_bytes"])
    if dialect == "sqlite":
        _run(_SQLITE_UPGRADE)
    elif dialect == "postgresql":
        _run(_POSTGRESQL_UPGRADE)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        _run(_SQLITE_DOWNGRADE)
    elif dialect == "postgresql":
        _run(_POSTGRESQL_DOWNGRADE)
    op.drop_index("ix_notes_owner_id_size_bytes", table_name="notes")
    # SQLite (3.35+) drops a column in place; an index on it must go first (above).
    op.drop_column("notes", "size_bytes")
