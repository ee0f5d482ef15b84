"""Baseline: the schema starts empty; the identity issue adds the first tables.

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

from __future__ import annotations

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Nothing to create yet; stamping the version table is the point."""


def downgrade() -> None:
    """Nothing to drop."""
