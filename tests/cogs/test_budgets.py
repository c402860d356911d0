"""Budgets through /imagine: a member over budget is told so privately, before anything is spent;
on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
from decimal import Decimal
from typing import Any

import discord
import pytest

from bot.images import ImageRequest, load_catalog, prepare_request
from bot.images.pricing import estimate_cost, format_usd
from bot.store.budgets import Period
from tests.cogs.support import declare_generation_waits, finish, private_reply
from tests.databases import ledger_rows
from tests.fakes.images_api import FakeImagesAPI, UsageReport
from tests.fakes.tokens import honest_usage, no_usage, prompt_of


@pytest.fixture
def variable() -> str:
    """The setting ``budget`` is given to."""
    return "member_budget"


@pytest.fixture
def bot_overrides(database_url: str, budget: str, variable: str) -> dict[str, Any]:
    return {"database_url": database_url, variable: budget}


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


SERVERS_PRICE_UNKNOWN = (
    "This server limits spending, and the cost of gpt-image-2.5-flare is not known to the bot, "
    "so it cannot be checked. A server admin can add its price (IMAGE_MODELS_FILE) or pick a "
    "priced model."
)
BOTS_PRICE_UNKNOWN = (
    "This bot limits spending, and the cost of gpt-image-2.5-flare is not known to it, so it "
    "cannot be checked. Until its operator adds its price (IMAGE_MODELS_FILE), pick a model "
    "whose price is known."
)


@pytest.mark.parametrize("budget", ["$1/day"])
@pytest.mark.parametrize(
    ("variable", "told"),
    [
        ("member_budget", SERVERS_PRICE_UNKNOWN),
        ("user_budget", BOTS_PRICE_UNKNOWN),  # the operator's bot-wide budgets
        ("total_budget", BOTS_PRICE_UNKNOWN),
    ],
)
async def test_a_money_budget_refuses_a_model_whose_price_is_not_known(
    simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI, told: str
) -> None:
    result = await alice.slash(channel, "imagine", prompt="a cat", model="gpt-image-2.5-flare")

    assert result.response.ephemeral
    assert result.response.content == told
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


def gather_admissions(env: Any, monkeypatch: pytest.MonkeyPatch, count: int) -> None:
    """Hold each of the next ``count`` admissions at the ledger until all have arrived, then
    let them race for the budget together, as ``count`` requests at once would (simcord
    delivers interactions one at a time). Each held request is acknowledged (as a slow ledger's
    is) without a second's wait."""
    monkeypatch.setattr("bot.requests.admission.ADMISSION_BEFORE_ACKNOWLEDGING", 0.01)
    ledger = env.bot.services.ledger
    real_admitted = ledger.admitted
    arrived = asyncio.Event()
    waiting: list[None] = []

    async def all_at_once(*args: Any, **kwargs: Any) -> int:
        waiting.append(None)
        if len(waiting) == count:
            arrived.set()
        await env.external_wait(arrived.wait(), reason=f"the {count} admissions gather")
        return int(await real_admitted(*args, **kwargs))

    ledger.admitted = all_at_once
    declare_generation_waits(env)


async def cheapest_image(member: Any, channel: Any, prompt: str) -> Any:
    """/imagine of one gpt-image-1 image at its cheapest: low quality, 1024x1024."""
    return await member.slash(
        channel, "imagine", prompt=prompt, model="gpt-image-1", quality="low", size="1024x1024"
    )


def delivered_and_told(results: list[Any], told: str) -> tuple[int, int]:
    """How many requests delivered images, and how many were told a sentence starting ``told``."""
    delivered = [r for r in results if r.response is not None and r.response.attachments]
    refused = [
        m.content
        for r in results
        for m in ([r.response] if r.response is not None else []) + list(r.followups)
        if m.ephemeral and m.content.startswith(told)
    ]
    return len(delivered), len(refused)


@pytest.mark.parametrize("budget", ["5 images/day"])
async def test_twenty_simultaneous_requests_from_one_member_admit_exactly_the_budget(
    simcord_env: Any,
    channel: Any,
    alice: Any,
    images_api: FakeImagesAPI,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gather_admissions(simcord_env, monkeypatch, 20)
    results = [
        await alice.slash(channel, "imagine", prompt=f"cat {n}", model="dall-e-2")
        for n in range(20)
    ]
    await finish(simcord_env, seconds=60)

    told = "Your budget on this server is 5 images per day"
    assert delivered_and_told(results, told) == (5, 15)
    assert len(images_api.generation_requests) == 5
    rows = await ledger_rows(database_url)
    assert [row["outcome"] for row in rows] == ["delivered"] * 5


@pytest.mark.parametrize("budget", ["$0.25/day"])
async def test_eight_long_chinese_prompts_at_once_spend_no_more_than_the_budget(
    simcord_env: Any,
    channel: Any,
    alice: Any,
    images_api: FakeImagesAPI,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The service counts the prompt with the real tokenizer: about a token a Chinese character,
    # where four characters a token was reserved before.
    images_api.usage_report = honest_usage
    gather_admissions(simcord_env, monkeypatch, 8)
    prompt = prompt_of("Chinese")
    results = [await cheapest_image(alice, channel, prompt) for _ in range(8)]
    await finish(simcord_env, seconds=60)

    rows = await ledger_rows(database_url)
    assert sum(row["cost"] for row in rows) <= Decimal("0.25")
    assert all(row["cost"] <= row["estimated_cost"] for row in rows)
    # Each reserves $0.11 (18,000 bytes of prompt as text tokens, 272 output tokens and two
    # previews' 200) and costs $0.047: two at once fit the budget, and a third once two have
    # settled, if its admission comes after (PostgreSQL takes them one by one).
    delivered, told = delivered_and_told(results, "Your budget on this server is $0.25 per day")
    assert delivered in (2, 3) and delivered + told == 8
    assert [row["outcome"] for row in rows] == ["delivered"] * delivered


@pytest.mark.parametrize(
    ("budget", "quality", "estimate"),
    [
        # 272 output tokens and two previews' 200 at $40/1M, and "a cat 0"'s 7 bytes at $5/1M:
        # an image of gpt-image-1 at low 1024x1024.
        ("$0.05/day", "low", "0.018915"),
        # Quality auto, gpt-image-1's default: the service may choose high, 4,160 output tokens.
        # Usage of no tokens settled at what a low image costs (18 images against a budget that
        # buys 2) until usage below the least was no longer believed at all.
        ("$0.50/day", "auto", "0.174435"),
    ],
)
@pytest.mark.parametrize("reported", [honest_usage, no_usage], ids=["honest", "no-usage"])
async def test_a_service_that_reports_no_usage_is_stopped_by_the_budget_as_an_honest_one(
    simcord_env: Any,
    channel: Any,
    alice: Any,
    images_api: FakeImagesAPI,
    database_url: str,
    reported: UsageReport,
    budget: str,
    quality: str,
    estimate: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    images_api.usage_report = reported
    results = [
        await alice.slash(
            channel, "imagine", prompt=f"a cat {n}", model="gpt-image-1", quality=quality
        )
        for n in range(10)
    ]

    told = f"Your budget on this server is {budget.replace('/', ' per ')}"
    assert delivered_and_told(results, told) == (2, 8)
    rows = await ledger_rows(database_url)
    assert [row["estimated_cost"] for row in rows] == [Decimal(estimate)] * 2
    costs = [row["cost"] for row in rows]
    if reported is no_usage:
        # Not believed: the estimate stands, not what the images cost at least ($0.01888, the
        # 472 output tokens of a low image and its previews).
        assert costs == [Decimal(estimate)] * 2
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert (
            warnings
            == [
                "the image service reported usage costing $0.00 for 1 image(s) of gpt-image-1, "
                "under the $0.01888 they cost at least at that size and quality: the estimate "
                f"{format_usd(Decimal(estimate))} is recorded"
            ]
            * 2
        )
    else:  # the real tokenizer's few prompt tokens, and the images' output tokens
        assert all(
            Decimal(estimate) - Decimal("0.0001") < cost <= Decimal(estimate) for cost in costs
        )


@pytest.mark.parametrize("budget", ["5 images/day"])
async def test_a_request_discord_would_not_let_be_acknowledged_leaves_no_reservation(
    simcord_env: Any,
    channel: Any,
    alice: Any,
    images_api: FakeImagesAPI,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A budget may refuse, so the bot waits a moment for the ledger; the ledger is slower, the
    bot acknowledges meanwhile and Discord refuses that: the row written after is settled with
    the request, not left reserving the member's budget."""
    monkeypatch.setattr("bot.requests.admission.ADMISSION_BEFORE_ACKNOWLEDGING", 0.01)
    ledger = simcord_env.bot.services.ledger
    real_admitted = ledger.admitted
    written = asyncio.Event()

    async def slow(*args: Any, **kwargs: Any) -> int:
        await asyncio.sleep(0.05)
        row = int(await real_admitted(*args, **kwargs))
        written.set()
        return row

    async def refused(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise discord.NotFound(
            type("Answer", (), {"status": 404, "reason": "Not Found"})(), "Unknown interaction"
        )

    ledger.admitted = slow
    monkeypatch.setattr(discord.InteractionResponse, "defer", refused)
    await alice.slash(channel, "imagine", prompt="a cat", model="dall-e-2")
    await finish(simcord_env)
    assert written.is_set()

    (row,) = await ledger_rows(database_url)
    assert row["outcome"] == "failed"  # before: "pending", reserving until its lease ran out
    assert images_api.generation_requests == []
