"""Alembic migrations of the bot's database, applied by ``bot.store.db.migrate``."""
