"""The bot's own database: where it is, how to reach it, and bringing its schema up to date.

One code path for both back ends, SQLAlchemy's asyncio support: SQLite (aiosqlite) in
``DATA_DIR`` by default, which needs no set-up, or a PostgreSQL server (asyncpg) named by
``DATABASE_URL`` that several bot processes share. The schema is changed only by the Alembic
migrations shipped in ``bot/store/db/migrations``, applied at start and by ``python -m bot
migrate``.

- Processes migrating one database at once take turns: on PostgreSQL under an advisory lock, on
  SQLite in a ``BEGIN IMMEDIATE`` transaction (the others wait on SQLite's write lock), tried
  again while SQLite still answers "database is locked" (switching a new file to write-ahead
  logging, or a migration outlasting the busy timeout), for up to ``MIGRATION_WAIT``.
- A database at a revision this version does not know was migrated by a newer version: that is
  :class:`DatabaseTooNew`, one sentence saying what to do, and exit status 2, which the systemd
  unit does not restart (a restart would only say it again).
- A report (``python -m bot usage``) reads through :func:`open_for_reading`: read-only, and only
  a database at this version's revision. It never migrates; a read-only copy (a backup on a
  read-only disk) is read as it is.
"""

from __future__ import annotations

import asyncio
import functools
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

DATABASE_FILE = "imagine.db"
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# The execution option that makes a SQLite transaction take the write lock at its BEGIN.
BEGIN_IMMEDIATE = "sqlite_begin_immediate"
# A database that does not answer must not hang a start-up or a member's request.
CONNECT_TIMEOUT = 10.0  # seconds
# Every engine keeps statements' values out of its errors (and so out of log lines and
# tracebacks): they hold members' prompts and Discord ids.
HIDE_PARAMETERS = True


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
            url,
            pool_pre_ping=True,
            connect_args={"timeout": CONNECT_TIMEOUT},
            hide_parameters=HIDE_PARAMETERS,
        )
    engine = create_async_engine(
        url, connect_args={"timeout": CONNECT_TIMEOUT}, hide_parameters=HIDE_PARAMETERS
    )
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


def alembic_config() -> Config:
    """Alembic's configuration for the bot's migrations."""
    config = Config()  # no alembic.ini for the operator to edit: everything is said here
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


@functools.cache
def _script() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())  # read from disk once


def head_revision() -> str:
    """The newest revision this version's migrations know."""
    head = _script().get_current_head()
    assert head is not None  # the migrations ship with the bot
    return head


def _known(revision: str) -> bool:
    return any(script.revision == revision for script in _script().walk_revisions())


class _NewerRevision(Exception):
    """The database is at ``revision``, which this version's migrations do not know."""

    def __init__(self, revision: str) -> None:
        super().__init__(revision)
        self.revision = revision


def _current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def _upgrade(connection: Connection) -> str | None:
    current = _current_revision(connection)
    if current is not None and not _known(current):
        # Alembic would say only "Can't locate revision identified by ...".
        raise _NewerRevision(current)
    config = alembic_config()
    config.attributes["connection"] = connection  # env.py runs on this connection
    command.upgrade(config, "head")
    return _current_revision(connection)


# Several processes sharing a PostgreSQL database start at once: one migrates while the others
# wait on this transaction-scoped advisory lock, then find the schema up to date.
MIGRATION_LOCK = 0x696D6167696E65  # "imagine"
# Seconds a process waits for another migrating the same SQLite file before it gives up.
MIGRATION_WAIT = 60.0
SQLITE_BUSY = 5  # SQLite's result code for "database is locked" (its low byte, when extended)


async def migrate(engine: AsyncEngine) -> str | None:
    """Apply every migration not yet applied; return the revision the database is now at."""
    async with engine.connect() as connection:
        if connection.dialect.name == "sqlite":
            # The write lock at BEGIN: a second process waits here until the first has
            # committed, then reads the revision it left, rather than both reading and one
            # failing to write ("database is locked").
            await connection.execution_options(**{BEGIN_IMMEDIATE: True})
        async with connection.begin():
            if connection.dialect.name == "postgresql":
                await connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK}
                )
            return await connection.run_sync(_upgrade)


def _sqlite_busy(exc: BaseException) -> bool:
    code = getattr(getattr(exc, "orig", None), "sqlite_errorcode", None)
    return isinstance(exc, DBAPIError) and isinstance(code, int) and code & 0xFF == SQLITE_BUSY


async def _migrate_taking_turns(engine: AsyncEngine) -> str | None:
    """:func:`migrate`, tried again while another process holds a SQLite file's lock."""
    deadline = time.monotonic() + MIGRATION_WAIT
    pause = 0.05
    while True:
        try:
            return await migrate(engine)
        except SQLAlchemyError as exc:
            if not _sqlite_busy(exc) or time.monotonic() + pause > deadline:
                raise
        await asyncio.sleep(pause)
        pause = min(pause * 2, 1.0)


class DatabaseUnavailable(Exception):
    """The database cannot be reached or migrated: one sentence naming DATABASE_URL."""


class DatabaseTooNew(DatabaseUnavailable):
    """The database was migrated by a newer version of the bot: one sentence saying what to do.
    Nothing this version does can help, so the bot exits with status 2 (not restarted)."""


def _too_new(url: str, revision: str) -> DatabaseTooNew:
    return DatabaseTooNew(
        f"the database {masked_database_url(url)} (DATABASE_URL) is at revision {revision}, "
        f"which a newer version of the bot made (this one knows up to {head_revision()}): run "
        "that version, or restore the backup taken before upgrading to it"
    )


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
        return await _migrate_taking_turns(engine)
    except _NewerRevision as exc:
        raise _too_new(url, exc.revision) from None
    except DATABASE_FAILURES as exc:
        raise DatabaseUnavailable(describe_failure(url, exc)) from None
    finally:
        await engine.dispose()


def _read_only_engine(url: str, *, immutable: bool = False) -> AsyncEngine:
    """An engine that cannot write to ``url``'s database. ``immutable`` (SQLite): read the file
    as it is, without the shared-memory file SQLite otherwise makes beside it (which a read-only
    directory cannot take); only for a file with no write-ahead log to read."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        settings = {"default_transaction_read_only": "on"}  # PostgreSQL refuses any write
        return create_async_engine(
            url,
            connect_args={"timeout": CONNECT_TIMEOUT, "server_settings": settings},
            hide_parameters=HIDE_PARAMETERS,
        )
    path = str(Path(parsed.database or "").resolve())
    mode = "mode=ro&immutable=1" if immutable else "mode=ro"
    return create_async_engine(
        f"sqlite+aiosqlite:///file:{quote(path)}?{mode}&uri=true",
        connect_args={"timeout": CONNECT_TIMEOUT},
        hide_parameters=HIDE_PARAMETERS,
    )


def _has_write_ahead_log(path: Path) -> bool:
    """Whether writes to the SQLite file at ``path`` wait in its write-ahead log."""
    wal = path.with_name(path.name + "-wal")
    return wal.is_file() and wal.stat().st_size > 0


async def open_for_reading(url: str) -> AsyncEngine:
    """A read-only engine on the database at ``url``, which must be at this version's revision;
    else :class:`DatabaseUnavailable` (:class:`DatabaseTooNew`) saying why, and what to do."""
    parsed = make_url(url)
    masked = masked_database_url(url)
    sqlite = parsed.get_backend_name() == "sqlite"
    path = Path(parsed.database or "")
    if sqlite and not await asyncio.to_thread(path.is_file):
        raise DatabaseUnavailable(
            f"there is no database at {path} (DATABASE_URL, or DATA_DIR when it is unset): "
            "the bot makes it at its first start"
        )
    engine = _read_only_engine(url)
    try:
        try:
            async with engine.connect() as connection:
                current = await connection.run_sync(_current_revision)
        except DBAPIError:
            if not sqlite or await asyncio.to_thread(_has_write_ahead_log, path):
                raise
            # A read-only directory: SQLite cannot make its shared-memory file there. With no
            # write-ahead log to read, the file alone is the whole database.
            await engine.dispose()
            engine = _read_only_engine(url, immutable=True)
            async with engine.connect() as connection:
                current = await connection.run_sync(_current_revision)
    except DATABASE_FAILURES as exc:
        await engine.dispose()
        raise DatabaseUnavailable(describe_failure(url, exc)) from None
    head = head_revision()
    if current == head:
        return engine
    await engine.dispose()
    if current is None:
        raise DatabaseUnavailable(
            f"the database {masked} (DATABASE_URL) has no usage ledger yet: start the bot, or "
            "run python -m bot migrate"
        )
    if not _known(current):
        raise _too_new(url, current)
    raise DatabaseUnavailable(
        f"the database {masked} (DATABASE_URL) is at revision {current} and this version reads "
        f"{head}: run python -m bot migrate first (a report never changes the schema)"
    )
