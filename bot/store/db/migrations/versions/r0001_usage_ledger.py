"""The usage ledger: one row per generation request admitted.

Revision ID: 0001
Revises:
Create Date: 2026-05-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
MONEY = sa.Numeric(14, 6)


def upgrade() -> None:
    op.create_table(
        "usage_ledger",
        sa.Column("id", ROW_ID, primary_key=True, autoincrement=True),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("settled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("guild_id", sa.BigInteger, nullable=True),
        sa.Column("channel_id", sa.BigInteger, nullable=True),
        sa.Column("member_id", sa.BigInteger, nullable=False),
        sa.Column("model", sa.String(100), nullable=False),
        sa.Column("size", sa.String(32), nullable=False),
        sa.Column("quality", sa.String(32), nullable=False),
        sa.Column("images_requested", sa.Integer, nullable=False),
        sa.Column("images_delivered", sa.Integer, nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("request_id", sa.String(100), nullable=True),
        sa.Column("input_text_tokens", sa.Integer, nullable=True),
        sa.Column("input_image_tokens", sa.Integer, nullable=True),
        sa.Column("output_tokens", sa.Integer, nullable=True),
        sa.Column("estimated_cost", MONEY, nullable=True),
        sa.Column("cost", MONEY, nullable=True),
        sa.CheckConstraint(
            "outcome IN ('pending', 'delivered', 'refused', 'failed', 'cancelled')",
            name="usage_ledger_outcome",
        ),
    )
    op.create_index("usage_ledger_requested_at", "usage_ledger", ["requested_at"])
    op.create_index("usage_ledger_guild_requested_at", "usage_ledger", ["guild_id", "requested_at"])
    op.create_index(
        "usage_ledger_member_requested_at", "usage_ledger", ["member_id", "requested_at"]
    )


def downgrade() -> None:
    op.drop_table("usage_ledger")
