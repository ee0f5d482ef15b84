"""audit: seed the chain head, so the first appends need not race to create it

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

GENESIS_HASH = "0" * 64  # bastion.audit.events.GENESIS_HASH, frozen here as of this revision


def upgrade() -> None:
    op.execute(
        sa.text(
            "INSERT INTO audit_chain_head (id, last_seq, last_hash) "
            "SELECT 1, 0, :genesis "
            "WHERE NOT EXISTS (SELECT 1 FROM audit_chain_head WHERE id = 1)"
        ).bindparams(genesis=GENESIS_HASH)
    )


def downgrade() -> None:
    """Keeps the head: it belongs to the chain's data, and deleting it while events exist
    would break the chain after the next upgrade. 0002's downgrade drops the table."""
