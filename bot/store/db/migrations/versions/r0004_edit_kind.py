"""The usage ledger records what kind of request a row is: ``generate`` (/imagine) or ``edit``
(/edit, Vary: images as input, which cost image input tokens besides).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Every row written before this revision was a generation.
    op.add_column(
        "usage_ledger",
        sa.Column("kind", sa.String(16), nullable=False, server_default="generate"),
    )


def downgrade() -> None:
    with op.batch_alter_table("usage_ledger") as batch:
        batch.drop_column("kind")
