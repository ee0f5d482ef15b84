"""Drop users.token_version: bumped on role changes and disables, read by nothing.

The per-user cut-off (users.tokens_revoked_before) is what refuses earlier tokens; a
counter beside it only invited code to trust the wrong one.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlite3

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # In place, never by batch mode's copy-and-rebuild: with foreign keys on, SQLite's
    # DROP TABLE users would cascade and delete every session, note and share.
    # ALTER TABLE ... DROP COLUMN is SQLite >= 3.35 (Debian 12 ships 3.40).
    if op.get_bind().dialect.name == "sqlite" and sqlite3.sqlite_version_info < (3, 35):
        raise RuntimeError(
            f"migration 0006 needs SQLite >= 3.35 to drop a column in place; "
            f"this Python links SQLite {sqlite3.sqlite_version}"
        )
    op.drop_column("users", "token_version")


def downgrade() -> None:
    op.add_column(
        "users", sa.Column("token_version", sa.Integer(), nullable=False, server_default="0")
    )
