"""Budgets: their notation, their windows, and admissions that cannot overspend together."""

from __future__ import annotations

import asyncio
import datetime as dt
from decimal import Decimal
from pathlib import Path

import pytest

from bot.config import ConfigError, load_settings
from bot.images import ImageRequest, PreparedRequest, load_catalog, prepare_request
from bot.images.pricing import MAX_REQUEST_COST
from bot.store.budgets import (
    BUDGET_ACCEPTS,
    MAX_BUDGET_USD,
    Budget,
    OverBudget,
    Period,
    parse_budgets,
)
from bot.store.db import migrate, open_engine
from bot.store.ledger import Ledger, Outcome, counted_since
from tests.conftest import API_KEY
from tests.databases import ledger_rows

MEMBER = 1_234_567_890_123_456_789
SERVER = 987_654_321_098_765_432


def test_budgets_are_read_in_money_and_images_per_day_and_month() -> None:
    assert parse_budgets("$2/day; $20.50/month;40 images/month;1 image/day") == (
        Budget(Decimal("2"), Period.DAY),
        Budget(Decimal("20.50"), Period.MONTH),
        Budget(Decimal("40"), Period.MONTH, images=True),
        Budget(Decimal("1"), Period.DAY, images=True),
    )


@pytest.mark.parametrize("value", ["$-1/day", "5/fortnight", "abc"])
def test_a_malformed_budget_stops_start_up_naming_the_variable(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    monkeypatch.setenv("MEMBER_BUDGET", value)
    with pytest.raises(ConfigError) as caught:
        load_settings(require_discord=False)
    assert str(caught.value) == (
        f"MEMBER_BUDGET is not valid: {value!r} is not a budget; it must be {BUDGET_ACCEPTS}."
    )


@pytest.mark.parametrize(
    ("variable", "value", "most"),
    [
        ("MEMBER_BUDGET", "$1000000.000001/day", "$1,000,000"),
        ("SERVER_BUDGET", "$2/day;" + "9" * 27 + " images/month", "1,000,000 images"),
        ("USER_BUDGET", "$1000001/month", "$1,000,000"),
        ("TOTAL_BUDGET", "$50/day;$1000000.5/month", "$1,000,000"),
    ],
)
def test_an_amount_too_large_for_a_budget_stops_start_up_naming_the_variable(
    variable: str, value: str, most: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_settings(require_discord=False)
    part = value.split(";")[-1]
    assert str(caught.value) == (
        f"{variable} is not valid: {part!r} is more than {most}, the most a budget may be; "
        f"it must be {BUDGET_ACCEPTS}."
    )


def test_windows_are_calendar_days_and_months_in_utc() -> None:
    late = dt.datetime(2026, 12, 31, 23, 59, tzinfo=dt.UTC)
    assert Period.DAY.start(late) == dt.datetime(2026, 12, 31, tzinfo=dt.UTC)
    assert Period.DAY.reset(late) == dt.datetime(2027, 1, 1, tzinfo=dt.UTC)
    assert Period.MONTH.start(late) == dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    assert Period.MONTH.reset(late) == dt.datetime(2027, 1, 1, tzinfo=dt.UTC)
    east = dt.datetime(2026, 3, 1, 0, 30, tzinfo=dt.timezone(dt.timedelta(hours=2)))  # Feb, UTC
    assert Period.MONTH.reset(east) == dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


async def migrated(database_url: str) -> None:
    engine = open_engine(database_url)
    await migrate(engine)
    await engine.dispose()


def one_image() -> PreparedRequest:
    request = ImageRequest(prompt="an otter", model="dall-e-2", count=1, user="u")
    return prepare_request(request, load_catalog()["dall-e-2"])


async def admitted_by_two_processes(
    ledgers: list[Ledger], requests: list[tuple[int, int]]
) -> tuple[int, int]:
    """Admit one image for each (member, server) of ``requests`` at once, alternately through
    each of two ledgers (two engines: two bot processes sharing the database); how many were
    admitted, and how many a budget refused."""
    for book in ledgers:
        await book.open()
    try:
        outcomes = await asyncio.gather(
            *(
                ledgers[n % 2].admitted(one_image(), member_id=member, guild_id=guild, channel_id=1)
                for n, (member, guild) in enumerate(requests)
            ),
            return_exceptions=True,
        )
    finally:
        for book in ledgers:
            await book.close()
    admitted = [o for o in outcomes if isinstance(o, int)]
    refused = [o for o in outcomes if isinstance(o, OverBudget)]
    assert len(admitted) + len(refused) == len(requests), outcomes
    return len(admitted), len(refused)


async def test_twenty_simultaneous_admissions_from_two_processes_reserve_exactly_the_budget(
    database_url: str,
) -> None:
    await migrated(database_url)
    budget = parse_budgets("5 images/day")
    ledgers = [Ledger(database_url, member_budget=budget) for _ in range(2)]

    assert await admitted_by_two_processes(ledgers, [(MEMBER, SERVER)] * 20) == (5, 15)
    rows = await ledger_rows(database_url)
    assert [row["outcome"] for row in rows] == ["pending"] * 5


async def test_twenty_admissions_across_servers_from_two_processes_reserve_the_bot_wide_budgets(
    database_url: str,
) -> None:
    await migrated(database_url)
    # Each request in a server of its own: from one member, then from a member each.
    user = parse_budgets("$0.10/day")  # five images of $0.02
    one_user = [Ledger(database_url, user_budget=user) for _ in range(2)]
    total = parse_budgets("$0.20/day")  # the member's five, and five more
    everyone = [Ledger(database_url, total_budget=total) for _ in range(2)]

    alone = [(MEMBER, SERVER + n) for n in range(20)]
    assert await admitted_by_two_processes(one_user, alone) == (5, 15)
    together = [(MEMBER + 1 + n, SERVER + n) for n in range(20)]
    assert await admitted_by_two_processes(everyone, together) == (5, 15)
    rows = await ledger_rows(database_url)
    assert sum(row["estimated_cost"] for row in rows) == Decimal("0.20")


async def test_a_server_budget_counts_every_member_and_a_member_budget_only_its_member(
    database_url: str,
) -> None:
    await migrated(database_url)
    book = Ledger(
        database_url,
        member_budget=parse_budgets("$0.04/day"),
        server_budget=parse_budgets("$0.05/month"),
    )
    await book.open()
    try:
        for member in (1, 2):  # $0.02 each
            await book.admitted(one_image(), member_id=member, guild_id=SERVER, channel_id=1)
        await book.admitted(one_image(), member_id=1, guild_id=SERVER + 1, channel_id=1)
        with pytest.raises(OverBudget) as caught:
            await book.admitted(one_image(), member_id=3, guild_id=SERVER, channel_id=1)
        await book.admitted(one_image(), member_id=1, guild_id=SERVER + 1, channel_id=1)
        with pytest.raises(OverBudget):
            await book.admitted(one_image(), member_id=1, guild_id=SERVER + 1, channel_id=1)
    finally:
        await book.close()
    refusal = caught.value.refusal
    assert (refusal.used, refusal.needed) == (Decimal("0.04"), Decimal("0.02"))


async def test_the_dearest_request_and_the_largest_budget_fit_the_ledger(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Priced at the bounds start-up allows: ten images of $1,000 are one request of $10,000.
    models = tmp_path / "models.toml"
    models.write_text(
        '[models.dear]\nbase = "dall-e-2"\n[models.dear.price]\nas_of = 2026-01-01\n'
        'per_image = { "standard:256x256" = 1000, "standard:512x512" = 1000, '
        '"standard:1024x1024" = 1000 }\n'
    )
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    monkeypatch.setenv("IMAGE_MODELS_FILE", str(models))
    monkeypatch.setenv("MEMBER_BUDGET", f"${MAX_BUDGET_USD}/month")
    settings = load_settings(require_discord=False)
    request = ImageRequest(prompt="gold", model="dear", count=10, user="u")
    dearest = prepare_request(request, settings.catalog["dear"])
    await migrated(database_url)
    book = Ledger(database_url, member_budget=settings.member_budget)
    await book.open()
    try:
        for _ in range(3):
            row = await book.admitted(dearest, member_id=MEMBER, guild_id=SERVER, channel_id=1)
            await book.settle(
                row, Outcome.DELIVERED, dearest, images_returned=10, images_delivered=10
            )
        async with book.engine.connect() as connection:
            since = Period.MONTH.start(dt.datetime.now(dt.UTC))
            used = await counted_since(connection, since, SERVER, MEMBER, images=False)
    finally:
        await book.close()
    assert used == 3 * MAX_REQUEST_COST
    assert [row["cost"] for row in await ledger_rows(database_url)] == [MAX_REQUEST_COST] * 3


async def test_a_check_of_the_budgets_before_a_download_refuses_as_admitting_does_unrecorded(
    database_url: str,
) -> None:
    await migrated(database_url)
    book = Ledger(database_url, member_budget=parse_budgets("$0.03/day"))
    await book.open()
    try:
        await book.check_budgets(one_image(), member_id=MEMBER, guild_id=SERVER)  # room for it
        await book.admitted(one_image(), member_id=MEMBER, guild_id=SERVER, channel_id=1)
        with pytest.raises(OverBudget) as caught:  # $0.02 more would pass $0.03
            await book.check_budgets(one_image(), member_id=MEMBER, guild_id=SERVER)
        await book.check_budgets(one_image(), member_id=MEMBER + 1, guild_id=SERVER)
    finally:
        await book.close()
    assert (caught.value.refusal.used, caught.value.refusal.needed) == (
        Decimal("0.02"),
        Decimal("0.02"),
    )
    assert len(await ledger_rows(database_url)) == 1  # only the admission wrote a row
