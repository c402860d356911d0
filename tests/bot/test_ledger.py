"""The usage ledger's database: migrations, rows, start-up failures and the two commands."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import logging
import os
import socket
import sqlite3
import sys
import types
from decimal import Decimal
from pathlib import Path

import discord
import discord.ext.tasks
import discord.utils
import pytest
from sqlalchemy import inspect

from bot import app
from bot.app import ImagineBot, run_bot
from bot.images import ImageRequest, PreparedRequest, load_catalog, prepare_request
from bot.images.pricing import format_usd, settle_cost
from bot.observability.metrics import Metrics
from bot.store import ledger
from bot.store.db import (
    DATABASE_FILE,
    DatabaseUnavailable,
    default_database_url,
    head_revision,
    migrate,
    migrate_database,
    open_engine,
)
from bot.store.ledger import Ledger, Outcome, counted_since
from tests.bot.test_cli import run_cli
from tests.cogs.conftest import make_settings
from tests.conftest import API_KEY
from tests.databases import PostgresServer, ledger_rows

LEDGER_COLUMNS = {
    "id", "requested_at", "settled_at", "guild_id", "channel_id", "member_id", "kind", "model",
    "size", "quality", "images_requested", "images_delivered", "outcome", "request_id",
    "input_text_tokens", "input_image_tokens", "output_tokens", "estimated_cost", "cost", "owner",
    "sent_at", "context", "installation",
}  # fmt: skip
DISCORD_ID = 1_234_567_890_123_456_789  # a snowflake: needs 64 bits
ROOT = Path(__file__).resolve().parents[2]

# Another bot process's ledger, mid-request until it is killed: one request sent to the image
# service, one still waiting its turn. Its lease lasts argv[2] seconds, renewed as usual.
HOLDER = """
import asyncio, sys
from bot.store import ledger
from bot.images import ImageRequest, load_catalog, prepare_request

ledger.LEASE_SECONDS = float(sys.argv[2])

async def main(url):
    book = ledger.Ledger(url)
    await book.open()
    request = ImageRequest(prompt="an otter", model="gpt-image-1", count=2, user="u")
    prepared = prepare_request(request, load_catalog()["gpt-image-1"])
    sent, waiting = [
        await book.admitted(prepared, member_id=7, guild_id=8, channel_id=9) for _ in range(2)
    ]
    assert await book.sending(sent)
    print(sent, waiting, flush=True)
    await asyncio.Event().wait()

asyncio.run(main(sys.argv[1]))
"""


def prepared(count: int = 2) -> PreparedRequest:
    request = ImageRequest(prompt="an otter", model="gpt-image-1", count=count, user="u")
    return prepare_request(request, load_catalog()["gpt-image-1"])


async def test_migrations_create_the_schema_from_nothing_and_run_again_harmlessly(
    database_url: str,
) -> None:
    engine = open_engine(database_url)
    try:
        assert await migrate(engine) == head_revision()
        assert await migrate(engine) == head_revision()
        async with engine.connect() as connection:
            columns = await connection.run_sync(
                lambda sync: {c["name"] for c in inspect(sync).get_columns("usage_ledger")}
            )
    finally:
        await engine.dispose()
    assert columns == LEDGER_COLUMNS


async def test_a_request_is_recorded_pending_then_settled_with_its_usage_and_cost(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ledger, "estimate_cost", lambda prepared: Decimal("0.084"))
    monkeypatch.setattr(ledger, "settle_cost", lambda *args, **kwargs: Decimal("0.0421"))
    engine = open_engine(database_url)
    await migrate(engine)
    await engine.dispose()
    book = Ledger(database_url)
    await book.open()
    try:
        row_id = await book.admitted(
            prepared(), member_id=DISCORD_ID, guild_id=DISCORD_ID + 1, channel_id=DISCORD_ID + 2
        )
        (pending,) = await ledger_rows(database_url)
        assert (pending["outcome"], pending["estimated_cost"], pending["cost"]) == (
            "pending",
            Decimal("0.084"),
            None,
        )
        usage = {
            "input_tokens": 50,
            "output_tokens": 544,
            "input_tokens_details": {"text_tokens": 40, "image_tokens": 10},
        }
        await book.settle(
            row_id, Outcome.DELIVERED, prepared(), images_returned=2, images_delivered=2,
            request_id="req_42", usage=usage,
        )  # fmt: skip
    finally:
        await book.close()
    (row,) = await ledger_rows(database_url)
    assert (row["member_id"], row["guild_id"], row["channel_id"]) == (
        DISCORD_ID,
        DISCORD_ID + 1,
        DISCORD_ID + 2,
    )
    assert (row["model"], row["images_requested"], row["images_delivered"]) == ("gpt-image-1", 2, 2)
    assert (row["input_text_tokens"], row["input_image_tokens"], row["output_tokens"]) == (
        40,
        10,
        544,
    )
    assert (row["outcome"], row["request_id"], row["cost"]) == (
        "delivered",
        "req_42",
        Decimal("0.0421"),
    )
    assert row["settled_at"] is not None


async def test_a_database_that_cannot_be_used_stops_start_up_naming_database_url(
    tmp_path: Path,
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    settings = make_settings(
        "http://127.0.0.1:9/v1", tmp_path, database_url=f"sqlite:///{blocker}/ledger.db"
    )
    bot = ImagineBot(settings, sync_on_start=False)
    try:
        with pytest.raises(DatabaseUnavailable, match=r"\(DATABASE_URL\) cannot be used"):
            await bot.setup_hook()
    finally:
        await bot.close()


def test_start_up_ends_with_one_line_and_status_1_when_the_database_is_unusable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    sentence = "the database postgresql+asyncpg://bot:***@db/imagine (DATABASE_URL) cannot be used"

    async def unusable(*args: object, **kwargs: object) -> None:
        raise DatabaseUnavailable(sentence)

    monkeypatch.setattr(app, "_serve", unusable)
    monkeypatch.setattr(discord.utils, "setup_logging", lambda **kwargs: None)
    assert run_bot(make_settings("http://127.0.0.1:9/v1", tmp_path)) == 1
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in errors] == [sentence]
    assert errors[0].exc_info is None


async def test_migrate_and_usage_commands(database_url: str, tmp_path: Path) -> None:
    env = {"OPENAI_API_KEY": API_KEY, "DATABASE_URL": database_url}
    code, out, err = await run_cli("migrate", env=env, cwd=tmp_path)
    assert code == 0, err
    assert out.strip().endswith(f"is at revision {head_revision()}")

    book = Ledger(database_url)
    await book.open()
    try:
        # The image service's request ids go into the CSV: one that a spreadsheet would run.
        for member, guild, request_id in ((1, 10, "-2+3+cmd|' /C calc'!A0"), (1, 10, "req_2"),
                                          (2, 20, "req_3")):  # fmt: skip
            row = await book.admitted(prepared(), member_id=member, guild_id=guild, channel_id=5)
            await book.settle(
                row,
                Outcome.DELIVERED,
                prepared(),
                images_returned=2,
                images_delivered=2,
                request_id=request_id,
            )
        await book.admitted(prepared(count=1), member_id=3, guild_id=10, channel_id=5)
    finally:
        await book.close()

    today = dt.datetime.now(dt.UTC).date().isoformat()
    code, out, err = await run_cli(
        "usage", "--since", today, "--server", "10", "--csv", "rows.csv", env=env, cwd=tmp_path
    )
    assert code == 0, err
    expected = sum(
        (settle_cost(prepared(), None, 2) or Decimal(0) for _ in range(2)), start=Decimal(0)
    )
    assert "3 request(s), 4 image(s) delivered" in out
    assert f"{format_usd(expected)} where the cost is known, 1 request(s) of unknown cost" in out
    assert any(line.split()[:3] == ["gpt-image-1", "3", "4"] for line in out.splitlines())
    assert any(line.split()[:3] == ["1", "2", "4"] for line in out.splitlines())
    with (tmp_path / "rows.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["member_id"] for row in rows] == ["1", "1", "3"]
    assert [row["outcome"] for row in rows] == ["delivered", "delivered", "pending"]
    assert [row["request_id"] for row in rows] == ["'-2+3+cmd|' /C calc'!A0", "req_2", ""]

    code, out, _ = await run_cli("usage", "--since", "2999-01-01", env=env, cwd=tmp_path)
    assert code == 0
    assert "0 request(s)" in out


async def test_migrate_names_database_url_without_its_password(tmp_path: Path) -> None:
    env = {
        "OPENAI_API_KEY": API_KEY,
        "DATABASE_URL": "postgresql://bot:hunter2-SENTINEL@127.0.0.1:9/imagine",
    }
    code, out, err = await run_cli("migrate", env=env, cwd=tmp_path)
    assert code == 1
    assert "DATABASE_URL" in err and "hunter2" not in err + out
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


async def test_simultaneous_requests_each_get_their_own_row_in_one_group(tmp_path: Path) -> None:
    url = default_database_url(tmp_path)
    await migrate_database(url)
    book = Ledger(url)
    await book.open()
    try:
        ids = await asyncio.gather(
            *(
                book.admitted(prepared(), member_id=member, guild_id=7, channel_id=8)
                for member in range(1, 51)
            )
        )
    finally:
        await book.close()
    rows = await ledger_rows(url)
    assert len(set(ids)) == 50
    assert {row["id"]: row["member_id"] for row in rows} == dict(
        zip(ids, range(1, 51), strict=True)
    )


async def test_a_request_that_gives_up_while_its_row_is_written_is_settled_as_never_sent(
    tmp_path: Path,
) -> None:
    url = default_database_url(tmp_path)
    await migrate_database(url)
    book = Ledger(url)
    await book.open()
    # Another process holds SQLite's write lock: the ledger's writer waits in the database.
    other_process = sqlite3.connect(tmp_path / DATABASE_FILE, isolation_level=None)
    other_process.execute("BEGIN IMMEDIATE")
    commit = book._group_commit
    assert commit is not None, "SQLite writes go through the group commit"
    try:
        admission = asyncio.create_task(
            book.admitted(prepared(), member_id=DISCORD_ID, guild_id=7, channel_id=8)
        )
        await asyncio.sleep(0)  # submitted
        while commit._waiting:  # noqa: ASYNC110 - until the writer has taken it into a group
            await asyncio.sleep(0.01)
        admission.cancel()
    finally:
        other_process.rollback()
        other_process.close()
    await book.close()  # the writer finishes what it took
    (row,) = await ledger_rows(url)
    assert row["outcome"] == Outcome.CANCELLED.value
    assert Decimal(row["cost"]) == 0  # never sent: nothing counts against a budget


async def test_a_bot_stopping_while_the_database_is_away_names_the_rows_left_pending(
    postgres_server_of_its_own: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    url = postgres_server_of_its_own.create_database()
    await migrate_database(url)
    book = Ledger(url)
    await book.open()
    row_id = await book.admitted(prepared(), member_id=DISCORD_ID, guild_id=None, channel_id=None)

    postgres_server_of_its_own.stop()
    with pytest.raises(Exception):  # noqa: B017, PT011 - whatever the driver raises
        await book.settle(row_id, Outcome.DELIVERED, prepared(), images_returned=2)
    assert book.unsettled == {row_id}
    await book.close()

    assert f"could not settle row(s) {row_id} before stopping" in caplog.text
    postgres_server_of_its_own.start()
    (row,) = await ledger_rows(url)
    assert row["outcome"] == "pending"  # its estimate stays reserved: never an overspend


async def test_rows_of_a_killed_process_are_settled_once_its_lease_expires_never_before(
    database_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    lease = 1.0  # seconds; renewed every quarter of it
    monkeypatch.setattr(ledger, "LEASE_SECONDS", lease)
    await migrate_database(database_url)
    holder = await asyncio.create_subprocess_exec(
        sys.executable, "-c", HOLDER, database_url, str(lease), cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    metrics = Metrics()
    book = Ledger(database_url, metrics=metrics)  # a second process, alive throughout
    try:
        assert holder.stdout is not None
        line = await asyncio.wait_for(holder.stdout.readline(), 60)
        assert line, (await holder.communicate())[1].decode()
        sent, waiting = map(int, line.split())
        await book.open()
        mine = await book.admitted(prepared(), member_id=7, guild_id=8, channel_id=9)
        await asyncio.sleep(4 * lease)  # the other keeps its lease: nothing of its is taken
        rows = {row["id"]: row for row in await ledger_rows(database_url)}
        assert [rows[row_id]["outcome"] for row_id in (sent, waiting, mine)] == ["pending"] * 3

        holder.kill()  # SIGKILL: nothing of it runs any more
        await holder.wait()
        await asyncio.sleep(2 * lease)  # its lease expires; this process's keeper settles
        rows = {row["id"]: row for row in await ledger_rows(database_url)}
        assert await book.settle_abandoned() == []  # settled once, by the keeper
        assert book.unsettled == frozenset()
    finally:
        if holder.returncode is None:
            holder.kill()
            await holder.wait()
        await book.close()

    assert [rows[row_id]["outcome"] for row_id in (sent, waiting, mine)] == [
        "abandoned", "abandoned", "pending",
    ]  # fmt: skip
    # Sent: it may have cost what was reserved, which stays counted (cost unknown); never sent:
    # released. The live process's own row is untouched.
    assert (rows[sent]["cost"], rows[waiting]["cost"]) == (None, 0)
    engine = open_engine(database_url)
    try:
        async with engine.connect() as connection:
            since = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
            counted = await counted_since(connection, since, 8, 7, images=False)
    finally:
        await engine.dispose()
    assert counted == rows[sent]["estimated_cost"] + rows[mine]["estimated_cost"]
    sample = metrics.registry.get_sample_value
    assert sample("imagine_requests_total", {"command": "imagine", "outcome": "abandoned"}) == 2
    assert sample("imagine_unknown_cost_requests_total", {"model": "gpt-image-1"}) == 1
    assert (
        f"settled 2 row(s) left pending by process {socket.gethostname()} pid {holder.pid}, "
        f"whose lease expired, as abandoned: 1 may have been sent"
    ) in caplog.text


class _WallClock:
    """The wall clock as discord.py reads it (its tasks and timers), stepped by ``offset``: a
    host whose clock NTP corrects, or an operator sets. The database's clock does not move."""

    offset = dt.timedelta(0)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        clock = self

        class Stepped(dt.datetime):
            @classmethod
            def now(cls, tz: dt.tzinfo | None = None) -> Stepped:
                return dt.datetime.now(tz) + clock.offset  # type: ignore[return-value]

        shim = types.ModuleType("datetime")
        shim.__dict__.update(dt.__dict__)
        shim.datetime = Stepped  # type: ignore[attr-defined]
        monkeypatch.setattr(discord.utils, "datetime", shim)
        monkeypatch.setattr(discord.ext.tasks, "datetime", shim)


@pytest.mark.parametrize(
    "step", [dt.timedelta(hours=-1), dt.timedelta(days=1)], ids=["back-an-hour", "forward-a-day"]
)
async def test_the_lease_is_renewed_every_quarter_whatever_the_wall_clock_does(
    database_url: str, monkeypatch: pytest.MonkeyPatch, step: dt.timedelta
) -> None:
    lease = 1.0  # seconds; renewed every quarter of it
    monkeypatch.setattr(ledger, "LEASE_SECONDS", lease)
    clock = _WallClock()
    clock.install(monkeypatch)
    await migrate_database(database_url)
    book = Ledger(database_url)
    await book.open()
    other = Ledger(database_url)  # another process, whose clock is right
    renewals = 0
    renew = book._renew_lease

    async def counted() -> None:
        nonlocal renewals
        renewals += 1
        await renew()

    monkeypatch.setattr(book, "_renew_lease", counted)
    try:
        waiting = await book.admitted(prepared(), member_id=7, guild_id=8, channel_id=9)
        await asyncio.sleep(lease / 2)
        clock.offset = step  # while a request waits its turn
        await asyncio.sleep(3 * lease)
        await other.open()  # settles what processes that are gone left
        # Its request is still this process's to send: back an hour, the keeper slept through
        # it (the lease expired, the row was abandoned and the request refused its turn).
        assert await book.sending(waiting)
    finally:
        await book.close()
        await other.close()
    # Forward a day, it renewed the lease 5,760 times a day's worth at once (a write each).
    assert renewals <= 3 * 4 + 2
    (row,) = await ledger_rows(database_url)
    assert row["outcome"] == "pending"
