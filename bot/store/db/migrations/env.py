"""Alembic's entry point: runs the migrations on the connection ``bot.store.db.migrate`` hands in.

There is no alembic.ini and no URL here: the bot's configuration (DATABASE_URL) decides the
database, and the async engine's connection arrives through ``config.attributes``.
"""

from __future__ import annotations

from alembic import context

from bot.store.db.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run the migrations with `python -m bot migrate`, not the alembic command")
# Batch mode: SQLite alters a table only by copying it, which Alembic does in batch operations.
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
