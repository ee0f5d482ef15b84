"""Sessions say where they came from and when they were last used.

``GET /auth/sessions`` lists a user's live sessions with the device (user agent) and address
that opened them and when each was last used, so that a person can recognise one that is not
theirs and end it (``DELETE /auth/sessions/{id}``). ``kind`` says how the session is carried:
``bearer`` (refresh and access tokens) for every session so far.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(
            sa.Column("kind", sa.String(length=8), nullable=False, server_default="bearer")
        )
        batch.add_column(sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("client_ip", sa.String(length=45), nullable=True))
        batch.add_column(sa.Column("user_agent", sa.String(length=200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("user_agent")
        batch.drop_column("client_ip")
        batch.drop_column("last_used_at")
        batch.drop_column("kind")
