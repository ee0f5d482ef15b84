"""Drop users.token_version: bumped on role changes and disables, read by nothing.

The per-user cut-off (users.tokens_revoked_before) is what refuses earlier tokens; a
counter beside it only invited code to trust the wrong one.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # batch mode: SQLite drops a column by rebuilding the table.
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("token_version")


def downgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("token_version", sa.Integer(), nullable=False, server_default="0")
        )
