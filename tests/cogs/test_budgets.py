"""Budgets through /imagine: a member over budget is told so privately, before anything is spent;
on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

import discord
import pytest

from bot.budgets import Period
from bot.images import ImageRequest, load_catalog, prepare_request
from bot.images.pricing import estimate_cost
from tests.cogs.support import declare_generation_waits, finish, private_reply
from tests.databases import ledger_rows
from tests.fakes.images_api import FakeImagesAPI


@pytest.fixture
def bot_overrides(database_url: str, budget: str) -> dict[str, Any]:
    return {"database_url": database_url, "member_budget": budget}


@pytest.mark.parametrize("budget", ["1 image/day"])
async def test_a_member_over_budget_is_told_the_budget_what_is_used_and_when_it_resets(
    simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI
) -> None:
    first = await alice.slash(channel, "imagine", prompt="a cat", model="dall-e-2")
    assert len(first.response.attachments) == 1

    refused = await alice.slash(channel, "imagine", prompt="a dog", model="dall-e-2")

    resets = discord.utils.format_dt(Period.DAY.reset(discord.utils.utcnow()), "R")
    assert refused.response.ephemeral
    assert refused.response.content == (
        "Your budget on this server is 1 image per day (calendar days, UTC): 1 image is already "
        "used or reserved for requests still running, and this request asks for 1 image. "
        f"It resets {resets}."
    )
    assert len(images_api.generation_requests) == 1


@pytest.mark.parametrize("budget", ["$1/day"])
async def test_a_money_budget_refuses_a_model_whose_price_is_not_known(
    simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI
) -> None:
    result = await alice.slash(channel, "imagine", prompt="a cat", model="gpt-image-2.5-flare")

    assert result.response.ephemeral
    assert result.response.content == (
        "This server limits spending, and the cost of gpt-image-2.5-flare is not known to the bot, "
        "so it cannot be checked. A server admin can add its price (IMAGE_MODELS_FILE) or pick a "
        "priced model."
    )
    assert images_api.generation_requests == []


def _one_dall_e_2_image() -> str:
    request = ImageRequest(prompt="a cat", model="dall-e-2", count=1, user="u")
    cost = estimate_cost(prepare_request(request, load_catalog()["dall-e-2"]))
    assert cost is not None
    return f"${cost}/day"


@pytest.mark.parametrize("budget", [_one_dall_e_2_image()])
async def test_a_request_the_safety_system_refuses_frees_its_reservation(
    simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI, database_url: str
) -> None:
    blocked = await alice.slash(
        channel, "imagine", prompt="a moderation_blocked cat", model="dall-e-2"
    )
    private_reply(blocked)

    again = await alice.slash(channel, "imagine", prompt="a cat", model="dall-e-2")

    assert len(again.response.attachments) == 1
    assert [row["outcome"] for row in await ledger_rows(database_url)] == ["refused", "delivered"]


@pytest.mark.parametrize("budget", ["5 images/day"])
async def test_twenty_simultaneous_requests_from_one_member_admit_exactly_the_budget(
    simcord_env: Any,
    channel: Any,
    alice: Any,
    images_api: FakeImagesAPI,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # simcord delivers interactions one at a time: each admission is held at the ledger until
    # all twenty have arrived, then they race for the budget together, as twenty at once would.
    # Each held request is acknowledged (as a slow ledger's is) without a second's wait.
    monkeypatch.setattr("bot.admission.ADMISSION_BEFORE_ACKNOWLEDGING", 0.01)
    ledger = simcord_env.bot.services.ledger
    real_admitted = ledger.admitted
    arrived = asyncio.Event()
    waiting: list[None] = []

    async def all_at_once(*args: Any, **kwargs: Any) -> int:
        waiting.append(None)
        if len(waiting) == 20:
            arrived.set()
        await simcord_env.external_wait(arrived.wait(), reason="the twenty admissions gather")
        return int(await real_admitted(*args, **kwargs))

    ledger.admitted = all_at_once
    declare_generation_waits(simcord_env)
    results = [
        await alice.slash(channel, "imagine", prompt=f"cat {n}", model="dall-e-2")
        for n in range(20)
    ]
    await finish(simcord_env, seconds=60)

    delivered = [r for r in results if r.response is not None and r.response.attachments]
    told = [
        m.content
        for r in results
        for m in ([r.response] if r.response is not None else []) + list(r.followups)
        if m.ephemeral and m.content.startswith("Your budget on this server is 5 images per day")
    ]
    assert (len(delivered), len(told)) == (5, 15)
    assert len(images_api.generation_requests) == 5
    rows = await ledger_rows(database_url)
    assert [row["outcome"] for row in rows] == ["delivered"] * 5
