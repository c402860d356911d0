"""Server settings chosen with /imagine-settings, and the record of every change.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    # One row per server and setting: a setting left at its default has no row, so a reset is
    # a delete and a new setting needs no migration.
    op.create_table(
        "server_settings",
        sa.Column("guild_id", sa.BigInteger, primary_key=True),
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("changed_by", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "settings_changes",
        sa.Column("id", ROW_ID, primary_key=True, autoincrement=True),
        sa.Column("guild_id", sa.BigInteger, nullable=False),
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("old_value", sa.Text, nullable=True),  # None: it was the default
        sa.Column("new_value", sa.Text, nullable=True),  # None: reset to the default
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("changed_by", sa.BigInteger, nullable=False),
    )
    op.create_index(
        "settings_changes_guild_changed_at", "settings_changes", ["guild_id", "changed_at"]
    )


def downgrade() -> None:
    op.drop_table("settings_changes")
    op.drop_table("server_settings")
