"""A saved request remembers where it was posted and what it came from, for its Info card,
/history and /show: the first message's id (its jump link), its row of the usage ledger (its
cost), the saved request it was made from (a Reroll, Vary, Edit prompt, zoom or pan: any press
under posted images) and how, and whether it was posted privately (ephemeral).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NULL everywhere for rows written before: not known (no link, no cost, no parent), public.
    with op.batch_alter_table("generation_state") as batch:
        batch.add_column(sa.Column("message_id", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("ledger_id", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("parent_key", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("origin", sa.String(32), nullable=True))
        batch.add_column(
            sa.Column("private", sa.Boolean, nullable=False, server_default=sa.false())
        )
    # /history: a member's latest sets in one server (or in DMs), newest first.
    op.create_index(
        "generation_state_member_guild_id", "generation_state", ["member_id", "guild_id", "id"]
    )
    # The Info card's "made from it".
    op.create_index("generation_state_parent_key", "generation_state", ["parent_key"])


def downgrade() -> None:
    op.drop_index("generation_state_parent_key", table_name="generation_state")
    op.drop_index("generation_state_member_guild_id", table_name="generation_state")
    with op.batch_alter_table("generation_state") as batch:
        for column in ("private", "origin", "parent_key", "ledger_id", "message_id"):
            batch.drop_column(column)
