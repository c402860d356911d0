"""Every /imagine admitted leaves one row in the usage ledger, settled the way it ended."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import text

from bot.requests.generation import LEDGER_UNAVAILABLE
from tests.cogs.support import Gate, finish, private_reply
from tests.databases import ledger_rows
from tests.fakes.images_api import FakeImagesAPI, api_error, respond


@pytest.fixture
def bot_overrides(database_url: str) -> dict[str, Any]:
    return {"database_url": database_url, "shutdown_grace_seconds": 0.2}


async def test_a_delivered_request_leaves_one_delivered_row(
    simcord_env: Any,
    guild: Any,
    channel: Any,
    alice: Any,
    images_api: FakeImagesAPI,
    database_url: str,
) -> None:
    result = await alice.slash(
        channel, "imagine", prompt="a red fox", model="gpt-image-1", size="1024x1536",
        quality="low", count=2,
    )  # fmt: skip
    assert len(result.response.attachments) == 2

    (row,) = await ledger_rows(database_url)
    assert row["outcome"] == "delivered"
    assert (row["guild_id"], row["channel_id"], row["member_id"]) == (
        guild.id,
        channel.id,
        alice.id,
    )
    assert (row["model"], row["size"], row["quality"]) == ("gpt-image-1", "1024x1536", "low")
    assert (row["images_requested"], row["images_delivered"]) == (2, 2)
    assert str(row["request_id"]).startswith("req_")
    # Streamed (two partial images each, 100 output tokens apiece): each image's completed
    # event reports its usage; the prompt counts once, the output tokens add up.
    assert (row["input_text_tokens"], row["input_image_tokens"], row["output_tokens"]) == (
        50,
        0,
        2 * (272 + 2 * 100),
    )
    assert row["settled_at"] is not None


async def test_a_request_admitted_without_previews_is_reserved_and_charged_without_them(
    simcord_env: Any, alice: Any, bob: Any, channel: Any, database_url: str
) -> None:
    """The progress budget has room for one request's two previews: the second request, the
    same in all else, asks for none, and its reservation and cost leave out their 200 image
    output tokens ($40 per 1M on gpt-image-1: $0.008)."""
    simcord_env.bot.services.edits.generation_seconds = 0.4  # 2 previews in half of 4 edits
    gate = Gate(simcord_env)
    for member in (alice, bob):
        await member.slash(
            channel, "imagine", prompt="a red fox", model="gpt-image-1", quality="low"
        )
    gate.open(0)
    gate.open(1)
    await simcord_env.settle()

    with_previews, without = await ledger_rows(database_url)
    assert (with_previews["outcome"], without["outcome"]) == ("delivered", "delivered")
    assert (with_previews["output_tokens"], without["output_tokens"]) == (272 + 200, 272)
    previews = Decimal("0.008")
    assert with_previews["estimated_cost"] - without["estimated_cost"] == previews
    assert with_previews["cost"] - without["cost"] == previews


async def test_a_prompt_the_safety_system_blocks_is_recorded_refused(
    simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI, database_url: str
) -> None:
    images_api.push(api_error(400, "image_generation_user_error", "moderation_blocked"))
    private_reply(await alice.slash(channel, "imagine", prompt="a cat"))

    (row,) = await ledger_rows(database_url)
    assert (row["outcome"], row["images_delivered"]) == ("refused", 0)


async def test_a_request_cancelled_by_shutdown_is_recorded_cancelled(
    simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI, database_url: str
) -> None:
    Gate(simcord_env)  # held until the shutdown's grace period is over
    result = await alice.slash(channel, "imagine", prompt="a cat")
    draining = asyncio.ensure_future(simcord_env.bot.admission.drain(0.2))
    await simcord_env.settle()
    await draining

    assert "your request was cancelled" in private_reply(result).content
    (row,) = await ledger_rows(database_url)
    assert (row["outcome"], row["images_delivered"], row["cost"]) == ("cancelled", 0, None)


async def test_a_ledger_that_cannot_be_written_refuses_the_request_privately(
    simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI
) -> None:
    ledger = simcord_env.bot.services.ledger
    async with ledger.engine.begin() as connection:  # the table is gone: every insert fails
        await connection.execute(text("DROP TABLE usage_ledger"))

    result = await alice.slash(channel, "imagine", prompt="a cat")

    # No budget could refuse it, so it was acknowledged at once, as a burst must be: the
    # placeholder gives way to the private sentence.
    assert private_reply(result).content == LEDGER_UNAVAILABLE
    assert images_api.generation_requests == []


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_request_that_outlives_its_token_is_recorded_cancelled(
    simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI, database_url: str
) -> None:
    Gate(simcord_env)  # never opened: only the interaction token's lifetime ends it
    result = await alice.slash(channel, "imagine", prompt="a cat")
    await simcord_env.advance_time(15 * 60)

    assert "took too long" in private_reply(result).content
    (row,) = await ledger_rows(database_url)
    assert row["outcome"] == "cancelled"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_an_image_service_that_is_down_leaves_a_failed_row(
    simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI, database_url: str
) -> None:
    images_api.push(respond(502, "<html>Bad gateway</html>", content_type="text/html"))
    private_reply(await alice.slash(channel, "imagine", prompt="a cat"))

    (row,) = await ledger_rows(database_url)
    assert (row["outcome"], row["cost"]) == ("failed", None)


class TestAnotherProcessSettledTheRow:
    """A process cut off from the database for longer than its lease finds, when it is back,
    that another process settled its rows as abandoned: a request of those still waiting its
    turn is then not sent (it was settled as never sent, its reservation released)."""

    @pytest.fixture
    def bot_overrides(self, database_url: str) -> dict[str, Any]:
        return {"database_url": database_url, "max_concurrent_generations": 1}

    async def test_a_request_waiting_its_turn_is_not_sent(
        self, simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI
    ) -> None:
        gate = Gate(simcord_env)
        first = await alice.slash(channel, "imagine", prompt="a cat")  # sent, then held
        second = await alice.slash(channel, "imagine", prompt="a dog")  # waits its turn
        ledger = simcord_env.bot.services.ledger
        async with ledger.engine.begin() as connection:  # as another process's keeper does
            await connection.execute(
                text("UPDATE usage_ledger SET outcome = 'abandoned', cost = 0 WHERE id = 2")
            )

        gate.open(0)
        await finish(simcord_env)

        assert len(first.response.attachments) == 1
        assert private_reply(second).content == LEDGER_UNAVAILABLE
        assert len(images_api.generation_requests) == 1
        rows = await ledger_rows(ledger.url)
        assert [(row["outcome"], row["cost"] == 0) for row in rows] == [
            ("delivered", False),
            ("failed", True),  # this process's own settlement: never sent
        ]
