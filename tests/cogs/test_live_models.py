"""/imagine against a service that serves what OpenAI serves today: the endpoint decides the
models offered, and the newest options reach the request."""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from discord import app_commands
from PIL import Image

from bot.app import ImagineBot
from tests.cogs.support import fields, private_reply, uploaded
from tests.conftest import API_KEY
from tests.fakes.images_api import OPENAI_RETIRED, FakeImagesAPI, images_body, make_image, respond


@pytest.fixture
async def images_api() -> AsyncIterator[FakeImagesAPI]:
    fake = FakeImagesAPI(api_key=API_KEY, retired=OPENAI_RETIRED)
    await fake.start()
    yield fake
    await fake.close()


def offered_models(bot: ImagineBot) -> list[str]:
    command = bot.tree.get_command("imagine")
    assert isinstance(command, app_commands.Command)
    (model,) = [p for p in command.parameters if p.name == "model"]
    return [str(choice.value) for choice in model.choices]


async def test_only_models_the_endpoint_serves_are_offered(
    simcord_env: Any, simcord_bot: ImagineBot, caplog: pytest.LogCaptureFixture
) -> None:
    offered = offered_models(simcord_bot)
    assert offered[0] == "gpt-image-2.5-flare"
    assert "gpt-image-2.6-sunburst" in offered
    assert not set(offered) & OPENAI_RETIRED
    records = caplog.get_records("setup") + caplog.get_records("call")  # the bot starts in setup
    lacking = [r.getMessage() for r in records if "does not list the model" in r.getMessage()]
    assert len(lacking) == 3  # one line per configured model the endpoint lacks
    assert any("gpt-image-1" in line and "2026-10-23" in line for line in lacking)


@pytest.fixture
def bot_overrides() -> dict[str, Any]:
    return {"max_images_per_request": 4}


async def test_a_member_with_the_defaults_gets_images(
    channel: Any, alice: Any, images_api: FakeImagesAPI
) -> None:
    result = await alice.slash(channel, "imagine", prompt="a lighthouse")
    assert await uploaded(result.response) == images_api.served
    (sent,) = images_api.generation_requests
    assert sent.body["model"] == "gpt-image-2.5-flare"
    assert sent.body["safety_identifier"] == sent.body["user"]
    assert sent.body["user"].startswith("discord-")


async def test_gif_and_complexity_reach_the_request_and_the_gif_is_posted(
    channel: Any, alice: Any, images_api: FakeImagesAPI
) -> None:
    result = await alice.slash(
        channel, "imagine", prompt="a flickering candle", format="gif", frames=4,
        frame_ms=120, complexity="low",
    )  # fmt: skip
    (sent,) = images_api.generation_requests
    assert (sent.body["output_format"], sent.body["frame_count"]) == ("gif", 4)
    assert (sent.body["frame_duration_ms"], sent.body["complexity"]) == (120, "low")
    (attachment,) = result.response.attachments
    assert attachment.filename == "imagine-1.gif"
    options = fields(result.response.embeds[0])["Options"]
    assert "frame_count 4" in options and "complexity low" in options


async def test_fewer_images_than_asked_are_posted_and_the_reply_says_so(
    channel: Any, alice: Any, images_api: FakeImagesAPI
) -> None:
    images_api.push(respond(200, images_body(make_image(64, 64), make_image(64, 64, shade=1))))
    result = await alice.slash(channel, "imagine", prompt="three owls", count=3)
    assert len(result.response.attachments) == 2
    assert result.response.content == "2 of the 3 images came back from the image service."


async def test_a_model_the_service_no_longer_serves_is_named_privately(
    channel: Any, alice: Any, images_api: FakeImagesAPI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    images_api.retired = frozenset({"gpt-image-2.5-flare"})  # withdrawn after the bot started
    result = await alice.slash(channel, "imagine", prompt="a lighthouse")
    reply = private_reply(result)
    assert reply.content == (
        "The model gpt-image-2.5-flare is not available on this image service. "
        "Please choose another model."
    )
    assert any("model_not_found" in r.getMessage() for r in caplog.records)


async def test_sixty_images_for_one_asked_posts_one(
    simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI
) -> None:
    images_api.push(respond(200, images_body(*[make_image(32, 32)] * 60)))
    result = await alice.slash(channel, "imagine", prompt="one owl")
    assert len(result.response.attachments) == 1
    assert result.followups == []


async def test_an_svg_is_posted_with_a_png_rendering_beside_it(
    channel: Any, alice: Any, images_api: FakeImagesAPI
) -> None:
    result = await alice.slash(channel, "imagine", prompt="a logo", format="svg")
    svg, png = result.response.attachments
    assert (svg.filename, png.filename) == ("imagine-1.svg", "imagine-1.png")
    assert await svg.read() == images_api.served[0]
    rendered = Image.open(io.BytesIO(await png.read()))
    assert (rendered.format, rendered.size) == ("PNG", (1024, 1024))


async def test_an_svg_that_cannot_be_rendered_goes_alone_and_the_reply_says_so(
    channel: Any, alice: Any, images_api: FakeImagesAPI
) -> None:
    broken = b'<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"><rect'
    images_api.push(respond(200, images_body(broken)))
    result = await alice.slash(channel, "imagine", prompt="a logo", format="svg")
    (svg,) = result.response.attachments
    assert svg.filename == "imagine-1.svg"
    assert "No preview: the SVG could not be rendered." in result.response.content


async def test_every_image_carries_alt_text_from_the_prompt(
    simcord_env: Any, channel: Any, alice: Any
) -> None:
    prompt = "a lighthouse at dusk, " * 100  # longer than an attachment description may be
    await alice.slash(channel, "imagine", prompt=prompt.strip(), count=2)
    sent = [
        r.json
        for r in simcord_env.http_requests
        if isinstance(r.json, dict) and "attachments" in r.json
    ]
    descriptions = [a.get("description") for body in sent for a in body["attachments"]]
    assert len(descriptions) == 2
    for description in descriptions:
        assert description.startswith("An image generated from the prompt: a lighthouse at dusk")
        assert len(description) <= 1024
