"""/imagine end to end: the real bot in simcord's Discord, the fake Images API on loopback."""

from __future__ import annotations

import asyncio
import io
import re
from typing import Any

import discord
import pytest
from PIL import Image

from bot.discord_out.progress import EditBudget
from bot.discord_out.replies import ACKNOWLEDGE_WITHIN
from bot.requests.admission import LIMITS_UNAVAILABLE
from tests.cogs.support import (
    CALLBACK_DEFER,
    Gate,
    callback_types,
    fields,
    private_reply,
    upload_limit,
    uploaded,
)
from tests.fakes.images_api import FakeImagesAPI, api_error, incompressible_png, respond

# -- the happy path ----------------------------------------------------------------------------


async def test_images_are_uploaded_with_an_embed_after_a_defer(
    simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI
) -> None:
    result = await alice.slash(channel, "imagine", prompt="a red fox in snow", count=2)

    assert callback_types(simcord_env) == [CALLBACK_DEFER]
    reply = result.response
    assert not reply.ephemeral
    assert await uploaded(reply) == images_api.served
    assert [a.filename for a in reply.attachments] == ["imagine-1.png", "imagine-2.png"]
    (embed,) = reply.embeds
    assert embed.description == "a red fox in snow"
    assert embed.author.name == "alice imagined"
    shown = fields(embed)
    assert shown["Model"] == "gpt-image-2.5-flare"
    assert shown["Size"] == "1024x1024"
    assert shown["Quality"] == "auto"
    assert shown["Images"] == "2"
    assert re.fullmatch(r"\d+\.\d s", shown["Time"])


async def test_the_request_carries_exactly_the_options_chosen(
    simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI
) -> None:
    await alice.slash(
        channel, "imagine", prompt="a lighthouse", model="dall-e-3", size="1792x1024",
        quality="hd", style="natural",
    )  # fmt: skip
    (sent,) = images_api.generation_requests
    user = sent.body.pop("user")
    assert sent.body == {
        "model": "dall-e-3",
        "prompt": "a lighthouse",
        "n": 1,
        "size": "1792x1024",
        "quality": "hd",
        "style": "natural",
        "response_format": "b64_json",
    }
    assert str(alice.id) not in user


async def test_gpt_image_options_and_revised_prompt_free_models(
    simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI
) -> None:
    result = await alice.slash(
        channel, "imagine", prompt="a logo", model="gpt-image-2", size="1536x864",
        background="transparent", format="webp",
    )  # fmt: skip
    body = images_api.generation_requests[0].body
    assert (body["size"], body["background"], body["output_format"]) == (
        "1536x864",
        "transparent",
        "webp",
    )
    assert [a.filename for a in result.response.attachments] == ["imagine-1.webp"]
    assert (
        fields(result.response.embeds[0])["Options"] == "output_format webp, background transparent"
    )


async def test_dall_e_3_shows_the_revised_prompt(
    simcord_env: Any, channel: Any, alice: Any
) -> None:
    result = await alice.slash(channel, "imagine", prompt="an otter", model="dall-e-3")
    assert fields(result.response.embeds[0])["Revised prompt"] == "A detailed rendering of an otter"


async def test_a_prompt_is_shown_as_written_never_as_a_link_or_a_mention(
    simcord_env: Any, channel: Any, alice: Any
) -> None:
    """The prompt (and the service's revised prompt, which repeats it) in the bot's public
    message: a masked link would be a link under the bot's name, a mention someone's name, a
    channel's a link to it."""
    prompt = "[Free Nitro](https://nitro.example/claim) **now** <@123456789012345678> <#1234>"
    result = await alice.slash(channel, "imagine", prompt=prompt, model="dall-e-3")

    embed = result.response.embeds[0]
    shown = (
        "\\[Free Nitro](https://nitro.example/claim) \\*\\*now\\*\\* "
        "<\u200b@\u200b123456789012345678> <\u200b#1234>"
    )
    assert embed.description == shown  # before: the prompt itself, rendered as a link
    assert fields(embed)["Revised prompt"] == "A detailed rendering of " + shown


async def test_the_pseudonym_is_stable_per_user_and_differs_between_users(
    simcord_env: Any, channel: Any, alice: Any, bob: Any, images_api: FakeImagesAPI
) -> None:
    for member in (alice, bob, alice):
        await member.slash(channel, "imagine", prompt="a cat")
    first, second, third = (r.body["user"] for r in images_api.generation_requests)
    assert first == third
    assert first != second
    for member, pseudonym in ((alice, first), (bob, second)):
        assert str(member.id) not in pseudonym
        assert member.name not in pseudonym


# -- refusals before anything is paid ------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "sentence"),
    [
        ({"model": "dall-e-3", "count": 2}, "dall-e-3 makes one image per request."),
        ({"model": "dall-e-2", "size": "1536x1024"}, "dall-e-2 takes the sizes 256x256, 512x512"),
        (
            {"quality": "hd"},
            "gpt-image-2.5-flare takes the qualities auto, low, medium, high, xhigh, max.",
        ),
        ({"style": "vivid"}, "gpt-image-2.5-flare does not take `style`"),
        ({"count": 5}, "This server allows at most 4 images per request."),
        ({"model": "dall-e-2", "prompt": "x" * 1001}, "at most 1,000 characters"),
    ],
)
async def test_invalid_combinations_are_answered_at_once_and_privately(
    simcord_env: Any,
    channel: Any,
    alice: Any,
    images_api: FakeImagesAPI,
    options: dict[str, Any],
    sentence: str,
) -> None:
    arguments = {"prompt": "a cat", **options}
    result = await alice.slash(channel, "imagine", **arguments)
    assert result.response.ephemeral
    assert sentence in result.response.content
    assert images_api.generation_requests == []


@pytest.mark.parametrize("bot_overrides", [{"user_rate_limit": "2/minute"}])
async def test_the_limit_stops_the_third_request_while_another_user_goes_through(
    simcord_env: Any, channel: Any, alice: Any, bob: Any, images_api: FakeImagesAPI
) -> None:
    for _ in range(2):
        result = await alice.slash(channel, "imagine", prompt="a cat")
        assert result.response.attachments

    # The limit is alice's own, whichever server she asks in: the refusal says so.
    elsewhere = simcord_env.create_guild("Elsewhere")
    alice_elsewhere = elsewhere.add_member(alice.user)
    refused = await alice_elsewhere.slash(
        elsewhere.create_text_channel("imagine"), "imagine", prompt="a cat"
    )
    assert refused.response.ephemeral
    assert refused.response.content.startswith(
        "You have reached your limit of 2 image requests per minute, counted across every "
        "server this bot is in."
    )
    assert re.search(r"You can try again <t:\d+:R>\.$", refused.response.content)

    other = await bob.slash(channel, "imagine", prompt="a dog")
    assert other.response.attachments
    assert len(images_api.generation_requests) == 3


# -- engine errors reach the user as sentences ----------------------------------------------------


@pytest.mark.parametrize(
    ("handler", "sentence"),
    [
        (
            api_error(400, "image_generation_user_error", "moderation_blocked"),
            "The image service's safety system blocked this prompt or its result.",
        ),
        (
            api_error(429, "insufficient_quota", "insufficient_quota"),
            "The bot has used up its image-generation quota.",
        ),
        (
            api_error(429, "requests", "rate_limit_exceeded", headers={"Retry-After": "900"}),
            "The image service is busy right now.",
        ),
        (
            respond(502, "<html>Bad gateway</html>", content_type="text/html"),
            "The image service is unavailable right now.",
        ),
        (respond(200, "{not json"), "something that is not a valid image"),
        (respond(200, '{"created": 1, "data": []}'), "something that is not a valid image"),
        (api_error(401, "invalid_request_error", "invalid_api_key"), "rejected the bot's API key"),
        (
            api_error(400, "invalid_request_error", "invalid_value", "Invalid prompt."),
            "The image service refused this request: Invalid prompt.",
        ),
    ],
)
async def test_every_engine_error_reaches_the_user_as_its_sentence(
    simcord_env: Any,
    channel: Any,
    alice: Any,
    images_api: FakeImagesAPI,
    handler: Any,
    sentence: str,
) -> None:
    images_api.push(handler)
    result = await alice.slash(channel, "imagine", prompt="a cat")

    reply = private_reply(result)
    assert sentence in reply.content
    assert "Traceback" not in reply.content
    # The public "thinking" placeholder is gone; nothing but the private sentence remains.
    assert [m for m in channel.history() if m.author.bot] == []


async def test_a_generation_never_outlives_the_interaction_token(
    simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI
) -> None:
    # Held before the image service, as a long wait in line holds it: no single timeout of the
    # engine's ends it, only the interaction token's lifetime (15 minutes, less a margin).
    gate = Gate(simcord_env)
    result = await alice.slash(channel, "imagine", prompt="a cat")
    # Still at work: the public "thinking" placeholder, nothing posted, nothing said privately.
    assert callback_types(simcord_env) == [CALLBACK_DEFER]
    assert len(gate.opened) == 1
    assert result.response is not None
    assert not result.response.content
    assert result.response.attachments == []
    assert result.followups == []

    await simcord_env.advance_time(14 * 60)
    assert result.followups == []  # not given up long before the token runs out
    await simcord_env.advance_time(30)
    assert private_reply(result).content == (
        "Your request took too long and was cancelled before Discord stopped accepting its "
        "reply. Please try again."
    )
    assert images_api.generation_requests == []
    assert not simcord_env.bot.admission.jobs


# -- Discord's limits -----------------------------------------------------------------------------


async def test_images_over_the_upload_limit_are_reencoded_and_the_reply_says_so(
    simcord_env: Any,
    channel: Any,
    alice: Any,
    images_api: FakeImagesAPI,
) -> None:
    limit = 300_000
    images_api.image_bytes = incompressible_png(512, 512)  # about 790 kB
    assert len(images_api.image_bytes) > limit

    with upload_limit(limit):
        result = await alice.slash(channel, "imagine", prompt="static", count=2)

    reply = result.response
    assert "re-encoded to fit this server's upload limit" in reply.content
    first_message = await uploaded(reply)
    everything = first_message + [b for m in result.followups for b in await uploaded(m)]
    assert len(everything) == 2
    for data in everything:
        assert len(data) <= limit
        with Image.open(io.BytesIO(data)) as image:
            assert image.format == "JPEG"  # opaque images become JPEG
    assert sum(len(b) for b in first_message) <= limit


@pytest.mark.parametrize("bot_overrides", [{"max_images_per_request": 10}])
async def test_more_than_fits_one_message_continues_in_followups(
    simcord_env: Any,
    channel: Any,
    alice: Any,
    images_api: FakeImagesAPI,
) -> None:
    image = incompressible_png(128, 128)  # about 49 kB each
    images_api.image_bytes = image

    with upload_limit(4 * len(image) + 100):
        result = await alice.slash(channel, "imagine", prompt="many", count=10)

    messages = [result.response, *result.followups]
    counts = [len(m.attachments) for m in messages]
    assert counts == [4, 4, 2]
    assert [b for m in messages for b in await uploaded(m)] == [image] * 10
    assert [a.filename for m in messages for a in m.attachments] == [
        f"imagine-{i}.png" for i in range(1, 11)
    ]


async def test_a_6000_character_prompt_does_not_break_the_reply(
    simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI
) -> None:
    prompt = "a very long description " * 250
    prompt = prompt[:6000]
    result = await alice.slash(channel, "imagine", prompt=prompt)

    assert images_api.generation_requests[0].body["prompt"] == prompt.strip()
    (embed,) = result.response.embeds
    assert len(embed) <= 6000
    assert embed.description.endswith("…")
    assert prompt.startswith(embed.description[:-1])
    assert result.response.attachments


# -- autocomplete follows the model ------------------------------------------------------------


async def test_size_and_quality_autocomplete_follow_the_chosen_model(
    simcord_env: Any, channel: Any, alice: Any
) -> None:
    sizes = await alice.autocomplete(channel, "imagine", "size", "", model="dall-e-2")
    assert [c["value"] for c in sizes] == ["256x256", "512x512", "1024x1024"]
    assert sizes[2]["name"] == "1024x1024 (square), default"

    qualities = await alice.autocomplete(channel, "imagine", "quality", "", model="dall-e-3")
    assert [c["value"] for c in qualities] == ["standard", "hd"]

    typed = await alice.autocomplete(channel, "imagine", "size", "1536x864", model="gpt-image-2")
    assert typed[0] == {"name": "1536x864 (landscape)", "value": "1536x864"}
    refused = await alice.autocomplete(channel, "imagine", "size", "1000x1000", model="gpt-image-2")
    assert refused == []

    default = await alice.autocomplete(channel, "imagine", "quality", "")
    assert [c["value"] for c in default] == ["auto", "low", "medium", "high", "xhigh", "max"]


# -- the queue and shutdown ---------------------------------------------------------------------


# Position updates sleep 1.5 s between polls: with a 1 s settle timeout simcord parks them on
# its virtual clock until advance_time, instead of driving them in real time.
@pytest.mark.simcord(settle_timeout=1.0)
@pytest.mark.parametrize("bot_overrides", [{"max_concurrent_generations": 1}])
async def test_requests_beyond_the_cap_wait_in_line_and_see_their_position(
    simcord_env: Any, guild: Any, channel: Any, alice: Any, bob: Any, images_api: FakeImagesAPI
) -> None:
    carol = guild.add_member(simcord_env.create_user("carol"))
    gate = Gate(simcord_env)
    first = await alice.slash(channel, "imagine", prompt="one")
    second = await bob.slash(channel, "imagine", prompt="two")
    third = await carol.slash(channel, "imagine", prompt="three")

    assert len(gate.opened) == 1  # only one generation in flight
    assert second.response.content == "⏳ Waiting for a free slot: you are number 1 in the queue."
    assert third.response.content == "⏳ Waiting for a free slot: you are number 2 in the queue."

    gate.open(0)
    await simcord_env.settle()
    assert first.response.attachments
    assert len(gate.opened) == 2
    await simcord_env.advance_time(2)  # position edits are spaced out
    assert third.response.content == "⏳ Waiting for a free slot: you are number 1 in the queue."

    gate.open(1)
    await simcord_env.settle()
    gate.open(2)
    await simcord_env.settle()
    assert second.response.attachments
    assert third.response.attachments
    assert [r.body["prompt"] for r in images_api.generation_requests] == ["one", "two", "three"]


@pytest.mark.simcord(settle_timeout=1.0)
@pytest.mark.parametrize("bot_overrides", [{"max_concurrent_generations": 1}])
async def test_a_long_queue_shows_positions_within_the_progress_edit_budget(
    simcord_env: Any, guild: Any, channel: Any, alice: Any
) -> None:
    """Position edits are paid from the bot's one budget of progress edits: a long line cannot
    start an edit per member at once (each holds its request and connection until Discord
    answers); the members it refuses see their place at a later poll."""
    budget: EditBudget = simcord_env.bot.services.edits
    budget.rate = 0.01  # as good as none refilled while the line forms: the burst is all there is
    gate = Gate(simcord_env)
    await alice.slash(channel, "imagine", prompt="first")
    members = [guild.add_member(simcord_env.create_user(f"m{i}")) for i in range(budget.burst + 6)]
    queued = [await member.slash(channel, "imagine", prompt="later") for member in members]
    assert len(gate.opened) == 1

    shown = [q for q in queued if "in the queue" in (q.response.content or "")]
    # Before: every member in line at once (16 edits here), whatever the budget.
    assert len(shown) == budget.burst
    budget.rate = 10.0
    await simcord_env.advance_time(2)  # the next poll, with the budget refilled
    assert all("in the queue" in (q.response.content or "") for q in queued)


@pytest.mark.parametrize(
    "bot_overrides", [{"max_concurrent_generations": 2, "shutdown_grace_seconds": 1}]
)
async def test_shutdown_lets_requests_finish_within_the_grace_and_tells_the_rest(
    simcord_env: Any, guild: Any, channel: Any, alice: Any, bob: Any, images_api: FakeImagesAPI
) -> None:
    carol = guild.add_member(simcord_env.create_user("carol"))
    gate = Gate(simcord_env)
    finishing = await alice.slash(channel, "imagine", prompt="finishes")
    stuck = await bob.slash(channel, "imagine", prompt="stuck")
    bot = simcord_env.bot
    admission = bot.admission

    # As on SIGTERM: closing the bot unloads the extension, whose cog drains its requests.
    # The test's own task: its grace period runs on the real clock, so keep it short.
    draining = asyncio.ensure_future(bot.shutdown())
    await simcord_env.settle()
    late = await carol.slash(channel, "imagine", prompt="too late")
    assert late.response.ephemeral
    assert late.response.content == "The bot is restarting. Please try again in a minute."

    gate.open(0)
    await simcord_env.settle()
    assert finishing.response.attachments

    await draining
    assert "The bot is restarting, so your request was cancelled." in private_reply(stuck).content
    assert len(images_api.generation_requests) == 1  # the stuck one never reached the API
    assert not admission.jobs
    assert bot.is_closed()
    assert bot.images._session.closed  # closed only after the cog had told its members


async def test_slow_steps_before_the_acknowledgement_never_add_up_past_discords_patience(
    simcord_env: Any, channel: Any, alice: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each step alone within its own timeout (settings 1.5 s, limits 1.5 s), together 2.8 s:
    # the limits get only what is left of 2.5 s, and the member hears in time.
    services = simcord_env.bot.services
    read_settings, count = services.server_settings.get, services.limiter.acquire

    async def slow_settings(guild_id: Any) -> Any:
        await asyncio.sleep(1.4)
        return await read_settings(guild_id)

    async def slow_limits(key: str) -> Any:
        await asyncio.sleep(1.4)
        return await count(key)

    monkeypatch.setattr(services.server_settings, "get", slow_settings)
    monkeypatch.setattr(services.limiter, "acquire", slow_limits)
    answered: list[float] = []
    real_send = discord.InteractionResponse.send_message

    async def timed_send(self: Any, *args: Any, **kwargs: Any) -> Any:
        answered.append((discord.utils.utcnow() - self._parent.created_at).total_seconds())
        return await real_send(self, *args, **kwargs)

    monkeypatch.setattr(discord.InteractionResponse, "send_message", timed_send)
    result = await alice.slash(channel, "imagine", prompt="a cat")

    assert result.response.ephemeral
    assert result.response.content == LIMITS_UNAVAILABLE
    (after,) = answered
    assert after <= ACKNOWLEDGE_WITHIN + 0.01
