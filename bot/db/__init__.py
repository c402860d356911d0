"""The bot's own database: where it is, how to reach it, and bringing its schema up to date.

One code path for both back ends, SQLAlchemy's asyncio support: SQLite (aiosqlite) in
``DATA_DIR`` by default, which needs no set-up, or a PostgreSQL server (asyncpg) named by
``DATABASE_URL`` that several bot processes share. The schema is changed only by the Alembic
migrations shipped in ``bot/db/migrations``, applied at start and by ``python -m bot migrate``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.util import CommandError
from sqlalchemy import Connection, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

DATABASE_FILE = "imagine.db"
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# The execution option that makes a SQLite transaction take the write lock at its BEGIN.
BEGIN_IMMEDIATE = "sqlite_begin_immediate"
# A database that does not answer must not hang a start-up or a member's request.
CONNECT_TIMEOUT = 10.0  # seconds


def default_database_url(data_dir: Path) -> str:
    """The SQLite file in DATA_DIR used when DATABASE_URL is unset."""
    return f"sqlite+aiosqlite:///{(data_dir / DATABASE_FILE).resolve()}"


def masked_database_url(url: str) -> str:
    """The URL with its password replaced: fit for a log line or the console."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # DATABASE_URL was read at start; this is only a guard for a log line
        return "(a database URL that cannot be read)"


def open_engine(url: str) -> AsyncEngine:
    """An engine for ``url`` (no connection is made until one is needed)."""
    if make_url(url).get_backend_name() != "sqlite":
        return create_async_engine(
            url, pool_pre_ping=True, connect_args={"timeout": CONNECT_TIMEOUT}
        )
    engine = create_async_engine(url, connect_args={"timeout": CONNECT_TIMEOUT})
    event.listen(engine.sync_engine, "connect", _write_ahead_log)
    event.listen(engine.sync_engine, "begin", _begin)
    return engine


def _write_ahead_log(dbapi_connection: Any, _record: Any) -> None:
    # Readers (`python -m bot usage`) then never wait on the bot's writes, nor it on them.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()
    # The driver would begin transactions itself, deferred and only before a write; the bot
    # begins them (see _begin), so that a budget's read and insert can hold the write lock.
    dbapi_connection.isolation_level = None


def _begin(connection: Connection) -> None:
    # BEGIN IMMEDIATE takes SQLite's write lock at once: other writers wait (up to the busy
    # timeout) rather than read a total that is about to change.
    immediate = connection.get_execution_options().get(BEGIN_IMMEDIATE, False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _upgrade(connection: Connection) -> str | None:
    config = Config()  # no alembic.ini for the operator to edit: everything is said here
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection  # env.py runs on this connection
    command.upgrade(config, "head")
    return MigrationContext.configure(connection).get_current_revision()


# Several processes sharing a PostgreSQL database start at once: one migrates while the others
# wait on this transaction-scoped advisory lock, then find the schema up to date.
MIGRATION_LOCK = 0x696D6167696E65  # "imagine"


async def migrate(engine: AsyncEngine) -> str | None:
    """Apply every migration not yet applied; return the revision the database is now at."""
    async with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            await connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK}
            )
        return await connection.run_sync(_upgrade)


class DatabaseUnavailable(Exception):
    """The database cannot be reached or migrated: one sentence naming DATABASE_URL."""


def describe_failure(url: str, exc: BaseException) -> str:
    """One line for the operator: which database (its password masked) and what went wrong."""
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    text = reason[0] if reason else type(exc).__name__
    password = make_url(url).password
    if password:
        text = text.replace(str(password), "***")
    text = text if len(text) <= 300 else text[:299] + "…"
    return (
        f"the database {masked_database_url(url)} (DATABASE_URL) cannot be used: "
        f"{type(exc).__name__}: {text}"
    )


# What a database that cannot be reached, opened or migrated raises, whatever its driver.
DATABASE_FAILURES: tuple[type[BaseException], ...] = (
    SQLAlchemyError,
    CommandError,
    OSError,
    TimeoutError,
)


async def migrate_database(url: str) -> str | None:
    """Bring the database at ``url`` up to date; raise :class:`DatabaseUnavailable` if it cannot
    be."""
    engine = open_engine(url)
    try:
        database = make_url(url).database
        if make_url(url).get_backend_name() == "sqlite" and database:
            # SQLite creates the file but not its directory (DATA_DIR on a first start).
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        return await migrate(engine)
    except DATABASE_FAILURES as exc:
        raise DatabaseUnavailable(describe_failure(url, exc)) from None
    finally:
        await engine.dispose()
