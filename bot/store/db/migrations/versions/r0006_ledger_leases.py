"""Rows left pending by a process that is gone are settled: each row names the process that
admitted it (``owner``) and whether its request was handed to the image service (``sent_at``);
each running process holds a lease in ``ledger_leases`` that it renews; a row whose owner's lease
has expired is settled as ``abandoned`` by another process (bot/store/ledger.py).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

OUTCOMES_BEFORE = "outcome IN ('pending', 'delivered', 'refused', 'failed', 'cancelled')"
OUTCOMES = "outcome IN ('pending', 'delivered', 'refused', 'failed', 'cancelled', 'abandoned')"


def upgrade() -> None:
    op.create_table(
        "ledger_leases",
        sa.Column("owner", sa.String(32), primary_key=True),
        # Seconds since the epoch on the database's clock: every process reads the same clock.
        sa.Column("expires_at", sa.Double, nullable=False),
        sa.Column("process", sa.String(200), nullable=False),
    )
    with op.batch_alter_table("usage_ledger") as batch:
        # NULL: a row written before this revision (its process held no lease).
        batch.add_column(sa.Column("owner", sa.String(32), nullable=True))
        # NULL: never sent (or written before this revision: then it may have been).
        batch.add_column(sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True))
        batch.drop_constraint("usage_ledger_outcome", type_="check")
        batch.create_check_constraint("usage_ledger_outcome", OUTCOMES)
    # Only the pending rows: what the processes look through for rows left behind stays small.
    op.create_index(
        "usage_ledger_pending_owner",
        "usage_ledger",
        ["owner"],
        postgresql_where=sa.text("outcome = 'pending'"),
        sqlite_where=sa.text("outcome = 'pending'"),
    )


def downgrade() -> None:
    op.drop_index("usage_ledger_pending_owner", table_name="usage_ledger")
    op.execute("UPDATE usage_ledger SET outcome = 'failed' WHERE outcome = 'abandoned'")
    with op.batch_alter_table("usage_ledger") as batch:
        batch.drop_constraint("usage_ledger_outcome", type_="check")
        batch.create_check_constraint("usage_ledger_outcome", OUTCOMES_BEFORE)
        batch.drop_column("sent_at")
        batch.drop_column("owner")
    op.drop_table("ledger_leases")
