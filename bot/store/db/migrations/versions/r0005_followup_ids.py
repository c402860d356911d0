"""A saved request remembers the follow-up messages its images were posted in besides the first
(when they did not fit one message), so that its Delete button removes them too.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NULL: no follow-ups (every row written before this revision is read so).
    op.add_column("generation_state", sa.Column("followup_ids", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("generation_state") as batch:
        batch.drop_column("followup_ids")
