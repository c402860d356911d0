"""The buttons under posted images, pressed in simcord against the loopback fake Images API:
each press is a new request from the presser, and they keep working after a restart."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import discord
import pytest
from sqlalchemy import Executable, delete, text

from bot.app import ImagineBot
from bot.config import Settings
from bot.discord_out.replies import Replies
from bot.images import ProcessingSlots
from bot.requests.queue import GenerationQueue
from bot.store.db import open_engine
from bot.store.db.schema import generation_state
from tests.cogs.conftest import RECOMMENDED_SHARDS, DeclaredQueueWaits, make_settings
from tests.cogs.support import Gate, fields, upload_limit, uploaded
from tests.fakes.images_api import FakeImagesAPI, incompressible_png

GONE = "The bot no longer has the request behind these buttons. Please use /imagine."
NOT_DELETED = "Discord did not let the bot delete these images. Please try again."


def labels(message: Any) -> list[str]:
    """The labels of the first row of buttons (the Vary buttons, where a model edits, follow)."""
    return [button["label"] for button in message.components[0]["components"]]


def all_labels(message: Any) -> list[str]:
    return [button["label"] for row in message.components for button in row["components"]]


def modal_input(shown: Any) -> dict[str, Any]:
    """The one text input of the modal a press answered with; its label as ``wrapper``."""
    (label,) = shown.modal["components"]
    return {**label["component"], "wrapper": label}


def private(result: Any) -> str:
    """The sentence a refused press was answered with, which only the presser sees."""
    assert result.response is not None and result.response.ephemeral
    assert result.response.attachments == []
    return str(result.response.content)


# -- what is posted ------------------------------------------------------------------------------


async def test_images_come_with_buttons_and_keep_their_alt_text(
    simcord_env: Any, channel: Any, alice: Any
) -> None:
    result = await alice.slash(channel, "imagine", prompt="a red fox in snow", count=2)

    reply = result.response
    assert labels(reply) == ["Reroll", "Edit prompt", "Larger (2048x2048)", "Delete"]
    emoji = [button["emoji"]["name"] for button in reply.components[0]["components"]]
    assert emoji == ["🔁", "✏️", "🔍", "🗑️"]
    assert [a.description for a in reply.attachments] == [
        "An image generated from the prompt: a red fox in snow"
    ] * 2


async def test_a_model_with_no_larger_size_gets_no_larger_button(
    simcord_env: Any, channel: Any, alice: Any
) -> None:
    result = await alice.slash(channel, "imagine", prompt="a lighthouse", model="dall-e-3")
    assert labels(result.response) == ["Reroll", "Edit prompt", "Delete"]


# -- Reroll, Larger, Edit prompt -----------------------------------------------------------------


async def test_reroll_posts_new_images_for_the_same_request_from_the_presser(
    simcord_env: Any, channel: Any, alice: Any, bob: Any, images_api: FakeImagesAPI
) -> None:
    first = await alice.slash(
        channel, "imagine", prompt="a red fox in snow", count=2, size="1536x1024",
        quality="low", format="webp",
    )  # fmt: skip

    again = await bob.click(first.response, label="Reroll")

    asked, rerolled = images_api.generation_requests
    pseudonyms = {"user": None, "safety_identifier": None}
    assert {**rerolled.body, **pseudonyms} == {**asked.body, **pseudonyms}
    assert rerolled.body["user"] != asked.body["user"]  # bob's pseudonym, not alice's
    reply = again.response
    assert not reply.ephemeral
    assert reply.id != first.response.id  # a new message; the first keeps its images
    assert await uploaded(reply) == images_api.served[2:]
    assert len(await uploaded(first.response)) == 2
    assert reply.embeds[0].description == "a red fox in snow"
    assert reply.embeds[0].author.name == "bob imagined"
    assert [a.description for a in reply.attachments] == [
        "An image generated from the prompt: a red fox in snow"
    ] * 2
    assert labels(reply) == ["Reroll", "Edit prompt", "Larger (3072x2048)", "Delete"]


async def test_larger_asks_for_the_larger_size_of_the_same_shape(
    simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI
) -> None:
    first = await alice.slash(
        channel, "imagine", prompt="a castle", model="dall-e-2", size="256x256"
    )
    assert "Larger (512x512)" in labels(first.response)

    larger = await alice.click(first.response, label="Larger (512x512)")

    assert images_api.generation_requests[1].body["size"] == "512x512"
    assert fields(larger.response.embeds[0])["Size"] == "512x512"
    assert "Larger (1024x1024)" in labels(larger.response)


async def test_edit_prompt_shows_the_prompt_and_runs_the_new_one(
    simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI
) -> None:
    first = await alice.slash(channel, "imagine", prompt="a red fox in snow", model="dall-e-2")

    shown = await alice.click(first.response, label="Edit prompt")

    prompt = modal_input(shown)
    assert prompt["value"] == "a red fox in snow"
    assert prompt["wrapper"]["label"] == "Prompt"
    assert images_api.generation_requests[1:] == []  # nothing is sent until it is submitted

    edited = await alice.submit_modal(shown, {prompt["custom_id"]: "a grey wolf in snow"})

    body = images_api.generation_requests[1].body
    assert (body["prompt"], body["model"]) == ("a grey wolf in snow", "dall-e-2")
    assert edited.response.embeds[0].description == "a grey wolf in snow"
    assert len(edited.response.attachments) == 1
    assert first.response.embeds[0].description == "a red fox in snow"


async def test_a_prompt_longer_than_a_text_input_is_cut_and_the_modal_says_so(
    simcord_env: Any, channel: Any, alice: Any
) -> None:
    long_prompt = "a fox " * 900  # 5400 characters: /imagine takes 6000, a text input 4000
    first = await alice.slash(channel, "imagine", prompt=long_prompt.strip())

    prompt = modal_input(await alice.click(first.response, label="Edit prompt"))

    assert prompt["value"] == long_prompt[:4000]
    assert "Only the first 4,000 characters" in prompt["wrapper"]["description"]


async def test_an_edited_prompt_the_model_refuses_is_answered_privately(
    simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI
) -> None:
    first = await alice.slash(channel, "imagine", prompt="a cat", model="dall-e-2")
    shown = await alice.click(first.response, label="Edit prompt")

    refused = await alice.submit_modal(shown, {modal_input(shown)["custom_id"]: "x" * 1001})

    assert private(refused) == (
        "dall-e-2 takes prompts of at most 1,000 characters; this one has 1,001."
    )
    assert len(images_api.generation_requests) == 1


# -- limits --------------------------------------------------------------------------------------


@pytest.mark.parametrize("bot_overrides", [{"user_rate_limit": "1/minute"}])
async def test_a_press_over_the_pressers_limit_is_refused_privately(
    simcord_env: Any, channel: Any, alice: Any, bob: Any, images_api: FakeImagesAPI
) -> None:
    first = await alice.slash(channel, "imagine", prompt="a cat")

    refused = await alice.click(first.response, label="Reroll")

    assert private(refused).startswith(
        "You have reached your limit of 1 image request per minute, counted across every "
        "server this bot is in."
    )
    assert len(images_api.generation_requests) == 1
    # The limit is the presser's: bob has his own.
    allowed = await bob.click(first.response, label="Reroll")
    assert len(allowed.response.attachments) == 1


@pytest.mark.parametrize("bot_overrides", [{"member_budget": "1 image/day"}])
async def test_a_press_over_the_pressers_budget_is_refused_privately(
    simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI
) -> None:
    first = await alice.slash(channel, "imagine", prompt="a cat")

    refused = await alice.click(first.response, label="Reroll")

    assert private(refused).startswith("Your budget on this server is 1 image per day")
    assert len(images_api.generation_requests) == 1


# -- Delete --------------------------------------------------------------------------------------


async def test_the_asker_deletes_their_images(simcord_env: Any, channel: Any, alice: Any) -> None:
    first = await alice.slash(channel, "imagine", prompt="a cat")

    await alice.click(first.response, label="Delete")

    assert first.response is None  # Discord no longer has the message


async def test_another_member_may_not_delete_and_is_told_privately(
    simcord_env: Any, channel: Any, alice: Any, bob: Any
) -> None:
    first = await alice.slash(channel, "imagine", prompt="a cat")

    refused = await bob.click(first.response, label="Delete")

    assert private(refused) == (
        "Only the member who asked for these images, or someone allowed to manage messages "
        "here, can delete them."
    )
    assert len(first.response.attachments) == 1


async def test_a_member_who_manages_messages_deletes_anyones_images(
    simcord_env: Any, guild: Any, channel: Any, alice: Any
) -> None:
    moderators = guild.create_role("mods", permissions=discord.Permissions(manage_messages=True))
    moderator = guild.add_member(simcord_env.create_user("mod"), roles=[moderators])
    first = await alice.slash(channel, "imagine", prompt="a cat")

    await moderator.click(first.response, label="Delete")

    assert first.response is None


async def test_a_rerolls_delete_belongs_to_the_presser(
    simcord_env: Any, channel: Any, alice: Any, bob: Any
) -> None:
    first = await alice.slash(channel, "imagine", prompt="a cat")
    rerolled = await bob.click(first.response, label="Reroll")

    refused = await alice.click(rerolled.response, label="Delete")
    assert private(refused).startswith("Only the member who asked for these images")

    await bob.click(rerolled.response, label="Delete")
    assert rerolled.response is None


async def posted_in_three_messages(channel: Any, alice: Any, images_api: FakeImagesAPI) -> Any:
    """Alice's three images, one a message (the upload limit takes one): the first message,
    with the buttons, and two follow-ups."""
    image = incompressible_png(300, 300)
    images_api.image_bytes = image
    with upload_limit(len(image) + 1000):
        result = await alice.slash(channel, "imagine", prompt="three cats", count=3)
    assert len(result.response.attachments) == 1
    assert [len(m.attachments) for m in result.followups if not m.ephemeral] == [1, 1]
    return result


async def test_delete_removes_every_message_the_images_were_posted_in(
    simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI
) -> None:
    posted = await posted_in_three_messages(channel, alice, images_api)

    pressed = await alice.click(posted.response, label="Delete")

    assert posted.response is None
    assert posted.followups == []
    assert [m.content for m in pressed.followups] == []  # nothing said: it is done


async def test_delete_goes_on_past_a_follow_up_already_deleted_by_hand(
    simcord_env: Any, guild: Any, channel: Any, alice: Any, images_api: FakeImagesAPI
) -> None:
    moderators = guild.create_role("mods", permissions=discord.Permissions(manage_messages=True))
    moderator = guild.add_member(simcord_env.create_user("mod"), roles=[moderators])
    posted = await posted_in_three_messages(channel, alice, images_api)
    await moderator.delete(posted.followups[0])

    pressed = await alice.click(posted.response, label="Delete")

    assert posted.response is None
    assert posted.followups == []
    assert [m.content for m in pressed.followups] == []


async def test_a_follow_up_discord_will_not_delete_is_said_privately_and_delete_works_again(
    simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI
) -> None:
    posted = await posted_in_three_messages(channel, alice, images_api)
    simcord_env.inject_error("DELETE", "/channels/*/messages/*", status=403, code=50013, times=1)

    refused = await alice.click(posted.response, label="Delete")

    (told,) = refused.followups
    assert told.ephemeral and told.content == NOT_DELETED
    assert told.attachments == []
    # The pressed message stays, with its Delete button, to try again.
    assert len(posted.response.attachments) == 1
    await alice.click(posted.response, label="Delete")
    assert posted.response is None
    assert posted.followups == []


async def _execute(settings: Settings, statement: Executable) -> None:
    """Change the bot's database behind its back."""
    engine = open_engine(settings.database)
    try:
        async with engine.begin() as connection:
            await connection.execute(statement)
    finally:
        await engine.dispose()


# -- after a restart -----------------------------------------------------------------------------


@pytest.fixture
async def restarted(
    simcord_env: Any, settings: Settings, queue_waits: DeclaredQueueWaits
) -> AsyncIterator[Any]:
    """Restarts the bot: a new ImagineBot on the same DATA_DIR (so the same database) replaces
    the one running, as a new process would; Discord keeps its messages."""
    bots: list[ImagineBot] = []

    async def restart(**overrides: Any) -> ImagineBot:
        new_settings = make_settings(settings.openai_base_url, settings.data_dir, **overrides)
        bot = ImagineBot(
            new_settings,
            queue=GenerationQueue(new_settings.max_concurrent_generations, wait=queue_waits),
            processing=ProcessingSlots(new_settings.processing_slot_count, wait=queue_waits),
        )
        bot.shard_count = RECOMMENDED_SHARDS  # as the simcord_bot fixture does
        bots.append(bot)
        old = simcord_env.bot
        await simcord_env.restart_bot(bot)
        await old.close()
        return bot

    yield restart
    for bot in bots:
        await bot.close()


async def test_buttons_posted_before_a_restart_are_answered_by_the_new_bot(
    simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI, restarted: Any
) -> None:
    first = await alice.slash(channel, "imagine", prompt="a red fox in snow", model="dall-e-2")
    shown_before = await alice.click(first.response, label="Edit prompt")

    await restarted()
    again = await alice.click(first.response, label="Reroll")
    # A modal opened before the restart is answered too.
    edited = await alice.submit_modal(
        shown_before, {modal_input(shown_before)["custom_id"]: "a grey wolf"}
    )
    await alice.click(first.response, label="Delete")

    assert again.response.embeds[0].description == "a red fox in snow"
    assert len(again.response.attachments) == 1
    assert edited.response.embeds[0].description == "a grey wolf"
    assert [r.body["prompt"] for r in images_api.generation_requests] == [
        "a red fox in snow",
        "a red fox in snow",
        "a grey wolf",
    ]
    assert first.response is None


async def test_delete_after_a_restart_removes_the_follow_ups_too(
    simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI, restarted: Any
) -> None:
    posted = await posted_in_three_messages(channel, alice, images_api)

    await restarted()  # the new bot knows the follow-ups from the database only
    await alice.click(posted.response, label="Delete")

    assert posted.response is None
    assert posted.followups == []


async def test_a_model_no_longer_offered_after_a_restart_is_refused_privately(
    simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI, restarted: Any
) -> None:
    first = await alice.slash(channel, "imagine", prompt="a cat", model="dall-e-2")

    await restarted(offered_models="dall-e-3", default_model="dall-e-3")
    refused = await alice.click(first.response, label="Reroll")

    assert private(refused) == "The model dall-e-2 is no longer offered here. Please use /imagine."
    assert len(images_api.generation_requests) == 1


async def test_images_are_posted_without_buttons_when_their_request_cannot_be_saved(
    simcord_env: Any, channel: Any, alice: Any, settings: Settings
) -> None:
    await _execute(settings, text("DROP TABLE generation_state"))

    result = await alice.slash(channel, "imagine", prompt="a cat", count=2)

    assert len(result.response.attachments) == 2
    assert result.response.components == []


@pytest.mark.parametrize(
    ("change", "sentence"),
    [
        (delete(generation_state), GONE),
        (
            text("DROP TABLE generation_state"),
            "The bot cannot read this request right now. Please try again soon.",
        ),
    ],
    ids=["request-gone", "database-unreadable"],
)
async def test_a_press_whose_request_is_gone_or_unreadable_is_answered_privately(
    simcord_env: Any,
    channel: Any,
    alice: Any,
    settings: Settings,
    images_api: FakeImagesAPI,
    restarted: Any,
    change: Executable,
    sentence: str,
) -> None:
    first = await alice.slash(channel, "imagine", prompt="a cat")
    await restarted()  # the new bot has only the database to go by
    await _execute(settings, change)

    for label in ("Reroll", "Edit prompt"):
        assert private(await alice.click(first.response, label=label)) == sentence
    assert len(images_api.generation_requests) == 1


# -- the hook for Vary ---------------------------------------------------------------------------


async def test_vary_buttons_appear_once_a_handler_is_set_and_hand_it_the_chosen_image(
    simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI
) -> None:
    handed: list[tuple[str, str, bytes]] = []

    async def vary(interaction: discord.Interaction, saved: Any, source: Any) -> None:
        handed.append((saved.prompt, source.filename, await source.read()))
        await interaction.response.send_message("varying", ephemeral=True)

    buttons = simcord_env.bot.image_buttons
    assert buttons.vary is not None  # the bot made it: an offered model edits
    buttons.vary = None
    without = await alice.slash(channel, "imagine", prompt="a fox")
    assert not any(label.startswith("Vary") for label in all_labels(without.response))
    buttons.vary = vary
    first = await alice.slash(channel, "imagine", prompt="two foxes", count=2)

    assert all_labels(first.response)[-11:-9] == ["Vary 1", "Vary 2"]  # then Zoom out and pan
    await alice.click(first.response, label="Vary 2")
    assert handed == [("two foxes", "imagine-2.png", images_api.served[2])]


# -- while shutting down -------------------------------------------------------------------------


@pytest.mark.parametrize("bot_overrides", [{"shutdown_grace_seconds": 0.5}])
async def test_while_the_bot_drains_a_press_is_told_it_restarts_and_delete_still_works(
    simcord_env: Any, channel: Any, alice: Any, bob: Any, images_api: FakeImagesAPI
) -> None:
    posted = await alice.slash(channel, "imagine", prompt="a cat")
    Gate(simcord_env)  # holds the next generation, so that the drain has a request to wait for
    await bob.slash(channel, "imagine", prompt="held")

    draining = asyncio.ensure_future(simcord_env.bot.shutdown())
    await simcord_env.settle()
    refused = await bob.click(posted.response, label="Reroll")
    await alice.click(posted.response, label="Delete")
    await draining

    assert private(refused) == "The bot is restarting. Please try again in a minute."
    assert posted.response is None
    assert len(images_api.generation_requests) == 1


async def test_delete_while_follow_ups_are_still_posting_removes_them_as_they_come(
    simcord_env: Any,
    channel: Any,
    alice: Any,
    images_api: FakeImagesAPI,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    release = asyncio.Event()
    real_follow_up = Replies.follow_up

    async def slow_follow_up(self: Any, files: Any) -> None:
        await simcord_env.external_wait(release.wait(), reason="a slow upload")
        await real_follow_up(self, files)

    monkeypatch.setattr(Replies, "follow_up", slow_follow_up)
    image = incompressible_png(300, 300)
    images_api.image_bytes = image
    with upload_limit(len(image) + 1000):  # one image a message
        result = await alice.slash(channel, "imagine", prompt="three cats", count=3)
        await simcord_env.settle()
        await alice.click(result.response, label="Delete")
        assert result.response is None
        release.set()
        await simcord_env.settle()

    assert [m for m in result.followups if not m.ephemeral] == []
