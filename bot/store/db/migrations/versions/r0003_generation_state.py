"""What each posted set of images was made from, for the buttons under it.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "generation_state",
        sa.Column("id", ROW_ID, primary_key=True, autoincrement=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("guild_id", sa.BigInteger, nullable=True),
        sa.Column("channel_id", sa.BigInteger, nullable=True),
        sa.Column("member_id", sa.BigInteger, nullable=False),
        sa.Column("model", sa.String(100), nullable=False),
        sa.Column("prompt", sa.Text, nullable=False),
        sa.Column("size", sa.String(32), nullable=False),
        sa.Column("quality", sa.String(100), nullable=False),
        sa.Column("image_count", sa.Integer, nullable=False),
        sa.Column("options", sa.Text, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("generation_state")
