"""The operator's bot-wide budgets through simcord: USER_BUDGET (each Discord user, every server and
direct message together) and TOTAL_BUDGET (the whole bot). Anyone can invite the bot to servers of
their own, each with a fresh MEMBER_BUDGET and SERVER_BUDGET: these two still hold, whatever a
server's settings say; on SQLite and PostgreSQL."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import discord
import pytest
from sqlalchemy import event

from bot.images import ImageRequest, load_catalog, prepare_request
from bot.images.pricing import estimate_cost, format_usd
from bot.store.budgets import Period
from tests.cogs.support import fields, finish, setting
from tests.cogs.test_budgets import delivered_and_told, gather_admissions
from tests.databases import ledger_rows
from tests.fakes.images_api import FakeImagesAPI


def _one_image() -> Decimal:
    """What one dall-e-2 image (1024x1024) reserves and costs."""
    request = ImageRequest(prompt="a cat", model="dall-e-2", count=1, user="u")
    cost = estimate_cost(prepare_request(request, load_catalog()["dall-e-2"]))
    assert cost is not None
    return cost


IMAGE = _one_image()


def dollars(images: int) -> str:
    """A daily money budget that buys exactly ``images`` dall-e-2 images."""
    return f"${IMAGE * images}/day"


@pytest.fixture
def budgets() -> dict[str, Any]:
    return {}


@pytest.fixture
def bot_overrides(database_url: str, budgets: dict[str, Any]) -> dict[str, Any]:
    return {"database_url": database_url, **budgets}


def resets_today() -> str:
    return discord.utils.format_dt(Period.DAY.reset(discord.utils.utcnow()), "R")


async def cat(member: Any, channel: Any | None = None) -> Any:
    """/imagine of one dall-e-2 image, in ``channel`` (None: the member's direct messages with
    the bot); its first answer."""
    if channel is None:
        result = await member.slash("imagine", prompt="a cat", model="dall-e-2")
    else:
        result = await member.slash(channel, "imagine", prompt="a cat", model="dall-e-2")
    return result.response


def servers(env: Any, count: int) -> list[tuple[Any, Any]]:
    """``count`` servers of their own (as anyone may create and invite the bot to), each with a
    channel: (guild, channel)."""
    made = []
    for n in range(count):
        guild = env.create_guild(f"Server {n}")
        made.append((guild, guild.create_text_channel("imagine")))
    return made


@pytest.mark.parametrize(
    "budgets",
    [
        {
            "user_budget": dollars(3),
            "member_budget": dollars(2),  # each server alone would allow two more
            "servers_may_raise_budgets": True,  # and a server may lift its own: not this one
        }
    ],
)
async def test_a_member_in_three_servers_is_stopped_by_user_budget_across_them(
    simcord_env: Any, images_api: FakeImagesAPI, database_url: str
) -> None:
    alice = simcord_env.create_user("alice")
    places = servers(simcord_env, 3)
    members = [guild.add_member(alice) for guild, _ in places]
    manager_role = discord.Permissions(manage_guild=True)
    first_guild, first_channel = places[0]
    owner = first_guild.add_member(
        simcord_env.create_user("owner"),
        roles=[first_guild.create_role("Owner", permissions=manager_role)],
    )
    await setting(owner, first_channel, "member-budget", value="none")
    await setting(owner, first_channel, "server-budget", value="none")

    for member, (_, channel) in zip(members, places, strict=True):
        assert len((await cat(member, channel)).attachments) == 1

    told = (
        f"Your budget on this bot (every server and direct message together) is "
        f"{format_usd(IMAGE * 3)} per day (calendar days, UTC): {format_usd(IMAGE * 3)} is "
        f"already spent or reserved for requests still running, and this request may cost up "
        f"to {format_usd(IMAGE)}. It resets {resets_today()}."
    )
    for member, channel in ((members[0], first_channel), (alice, None)):
        refused = await cat(member, channel)
        assert refused.ephemeral
        assert refused.content == told
    # Someone else in the same server is not held back by alice's budget.
    bob = first_guild.add_member(simcord_env.create_user("bob"))
    assert len((await cat(bob, first_channel)).attachments) == 1

    assert len(images_api.generation_requests) == 4
    rows = await ledger_rows(database_url)
    assert sum(row["cost"] for row in rows if row["member_id"] == alice.id) == IMAGE * 3
    usage = fields((await members[1].slash(places[1][1], "usage")).response.embeds[0])
    assert f"Yours on every server: {format_usd(IMAGE * 3)} per day: " in usage["Budgets"]
    assert f"{format_usd(IMAGE * 3)} used or reserved, $0.00 left" in usage["Budgets"]


@pytest.mark.parametrize(
    "budgets", [{"total_budget": dollars(3), "servers_may_raise_budgets": True}]
)
async def test_members_of_many_servers_together_are_stopped_by_total_budget(
    simcord_env: Any, images_api: FakeImagesAPI, database_url: str
) -> None:
    places = servers(simcord_env, 4)
    members = [
        guild.add_member(simcord_env.create_user(f"member{n}"))
        for n, (guild, _) in enumerate(places)
    ]

    for member, (_, channel) in zip(members[:3], places[:3], strict=True):
        assert len((await cat(member, channel)).attachments) == 1

    told = (
        f"This bot's budget for everyone is {format_usd(IMAGE * 3)} per day (calendar days, "
        f"UTC), and what is left of it does not cover this request, which may cost up to "
        f"{format_usd(IMAGE)}. It resets {resets_today()}."
    )
    newcomer = simcord_env.create_user("newcomer")  # in a direct message
    refusals = ((members[3], places[3][1]), (members[0], places[0][1]), (newcomer, None))
    for member, channel in refusals:
        refused = await cat(member, channel)
        assert refused.ephemeral
        assert refused.content == told
    assert len(images_api.generation_requests) == 3
    assert sum(row["cost"] for row in await ledger_rows(database_url)) == IMAGE * 3
    # /usage says nothing of what everyone else spent.
    usage = fields((await members[3].slash(places[3][1], "usage")).response.embeds[0])
    assert usage["Budgets"] == "No budget on this server."


@pytest.mark.parametrize("budgets", [{"total_budget": dollars(5)}])
async def test_twenty_simultaneous_requests_across_servers_never_overspend_total_budget(
    simcord_env: Any,
    images_api: FakeImagesAPI,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    places = servers(simcord_env, 20)
    members = [
        guild.add_member(simcord_env.create_user(f"member{n}"))
        for n, (guild, _) in enumerate(places)
    ]
    gather_admissions(simcord_env, monkeypatch, 20)

    results = [
        await member.slash(channel, "imagine", prompt=f"cat {n}", model="dall-e-2")
        for n, (member, (_, channel)) in enumerate(zip(members, places, strict=True))
    ]
    await finish(simcord_env, seconds=60)

    told = f"This bot's budget for everyone is {format_usd(IMAGE * 5)} per day"
    assert delivered_and_told(results, told) == (5, 15)
    assert len(images_api.generation_requests) == 5
    rows = await ledger_rows(database_url)
    assert [row["outcome"] for row in rows] == ["delivered"] * 5
    assert sum(row["cost"] for row in rows) == IMAGE * 5


def admission_statements(env: Any) -> list[str]:
    """Every statement the bot's ledger sends its database from now on."""
    seen: list[str] = []

    def record(*args: Any) -> None:
        seen.append(str(args[2]))  # (connection, cursor, statement, ...)

    event.listen(env.bot.services.ledger.engine.sync_engine, "before_cursor_execute", record)
    return seen


@pytest.mark.parametrize(
    ("budgets", "locks", "sums"),
    [
        ({}, 0, 0),
        ({"member_budget": "$1/day"}, 1, 1),
        ({"member_budget": "$1/day", "user_budget": "$1/day"}, 2, 2),
        ({"member_budget": "$1/day", "total_budget": "$1/day;$2/month"}, 2, 3),
    ],
    ids=["default", "member", "member-and-user", "member-and-total"],
)
async def test_a_bot_wide_budget_adds_its_lock_and_sum_only_where_set(
    simcord_env: Any, channel: Any, alice: Any, database_url: str, locks: int, sums: int
) -> None:
    statements = admission_statements(simcord_env)

    assert len((await cat(alice, channel)).attachments) == 1

    postgresql = database_url.startswith("postgresql")
    taken = [s for s in statements if "pg_advisory_xact_lock" in s]
    summed = [s for s in statements if "sum(" in s.lower() and "usage_ledger" in s]
    assert (len(taken), len(summed)) == (locks if postgresql else 0, sums)
