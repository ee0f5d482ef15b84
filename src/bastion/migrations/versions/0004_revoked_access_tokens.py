"""Revoked access tokens: the record that restores jti revocations after a restart.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "revoked_access_tokens",
        sa.Column("jti", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("jti", name=op.f("pk_revoked_access_tokens")),
    )
    with op.batch_alter_table("revoked_access_tokens", schema=None) as batch_op:
        batch_op.create_index(
            "ix_revoked_access_tokens_expires_at", ["expires_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("revoked_access_tokens", schema=None) as batch_op:
        batch_op.drop_index("ix_revoked_access_tokens_expires_at")
    op.drop_table("revoked_access_tokens")
