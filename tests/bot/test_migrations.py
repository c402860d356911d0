"""The ledger's schema across versions and processes, run as operators run the bot: a database a
newer version migrated stops the bot with a sentence and status 2; a report never migrates and
reads a read-only copy; processes migrating one new SQLite file at once all succeed."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import Connection, text

from bot.store.db import alembic_config, head_revision, migrate, open_engine
from bot.store.ledger import Ledger, Outcome
from tests.bot.test_cli import ROOT, run_cli
from tests.bot.test_ledger import prepared
from tests.conftest import API_KEY, DISCORD_TOKEN

NEWER = "0099"  # a revision a later version of the bot would add


async def set_revision(url: str, revision: str | None) -> None:
    """Migrate ``url``'s database to ``revision`` (None: leave it empty), or mark it at a
    revision this version does not know, as a newer version would leave it."""
    if revision is None:
        return
    engine = open_engine(url)
    try:
        if revision == NEWER:
            await migrate(engine)
            async with engine.begin() as connection:
                await connection.execute(
                    text("UPDATE alembic_version SET version_num = :v"), {"v": NEWER}
                )
            return

        def upgrade(connection: Connection) -> None:
            config = alembic_config()
            config.attributes["connection"] = connection
            command.upgrade(config, revision)

        async with engine.begin() as connection:
            await connection.run_sync(upgrade)
    finally:
        await engine.dispose()


async def revision_of(url: str) -> str | None:
    engine = open_engine(url)
    try:
        async with engine.connect() as connection:
            exists = await connection.run_sync(
                lambda sync: sync.dialect.has_table(sync, "alembic_version")
            )
            if not exists:
                return None
            return str(await connection.scalar(text("SELECT version_num FROM alembic_version")))
    finally:
        await engine.dispose()


# -- a database a newer version migrated ---------------------------------------------------------


async def test_a_database_a_newer_version_migrated_stops_everything_with_status_2_and_what_to_do(
    database_url: str, tmp_path: Path
) -> None:
    await set_revision(database_url, NEWER)
    env = {"OPENAI_API_KEY": API_KEY, "DISCORD_TOKEN": DISCORD_TOKEN, "DATABASE_URL": database_url}
    said = (
        f"is at revision {NEWER}, which a newer version of the bot made (this one knows up to "
        f"{head_revision()}): run that version, or restore the backup taken before upgrading to it"
    )

    # The bot: one line, status 2 (the systemd unit restarts on 1, not on 2), no login tried.
    code, _, err = await run_cli(env=env, cwd=tmp_path)
    assert code == 2, err
    (line,) = [line for line in err.splitlines() if "ERROR" in line]
    assert said in line and "(DATABASE_URL)" in line
    assert "Traceback" not in err

    for command_ in (["migrate"], ["usage"]):
        code, _, err = await run_cli(*command_, env=env, cwd=tmp_path)
        assert code == 2, err
        assert err.startswith("error: the database ") and said in err
        assert "Traceback" not in err and "Can't locate revision" not in err
    assert await revision_of(database_url) == NEWER  # nothing was changed


# -- a report never migrates -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("revision", "said"),
    [
        (None, "has no usage ledger yet: start the bot, or run python -m bot migrate"),
        (
            "0003",
            "is at revision 0003 and this version reads {head}: run python -m bot migrate first "
            "(a report never changes the schema)",
        ),
    ],
    ids=["never-migrated", "older"],
)
async def test_a_report_never_migrates_and_says_what_to_do(
    database_url: str, tmp_path: Path, revision: str | None, said: str
) -> None:
    if revision is None and database_url.startswith("sqlite"):
        sqlite3.connect(database_url.split("///", 1)[1]).close()  # an empty file
    await set_revision(database_url, revision)
    env = {"OPENAI_API_KEY": API_KEY, "DATABASE_URL": database_url}

    code, out, err = await run_cli("usage", env=env, cwd=tmp_path)

    assert code == 1, out
    assert err.startswith("error: the database ")
    assert err.strip().endswith(said.format(head=head_revision()))
    assert await revision_of(database_url) == revision


async def test_a_report_without_a_database_makes_none(tmp_path: Path) -> None:
    env = {"OPENAI_API_KEY": API_KEY, "DATA_DIR": str(tmp_path / "data")}
    code, _, err = await run_cli("usage", env=env, cwd=tmp_path)
    assert code == 1
    assert err.strip() == (
        f"error: there is no database at {tmp_path / 'data' / 'imagine.db'} (DATABASE_URL, or "
        "DATA_DIR when it is unset): the bot makes it at its first start"
    )
    assert not (tmp_path / "data").exists()


def read_only(directory: Path) -> list[str]:
    """The command prefix that runs a command with ``directory`` read-only, or skip: a read-only
    bind mount of its own for root (whom permissions do not stop), else the permissions."""
    if os.geteuid() != 0:
        for path in [*directory.iterdir(), directory]:
            path.chmod(0o555 if path.is_dir() else 0o444)
        return []
    prefix = [
        "unshare", "--mount", "--", "sh", "-c",
        'mount --bind -o ro "$0" "$0" && exec "$@"', str(directory),
    ]  # fmt: skip
    probe = subprocess.run([*prefix, "true"], capture_output=True, check=False)  # noqa: S603
    if probe.returncode != 0:
        pytest.skip("root here, and no mount namespace to make a directory read-only in")
    return prefix


async def test_a_report_reads_a_read_only_copy_as_it_is(tmp_path: Path) -> None:
    live = tmp_path / "live.db"
    url = f"sqlite+aiosqlite:///{live}"
    await set_revision(url, head_revision())
    book = Ledger(url)
    await book.open()
    try:
        for member in (1, 1, 2):
            row = await book.admitted(prepared(), member_id=member, guild_id=10, channel_id=5)
            await book.settle(row, Outcome.DELIVERED, prepared(), images_returned=2)
    finally:
        await book.close()
    backups = tmp_path / "backups"
    backups.mkdir()
    copy = backups / "imagine.db"
    with sqlite3.connect(live) as source, sqlite3.connect(copy) as target:
        source.backup(target)  # as README's Backups does it: a write-ahead-log file, whole
    digest = hashlib.sha256(copy.read_bytes()).hexdigest()

    prefix = read_only(backups)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "DISCORD_"))}
    env = base | {"OPENAI_API_KEY": API_KEY, "DATABASE_URL": f"sqlite:///{copy}"}
    env["PYTHONPATH"] = str(ROOT)
    process = await asyncio.create_subprocess_exec(
        *prefix, sys.executable, "-m", "bot", "usage",
        env=env, cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)

    assert process.returncode == 0, err.decode()
    assert "usage all time, all servers: 3 request(s)" in out.decode()
    assert hashlib.sha256(copy.read_bytes()).hexdigest() == digest
    assert sorted(path.name for path in backups.iterdir()) == ["imagine.db"]
    shutil.rmtree(backups, ignore_errors=True)


# -- processes migrating at once ---------------------------------------------------------------

# Imports first, then waits: the processes reach the migration together, as bots started at
# once by a supervisor (or `migrate` beside a starting bot) do.
MIGRATE_ON_GO = (
    "import sys, bot.__main__, bot.store.db; print('ready', flush=True); sys.stdin.readline(); "
    "sys.exit(bot.__main__.main(['migrate']))"
)


async def migrate_on_go(env: dict[str, str], cwd: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-c", MIGRATE_ON_GO, env=env, cwd=cwd,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def test_processes_migrating_one_new_sqlite_file_at_once_all_succeed(tmp_path: Path) -> None:
    for attempt in range(3):  # 4 at once failed 3 times in 4 before they took turns
        database = tmp_path / f"imagine-{attempt}.db"
        env = {
            **os.environ, "PYTHONPATH": str(ROOT), "OPENAI_API_KEY": API_KEY,
            "DATABASE_URL": f"sqlite:///{database}",
        }  # fmt: skip
        processes = [await migrate_on_go(env, tmp_path) for _ in range(4)]
        for process in processes:  # every one has imported the bot and waits
            assert process.stdout is not None
            assert await asyncio.wait_for(process.stdout.readline(), 60) == b"ready\n"
        answers = await asyncio.wait_for(
            asyncio.gather(*(process.communicate(b"go\n") for process in processes)), 120
        )
        for process, (out, err) in zip(processes, answers, strict=True):
            assert process.returncode == 0, err.decode()
            assert out.decode().strip().endswith(f"is at revision {head_revision()}")
        assert await revision_of(f"sqlite+aiosqlite:///{database}") == head_revision()
