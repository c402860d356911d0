"""Alembic migrations of the bot's database, applied by ``bot.db.migrate``."""
