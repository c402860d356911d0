"""Each ledger row says where its request was made and which install authorized it: ``context``
("guild", "bot_dm" or "private_channel") and ``installation`` ("guild" or "user"), so that the
ledger tells server, DM and user-install use apart. A request outside every server that installed
the bot is the member's personal scope, recorded with a NULL guild_id (bot/requests/where.py).

Rows written before this revision were all made through a server's install: in a server, or in
the bot's DM (guild_id NULL).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("usage_ledger") as batch:
        batch.add_column(
            sa.Column("context", sa.String(16), nullable=False, server_default="guild")
        )
        batch.add_column(
            sa.Column("installation", sa.String(16), nullable=False, server_default="guild")
        )
    op.execute("UPDATE usage_ledger SET context = 'bot_dm' WHERE guild_id IS NULL")


def downgrade() -> None:
    with op.batch_alter_table("usage_ledger") as batch:
        batch.drop_column("installation")
        batch.drop_column("context")
