"""The operator's MEMBER_BUDGET and SERVER_BUDGET through simcord: ceilings a server's managers can
lower and never lift (unless SERVERS_MAY_RAISE_BUDGETS), what /imagine-settings and /usage say of
them, and amounts too large to be a budget refused with a sentence; on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest

from bot.store.budgets import BUDGET_ACCEPTS
from bot.store.db.schema import server_settings, settings_changes
from bot.store.server_settings import Setting
from cogs.settings._cog import SETTINGS_UNAVAILABLE
from tests.cogs.support import fields, setting
from tests.cogs.test_settings import table_rows
from tests.fakes.images_api import FakeImagesAPI

OPERATOR = {"member_budget": "$0.10/day", "server_budget": "$0.20/day"}


@pytest.fixture
def servers_may_raise_budgets() -> bool:
    return False


@pytest.fixture
def bot_overrides(database_url: str, servers_may_raise_budgets: bool) -> dict[str, Any]:
    return {
        "database_url": database_url,
        **OPERATOR,
        "servers_may_raise_budgets": servers_may_raise_budgets,
    }


async def hd_image(member: Any, channel: Any) -> Any:
    """One dall-e-3 HD square: $0.08 reserved."""
    result = await member.slash(
        channel, "imagine", prompt="a storm", model="dall-e-3", quality="hd"
    )
    return result.response


async def test_a_managers_none_leaves_the_operators_budgets_in_force(
    simcord_env: Any, channel: Any, alice: Any, bob: Any, manager: Any, images_api: FakeImagesAPI
) -> None:
    answer = await setting(manager, channel, "server-budget", value="none")
    await setting(manager, channel, "member-budget", value="none")

    assert len((await hd_image(alice, channel)).attachments) == 1
    over_member = await hd_image(alice, channel)  # $0.16 of the operator's $0.10 a member
    assert over_member.ephemeral
    assert over_member.content.startswith("Your budget on this server is $0.10 per day")
    assert len((await hd_image(bob, channel)).attachments) == 1
    over_server = await hd_image(manager, channel)  # $0.24 of the operator's $0.20 a server
    assert over_server.ephemeral
    assert over_server.content.startswith("This server's budget is $0.20 per day")
    assert len(images_api.generation_requests) == 2
    assert answer == (
        "server-budget is now none (it was the default): this server sets no budget of its own, "
        "and this bot's ceiling, set by its operator, applies: $0.20/day."
    )


@pytest.mark.parametrize("servers_may_raise_budgets", [True])
async def test_an_operator_may_let_servers_lift_the_budgets(
    simcord_env: Any, channel: Any, alice: Any, bob: Any, manager: Any, images_api: FakeImagesAPI
) -> None:
    assert await setting(manager, channel, "server-budget", value="none") == (
        "server-budget is now no budget (it was the default)."
    )
    await setting(manager, channel, "member-budget", value="none")

    for member in (alice, alice, bob, manager):
        assert len((await hd_image(member, channel)).attachments) == 1
    assert len(images_api.generation_requests) == 4


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_budget_above_the_ceiling_is_told_and_both_budgets_hold(
    simcord_env: Any, channel: Any, alice: Any, manager: Any, images_api: FakeImagesAPI
) -> None:
    answer = await setting(manager, channel, "member-budget", value="$1/day;1 image/month")
    assert answer == (
        "member-budget is now $1.00/day;1 image/month (it was the default). $1.00/day is above "
        "this bot's ceiling of $0.10/day, set by its operator, so the ceiling applies. In force "
        "on this server: $0.10/day;1 image/month."
    )
    shown = fields((await manager.slash(channel, "imagine-settings show")).response.embeds[0])
    assert shown["member-budget"].startswith(
        "$0.10/day;1 image/month\nthis server's own: $1.00/day;1 image/month · this bot's "
        "ceiling: $0.10/day\nchanged by <@"
    )
    assert shown["server-budget"] == "$0.20/day (default)"

    # The server's own monthly image budget holds beside the operator's daily money one.
    drawn = await alice.slash(channel, "imagine", prompt="a cat", model="dall-e-2")
    assert len(drawn.response.attachments) == 1
    refused = await alice.slash(channel, "imagine", prompt="a dog", model="dall-e-2")
    assert refused.response.content.startswith("Your budget on this server is 1 image per month")
    usage = fields((await alice.slash(channel, "usage")).response.embeds[0])
    assert [line.partition(" used")[0] for line in usage["Budgets"].splitlines()] == [
        "Yours: $0.10 per day: $0.02",
        "Yours: 1 image per month: 1 image",
        "The server's: $0.20 per day: $0.02",
    ]

    # A lower amount of the same period is the server's to set; a higher one of another period
    # leaves the operator's in force beside it.
    answer = await setting(manager, channel, "member-budget", value="$0.05/day")
    assert answer == "member-budget is now $0.05/day (it was $1.00/day;1 image/month)."
    assert (await hd_image(alice, channel)).content.startswith(
        "Your budget on this server is $0.05 per day"
    )
    answer = await setting(manager, channel, "member-budget", value="$5/month")
    assert answer == (
        "member-budget is now $5.00/month (it was $0.05/day). This bot's ceiling of $0.10/day, "
        "set by its operator, applies as well. In force on this server: $0.10/day;$5.00/month."
    )
    assert len((await hd_image(alice, channel)).attachments) == 1  # $0.10 of $0.10 today
    assert (await hd_image(alice, channel)).content.startswith(
        "Your budget on this server is $0.10 per day"
    )


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    ("value", "shown", "most"),
    [
        ("$" + "9" * 27 + "/day", "'$" + "9" * 27 + "/day'", "$1,000,000"),
        ("9" * 1100 + " images/month", "'" + "9" * 39 + "…'", "1,000,000 images"),
        ("$1000000.01/month", "'$1000000.01/month'", "$1,000,000"),
    ],
)
async def test_an_amount_too_large_for_a_budget_is_refused_with_a_sentence(
    simcord_env: Any,
    channel: Any,
    alice: Any,
    manager: Any,
    database_url: str,
    value: str,
    shown: str,
    most: str,
) -> None:
    answer = await setting(manager, channel, "member-budget", value=value)

    assert answer != SETTINGS_UNAVAILABLE
    assert answer == (
        f"member-budget must be {BUDGET_ACCEPTS}, or none for no budget of this server's own "
        f"({shown} is more than {most}, the most a budget may be)."
    )
    assert await table_rows(database_url, settings_changes) == []
    assert await table_rows(database_url, server_settings) == []
    usage = await alice.slash(channel, "usage")
    assert fields(usage.response.embeds[0])["Budgets"].startswith("Yours: $0.10 per day")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_budget_an_older_version_stored_unbounded_is_ignored_and_replaceable(
    simcord_env: Any, guild: Any, channel: Any, alice: Any, manager: Any
) -> None:
    # Stored before amounts were bounded: thousands of digits, which nothing can add up to.
    legacy = "9" * 3000 + " images/month"
    store = simcord_env.bot.services.server_settings
    await store.change(guild.id, Setting.MEMBER_BUDGET, legacy, by=manager.id)

    usage = await alice.slash(channel, "usage")
    assert fields(usage.response.embeds[0])["Budgets"].startswith("Yours: $0.10 per day")
    answer = await setting(manager, channel, "member-budget", value="$0.05/day")
    assert answer == f"member-budget is now $0.05/day (it was {legacy[:199]}…)."
