"""/describe, the Describe image menu and Enhance end to end: the real bot in simcord's Discord,
the fake Images API's chat/completions endpoint (bodies checked against the SDK's request type)
on loopback, the ledger on SQLite and PostgreSQL where money is counted."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import discord
import pytest
from PIL import Image

from bot.images.text import _scaled_data_url
from bot.requests.admission import MODERATION_REFUSED
from bot.requests.describe import NO_IMAGE, NOT_OFFERED
from tests.cogs.support import finish, private_reply, setting
from tests.cogs.test_buttons import labels, restarted  # noqa: F401  (a fixture)
from tests.cogs.test_history import key_of, said
from tests.cogs.test_privacy import forged
from tests.cogs.test_safety_words import checks_sent, declare_moderation_waits, private_or_answer
from tests.conftest import API_KEY
from tests.databases import ledger_rows
from tests.fakes.images_api import (
    TEXT_MODELS,
    FakeImagesAPI,
    chat_completion,
    chat_problem,
    json_response,
    respond,
)

SUGGESTION = "A small red square on a white field, flat colour, study {}"
ENHANCED = "{}, richly detailed, golden hour light, 35mm film photograph"


def png(width: int = 96, height: int = 64) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 40, 40)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
async def images_api() -> AsyncIterator[FakeImagesAPI]:
    """A gateway that serves the text model too (the shared fixture's serves none)."""
    fake = FakeImagesAPI(api_key=API_KEY, text_models=TEXT_MODELS)
    await fake.start()
    yield fake
    await fake.close()


def assert_sent_with_the_pseudonym(body: dict[str, Any], member: Any) -> None:
    assert chat_problem(body) is None  # the SDK's CompletionCreateParams, strictly, no extras
    assert body["user"] == body["safety_identifier"]
    assert str(member.id) not in json.dumps(body)


# -- /describe and Imagine this --------------------------------------------------------------


async def test_describe_gives_four_suggestions_and_imagine_this_starts_imagine_with_one(
    simcord_env: Any, channel: Any, alice: Any, bob: Any, images_api: FakeImagesAPI
) -> None:
    described = await alice.slash(channel, "describe", image=("photo.png", png()))

    reply = described.response
    assert not reply.ephemeral
    (embed,) = reply.embeds
    assert embed.description == "\n\n".join(f"**{n}.** {SUGGESTION.format(n)}" for n in range(1, 5))
    assert labels(reply) == [f"Imagine this ({n})" for n in range(1, 5)]
    (sent,) = images_api.chat_requests
    assert_sent_with_the_pseudonym(sent.body, alice)
    (image_part,) = sent.body["messages"][1]["content"][1:]
    assert image_part["image_url"]["url"].startswith("data:image/jpeg;base64,")
    assert sent.body["model"] == "gpt-5.4-mini"
    assert not images_api.generation_requests  # nothing drawn yet

    made = await bob.click(reply, label="Imagine this (2)")

    assert made.response.embeds[0].description == SUGGESTION.format(2)
    assert len(made.response.attachments) == 1
    (generated,) = images_api.generation_requests
    assert generated.body["prompt"] == SUGGESTION.format(2)
    assert str(bob.id) not in json.dumps(generated.body)


async def test_suggestions_are_shown_as_written_never_as_links(
    simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI
) -> None:
    """A text model (or a hostile gateway) that answers with markdown: the suggestions are
    shown as text in the public reply, not as a masked link under the bot's name; the saved
    suggestion keeps the words themselves."""
    lure = "[Claim your prize](https://prize.example) @everyone"

    async def answer(request: Any) -> Any:
        body = await request.json()
        text = "\n".join(f"{n}. {lure} {n}" for n in range(1, 5))
        return json_response(200, chat_completion(body, text, None))

    images_api.chat_script.append(answer)
    described = await alice.slash(channel, "describe", image=("photo.png", png()))

    (embed,) = described.response.embeds
    shown = "\\[Claim your prize](https://prize.example) @\u200beveryone"
    assert embed.description == "\n\n".join(f"**{n}.** {shown} {n}" for n in range(1, 5))
    made = await alice.click(described.response, label="Imagine this (2)")
    assert images_api.generation_requests[0].body["prompt"] == f"{lure} 2"
    assert made.response.embeds[0].description == f"{shown} 2"


async def test_imagine_this_works_after_a_restart(
    simcord_env: Any,
    channel: Any,
    alice: Any,
    images_api: FakeImagesAPI,
    restarted: Any,  # noqa: F811  (test_buttons' fixture)
) -> None:
    described = await alice.slash(channel, "describe", image=("photo.png", png()))

    await restarted()
    made = await alice.click(described.response, label="Imagine this (4)")

    assert made.response.embeds[0].description == SUGGESTION.format(4)
    assert images_api.generation_requests[0].body["prompt"] == SUGGESTION.format(4)


async def test_the_describe_image_menu_describes_a_messages_image(
    simcord_env: Any, channel: Any, alice: Any, bob: Any, images_api: FakeImagesAPI
) -> None:
    posted = await alice.slash(channel, "imagine", prompt="a red square", model="dall-e-2")
    without = await alice.slash(channel, "describe", image=("photo.png", png()))

    described = await bob.context_menu(channel, "Describe image", posted.response)
    refused = await bob.context_menu(channel, "Describe image", without.response)

    assert len(described.response.embeds[0].description.split("\n\n")) == 4
    assert_sent_with_the_pseudonym(images_api.chat_requests[-1].body, bob)
    assert refused.response.ephemeral and refused.response.content == NO_IMAGE


# -- Enhance ---------------------------------------------------------------------------------


async def test_the_enhance_option_shows_the_enhanced_prompt_and_makes_images_from_it(
    simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI
) -> None:
    result = await alice.slash(channel, "imagine", prompt="a fox", model="dall-e-2", enhance=True)

    enhanced = ENHANCED.format("a fox")
    assert result.response.embeds[0].description == enhanced
    assert labels(result.response) == ["Reroll", "Edit prompt", "Enhance", "Delete"]
    (sent,) = images_api.chat_requests
    assert_sent_with_the_pseudonym(sent.body, alice)
    assert sent.body["messages"][1]["content"] == "a fox"
    assert [r.body["prompt"] for r in images_api.generation_requests] == [enhanced]

    # Reroll asks again with what the images were made from: the enhanced prompt.
    again = await alice.click(result.response, label="Reroll")
    assert again.response.embeds[0].description == enhanced
    assert len(images_api.chat_requests) == 1


async def test_the_enhance_button_enhances_the_prompt_of_the_images_it_is_under(
    simcord_env: Any, channel: Any, alice: Any, bob: Any, images_api: FakeImagesAPI
) -> None:
    first = await alice.slash(channel, "imagine", prompt="a lighthouse", model="dall-e-2")
    assert first.response.embeds[0].description == "a lighthouse"

    enhanced = await bob.click(first.response, label="Enhance")

    assert enhanced.response.embeds[0].description == ENHANCED.format("a lighthouse")
    assert_sent_with_the_pseudonym(images_api.chat_requests[0].body, bob)
    assert [r.body["prompt"] for r in images_api.generation_requests] == [
        "a lighthouse",
        ENHANCED.format("a lighthouse"),
    ]


# -- what is counted -------------------------------------------------------------------------


class TestLedger:
    """Money: on SQLite and on PostgreSQL."""

    @pytest.fixture
    def bot_overrides(self, database_url: str) -> dict[str, Any]:
        return {"database_url": database_url}

    async def test_describe_and_enhance_are_ledgered_at_the_text_models_prices(
        self, simcord_env: Any, channel: Any, alice: Any, database_url: str
    ) -> None:
        await alice.slash(channel, "describe", image=("photo.png", png()))
        await alice.slash(channel, "imagine", prompt="a fox", model="dall-e-2", enhance=True)

        rows = await ledger_rows(database_url)
        assert [(r["kind"], r["model"], r["outcome"]) for r in rows] == [
            ("describe", "gpt-5.4-mini", "delivered"),
            ("enhance", "gpt-5.4-mini", "delivered"),
            ("generate", "dall-e-2", "delivered"),
        ]
        for row in rows[:2]:
            assert row["images_requested"] == 0
            # From the usage reported, within the reservation (a bound) made before.
            assert Decimal(0) < row["cost"] < row["estimated_cost"]
            assert row["input_text_tokens"] is not None and row["output_tokens"] is not None
        assert rows[0]["input_image_tokens"] == 85

    @pytest.mark.parametrize(
        "answer",
        [
            pytest.param(respond(200, "<html>not json</html>"), id="garbage"),
            pytest.param(respond(200, b"x" * (2 * 1024 * 1024)), id="huge"),
        ],
    )
    async def test_a_hostile_answer_is_a_sentence_and_its_estimate_stays_counted(
        self, simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI,
        database_url: str, answer: Any,
    ) -> None:  # fmt: skip
        images_api.chat_script.append(answer)
        result = await alice.slash(channel, "describe", image=("photo.png", png()))

        told = private_reply(result)
        assert (
            told.content
            == "The text model sent back something the bot cannot read. Please try again."
        )
        (row,) = await ledger_rows(database_url)
        assert (row["outcome"], row["cost"]) == ("failed", None)  # counted at its estimate
        assert row["estimated_cost"] > 0

    async def test_a_file_that_is_no_image_is_a_sentence_and_costs_nothing(
        self, simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI,
        database_url: str,
    ) -> None:  # fmt: skip
        result = await alice.slash(channel, "describe", image=("photo.png", b"%PDF-1.7 a pdf"))

        assert private_reply(result).content.startswith(
            "The image is not an image the bot can read"
        )
        assert not images_api.chat_requests
        (row,) = await ledger_rows(database_url)
        assert (row["outcome"], row["cost"]) == ("refused", 0)

    @pytest.mark.parametrize(
        "usage",
        [None, {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}],
        ids=["no-usage", "zero-usage"],
    )
    async def test_usage_missing_or_zero_is_settled_at_the_estimate(
        self, simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI,
        database_url: str, usage: dict[str, Any] | None,
    ) -> None:  # fmt: skip
        async def answer(request: Any) -> Any:
            body = await request.json()
            return json_response(200, chat_completion(body, "a fox, in detail", usage))

        images_api.chat_script.append(answer)
        result = await alice.slash(
            channel, "imagine", prompt="a fox", model="dall-e-2", enhance=True
        )

        assert result.response.embeds[0].description == "a fox, in detail"
        enhance, _ = await ledger_rows(database_url)
        assert enhance["cost"] == enhance["estimated_cost"] > 0


class TestRefusals:
    @pytest.fixture
    def bot_overrides(self, database_url: str) -> dict[str, Any]:
        return {"database_url": database_url, "member_budget": "$0.0001/day"}

    async def test_a_budget_refuses_describe_and_enhance_privately_and_nothing_is_charged(
        self, simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI,
        database_url: str,
    ) -> None:  # fmt: skip
        described = await alice.slash(channel, "describe", image=("photo.png", png()))
        enhanced = await alice.slash(
            channel, "imagine", prompt="a fox", model="dall-e-2", enhance=True
        )

        for result in (described, enhanced):
            assert result.response.ephemeral
            assert result.response.content.startswith("Your budget on this server is $0.0001")
        assert not images_api.chat_requests and not images_api.generation_requests
        assert await ledger_rows(database_url) == []


class TestLimits:
    @pytest.fixture
    def bot_overrides(self) -> dict[str, Any]:
        return {"user_rate_limit": "1/minute"}

    async def test_the_members_limit_counts_a_description_and_refuses_the_next_privately(
        self, simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI
    ) -> None:
        await alice.slash(channel, "describe", image=("photo.png", png()))
        refused = await alice.slash(
            channel, "imagine", prompt="a fox", model="dall-e-2", enhance=True
        )

        assert refused.response.ephemeral
        assert refused.response.content.startswith(
            "You have reached your limit of 1 image request per minute"
        )
        assert len(images_api.chat_requests) == 1 and not images_api.generation_requests


class TestGatewayWithoutTheTextModel:
    @pytest.fixture
    async def images_api(self) -> AsyncIterator[FakeImagesAPI]:
        fake = FakeImagesAPI(api_key=API_KEY)  # lists its models, and no text model
        await fake.start()
        yield fake
        await fake.close()

    async def test_describe_and_enhance_are_not_offered_and_the_log_says_so_once(
        self, simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI,
        caplog: pytest.LogCaptureFixture,
    ) -> None:  # fmt: skip
        names = {command.name for command in simcord_env.bot.tree.get_commands()}
        names |= {
            command.name
            for command in simcord_env.bot.tree.get_commands(type=discord.AppCommandType.message)
        }
        assert "describe" not in names and "Describe image" not in names
        result = await alice.slash(channel, "imagine", prompt="a fox", enhance=True)
        plain = await alice.slash(channel, "imagine", prompt="a fox", model="dall-e-2")

        assert result.response.ephemeral and result.response.content == NOT_OFFERED
        assert "Enhance" not in labels(plain.response)
        lines = [
            r.getMessage()
            for r in caplog.get_records("setup") + caplog.get_records("call")
            if "does not list the text model" in r.getMessage()
        ]
        assert lines == [
            "the endpoint does not list the text model gpt-5.4-mini (TEXT_MODEL), so /describe "
            "and Enhance are not offered"
        ]
        assert not images_api.chat_requests


class TestImagesRefusedAroundAnEnhancement:
    @pytest.fixture
    def bot_overrides(self, database_url: str) -> dict[str, Any]:
        return {"database_url": database_url, "member_budget": "1 image/day"}

    async def test_images_a_server_would_refuse_cost_no_enhancement(
        self, simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI,
        database_url: str,
    ) -> None:  # fmt: skip
        refused = await alice.slash(
            channel, "imagine", prompt="a fox", model="dall-e-2", count=5, enhance=True
        )

        assert refused.response.ephemeral
        assert refused.response.content == "This server allows at most 4 images per request."
        assert not images_api.chat_requests
        assert await ledger_rows(database_url) == []

    async def test_images_a_budget_refuses_after_the_enhancement_are_told_privately(
        self, simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI,
        database_url: str,
    ) -> None:  # fmt: skip
        await alice.slash(channel, "imagine", prompt="a cat", model="dall-e-2")
        result = await alice.slash(
            channel, "imagine", prompt="a fox", model="dall-e-2", enhance=True
        )

        told = private_reply(result)
        assert told.content.startswith("Your budget on this server is 1 image per day")
        rows = await ledger_rows(database_url)
        assert [(r["kind"], r["outcome"]) for r in rows] == [
            ("generate", "delivered"),
            ("enhance", "delivered"),
        ]
        assert len(images_api.generation_requests) == 1


async def test_images_refused_after_their_enhancement_are_told_privately_not_left_thinking(
    simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI
) -> None:
    async def restart_meanwhile(request: Any) -> Any:
        # The bot starts shutting down while the text model answers.
        simcord_env.bot.admission.draining = True
        body = await request.json()
        return json_response(200, chat_completion(body, "a fox, in detail", None))

    images_api.chat_script.append(restart_meanwhile)
    result = await alice.slash(channel, "imagine", prompt="a fox", model="dall-e-2", enhance=True)

    assert private_reply(result).content == "The bot is restarting. Please try again in a minute."
    assert not images_api.generation_requests


class TestModeratedEnhance:
    """The server's moderation check refuses an enhancement of a prompt it would refuse before
    the text model is paid for it: the prompt is never sent, and no ledger row is written."""

    @pytest.fixture
    def bot_overrides(self, database_url: str) -> dict[str, Any]:
        return {"database_url": database_url, "moderation_check": "on"}

    async def test_a_flagged_prompt_is_refused_before_its_enhancement_is_paid_for(
        self, simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI,
        database_url: str,
    ) -> None:  # fmt: skip
        declare_moderation_waits(simcord_env)
        result = await alice.slash(
            channel, "imagine", prompt="a gore scene", model="dall-e-2", enhance=True
        )
        await finish(simcord_env)

        assert private_or_answer(result) == MODERATION_REFUSED
        assert not images_api.chat_requests  # the text model never saw it
        assert not images_api.generation_requests
        assert await ledger_rows(database_url) == []
        (checked,) = checks_sent(images_api)
        assert checked["input"] == [{"type": "text", "text": "a gore scene"}]
        assert str(alice.id) not in json.dumps(checked)

    async def test_an_image_the_check_flags_is_not_described_nor_posted_and_costs_nothing(
        self, simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI,
        database_url: str,
    ) -> None:  # fmt: skip
        declare_moderation_waits(simcord_env)
        photo = png(80, 80)
        # What the text model would be sent (and so what is checked): the image scaled down.
        sent = base64.b64decode(_scaled_data_url(photo).split(",", 1)[1])
        images_api.moderation_images[sent] = {"sexual": 0.97}

        result = await alice.slash(channel, "describe", image=("photo.png", photo))
        await finish(simcord_env)

        assert private_reply(result).content == MODERATION_REFUSED
        assert result.response is None or not result.response.embeds  # no public thumbnail
        assert not images_api.chat_requests  # the text model never saw it
        (row,) = await ledger_rows(database_url)
        assert (row["kind"], row["outcome"], row["cost"]) == ("describe", "refused", 0)


class TestExemptRoles:
    """A role a server exempts from the rate limit (where the operator allows it) is still
    bounded on describe and enhance: where no money budget counts them (a budget in images does
    not), the rate limit is all that bounds what they cost, so it applies."""

    @pytest.fixture(params=["10 images/day", "$1/day"])
    def member_budget(self, request: pytest.FixtureRequest) -> str:
        return str(request.param)

    @pytest.fixture
    def bot_overrides(self, database_url: str, member_budget: str) -> dict[str, Any]:
        return {
            "database_url": database_url,
            "user_rate_limit": "1/minute",
            "servers_may_exempt_roles": True,
            "member_budget": member_budget,
        }

    async def test_describe_by_an_exempt_role_is_rate_limited_where_no_money_budget_counts_it(
        self, simcord_env: Any, guild: Any, channel: Any, manager: Any, member_budget: str,
        database_url: str,
    ) -> None:  # fmt: skip
        vip = guild.create_role("VIP")
        alice = guild.add_member(simcord_env.create_user("alice"), roles=[vip])
        await setting(manager, channel, "role-tier", role=vip, value="exempt")

        described = [
            await alice.slash(channel, "describe", image=("photo.png", png())) for _ in range(3)
        ]

        bounded_by_money = member_budget.startswith("$")
        for result in described[1:]:
            if bounded_by_money:  # exempt: the money budget bounds it
                assert len(result.response.embeds[0].description.split("\n\n")) == 4
            else:
                assert result.response.ephemeral
                assert result.response.content.startswith("You have reached your limit")
        assert len(await ledger_rows(database_url)) == (3 if bounded_by_money else 1)


async def test_a_forged_imagine_this_makes_nothing_of_another_members_private_prompt(
    simcord_env: Any, channel: Any, alice: Any, bob: Any, images_api: FakeImagesAPI
) -> None:
    private = await alice.slash(channel, "imagine", prompt="alice's secret fox", private=True)
    key = key_of(private.response)

    custom_id = f"describe:imagine:{key}"
    answer = await bob.click(forged(simcord_env, channel, bob, custom_id), custom_id=custom_id)

    assert [r.body["prompt"] for r in images_api.generation_requests] == ["alice's secret fox"]
    assert "secret fox" not in str([(m.content, m.embeds) for m in channel.history(viewer=bob)])
    assert said(answer) == "The bot no longer has this suggestion. Please use /describe again."


async def test_describe_checks_the_image_where_the_server_has_a_moderation_check(
    simcord_env: Any, channel: Any, alice: Any, manager: Any, images_api: FakeImagesAPI
) -> None:
    declare_moderation_waits(simcord_env)
    await setting(manager, channel, "moderation", value="on")
    photo = png(48, 48)
    # What the text model would be sent (and so what is checked): the image scaled down.
    sent = base64.b64decode(_scaled_data_url(photo).split(",", 1)[1])
    images_api.moderation_images[sent] = {"sexual": 0.97}

    described = await alice.slash(channel, "describe", image=("photo.png", photo))
    await finish(simcord_env)

    assert private_or_answer(described) == MODERATION_REFUSED
    assert images_api.chat_requests == []  # nothing sent to the text model, nothing posted
    assert [m for m in channel.history(viewer=manager) if m.embeds and not m.flags.ephemeral] == []
    allowed = await alice.slash(channel, "describe", image=("photo.png", png()))
    await finish(simcord_env)
    assert len(allowed.response.embeds) == 1 and len(images_api.chat_requests) == 1


async def test_describe_shows_no_unblurred_thumbnail_where_results_are_spoilers(
    simcord_env: Any, channel: Any, alice: Any, manager: Any, images_api: FakeImagesAPI
) -> None:
    await setting(manager, channel, "spoilers", value="always")

    described = await alice.slash(channel, "describe", image=("photo.png", png()))

    (embed,) = described.response.embeds
    assert embed.thumbnail.url is None  # a thumbnail cannot be blurred: it is left out
    assert "**1.**" in embed.description
