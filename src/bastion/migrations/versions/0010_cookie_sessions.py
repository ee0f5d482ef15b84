"""Browser sessions: a session may be carried by an opaque cookie, stored as its hash.

``POST /auth/session`` opens a session of kind ``cookie``; the cookie's value exists only in
the browser, and the row keeps its SHA-256 (``secret_hash``, unique: the lookup key of every
cookie-authenticated request). Bearer sessions leave it empty.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("secret_hash", sa.String(length=64), nullable=True))
        batch.create_unique_constraint("uq_sessions_secret_hash", ["secret_hash"])


def downgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.drop_constraint("uq_sessions_secret_hash", type_="unique")
        batch.drop_column("secret_hash")
