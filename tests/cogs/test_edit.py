"""/edit and the Vary image menu end to end: the real bot in simcord's Discord, attachments as
options, the fake Images API's edits endpoint on loopback."""

from __future__ import annotations

import asyncio
import io
import os
from collections.abc import Callable
from typing import Any

import discord
import pytest
from PIL import Image
from simcord.http.client import FakeHTTPClient

from bot.requests.editing import VARY_PROMPT
from cogs.edit._command import CHOICE_SECONDS
from tests.cogs.support import (
    CALLBACK_DEFER,
    Gate,
    callback_types,
    fields,
    private_reply,
    uploaded,
)
from tests.cogs.test_buttons import posted_in_three_messages
from tests.databases import ledger_rows
from tests.fakes.images_api import (
    FakeImagesAPI,
    FormFile,
    edit_form_problem,
    images_body,
    incompressible_png,
    make_image,
    respond,
)
from tests.fakes.phone_photos import motion_photo, ultra_hdr

CALLBACK_MESSAGE = 4  # an immediate answer (here: a private refusal)


def counted_downloads(env: Any) -> list[str]:
    """The attachment URLs the bot downloads from simcord's CDN from now on."""
    downloads: list[str] = []
    cdn = env.backend.cdn
    real_get = cdn.get

    def counted(url: str) -> Any:
        downloads.append(url)
        return real_get(url)

    cdn.get = counted
    return downloads


def assert_told_the_limit(message: Any, limit: str) -> None:
    """``message`` is the private sentence of a member over their limit of ``limit``."""
    assert message.ephemeral
    assert message.content.startswith(
        f"You have reached your limit of {limit}, counted across every server this bot is in."
    )


def png(width: int = 64, height: int = 64, transparent: bool = False) -> bytes:
    mode = "RGBA" if transparent else "RGB"
    colour = (200, 40, 40, 0) if transparent else (200, 40, 40)
    buffer = io.BytesIO()
    Image.new(mode, (width, height), colour).save(buffer, format="PNG")
    return buffer.getvalue()


async def test_an_edit_posts_images_made_from_the_attachment(
    simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI
) -> None:
    source = png(96, 64)
    result = await alice.slash(
        channel, "edit", image=("photo.png", source), prompt="add a red hat", count=2
    )

    assert callback_types(simcord_env) == [CALLBACK_DEFER]
    reply = result.response
    assert not reply.ephemeral
    assert await uploaded(reply) == images_api.served
    (embed,) = reply.embeds
    assert embed.author.name == "alice edited"
    assert embed.description == "add a red hat"
    assert fields(embed)["From"] == "1 image"
    assert fields(embed)["Images"] == "2"

    (sent,) = images_api.edit_requests
    form = sent.body
    assert edit_form_problem(form) is None
    assert [part.data for part in form["image"]] == [source]
    assert (form["model"], form["prompt"], form["n"]) == (
        "gpt-image-2.5-flare",
        "add a red hat",
        "2",
    )
    assert form["user"] == form["safety_identifier"]
    assert str(alice.id) not in form["user"]
    assert (form["stream"], form["partial_images"]) == ("true", "2")  # previews, as /imagine
    assert images_api.served_partials  # streamed as image_edit.* events, read like /imagine's
    assert not images_api.generation_requests


async def test_references_and_a_mask_go_with_the_image(
    simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI
) -> None:
    first, second, third = png(64, 64), png(32, 32), png(48, 48)
    result = await alice.slash(
        channel, "edit", image=("room.png", first), prompt="put the lamp and chair in the room",
        image2=("lamp.png", second), image3=("chair.png", third),
        mask=("mask.png", png(64, 64, transparent=True)), model="gpt-image-1.5",
        quality="low", size="1536x1024", fidelity="high",
    )  # fmt: skip

    assert fields(result.response.embeds[0])["From"] == "3 images, with a mask"
    form = images_api.edit_requests[0].body
    assert edit_form_problem(form) is None
    assert [part.data for part in form["image[]"]] == [first, second, third]
    assert form["mask"][0].data == png(64, 64, transparent=True)
    assert (form["model"], form["quality"], form["size"], form["input_fidelity"]) == (
        "gpt-image-1.5", "low", "1536x1024", "high",
    )  # fmt: skip


async def test_a_large_image_is_checked_off_the_loop_and_sent(
    simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI
) -> None:
    big = incompressible_png(700, 700)  # over 1 MB: read in a worker thread
    assert len(big) > 1024 * 1024
    result = await alice.slash(channel, "edit", image=("big.png", big), prompt="sharper")
    assert len(result.response.attachments) == 1
    assert images_api.edit_requests[0].body["image"][0].data == big


@pytest.mark.parametrize("made", [ultra_hdr, motion_photo], ids=["ultra-hdr", "motion-photo"])
async def test_a_phone_photo_is_edited_and_varied_from_its_picture(
    simcord_env: Any,
    channel: Any,
    alice: Any,
    bob: Any,
    images_api: FakeImagesAPI,
    made: Callable[[], tuple[bytes, bytes]],
) -> None:
    """A photo with a gain map after it (Ultra HDR: "MPO") or a video after it (a motion photo)
    is edited as the photo: the picture alone is sent, nothing after it."""
    data, picture = made()
    result = await alice.slash(channel, "edit", image=("PXL_2026.jpg", data), prompt="a hat")
    assert not result.response.ephemeral, result.response.content
    assert len(result.response.attachments) == 1

    posted = await alice.send(channel, "my photo", attachments=[("PXL_2026.jpg", data)])
    varied = await bob.context_menu(channel, "Vary image", posted)
    assert len(varied.response.attachments) == 1

    for sent in images_api.edit_requests:
        assert edit_form_problem(sent.body) is None
        assert sent.body["image"] == [FormFile("image", "image.jpg", "image/jpeg", picture)]
    assert len(images_api.edit_requests) == 2


@pytest.mark.parametrize(
    ("options", "sentence"),
    [
        (
            {"image": ("cat.png", b"GIF89a not really an image")},
            "The image is not an image the bot can read; use PNG, JPEG or WebP.",
        ),
        (
            {"image": ("cat.png", png()), "mask": ("mask.png", png())},
            "The mask has no transparency (alpha channel): its transparent areas mark where the "
            "image is edited.",
        ),
        (
            {"image": ("cat.png", png()), "mask": ("mask.png", png(32, 32, transparent=True))},
            "The mask is 32x32 but the image is 64x64; they must be the same size.",
        ),
        (
            {"image": ("cat.png", png(64, 32)), "model": "dall-e-2"},
            "dall-e-2 edits square images only; the image is 64x32.",
        ),
        (
            {"image": ("cat.png", png()), "image2": ("dog.png", png()), "model": "dall-e-2"},
            "dall-e-2 takes one image to edit; you gave 2.",
        ),
        (
            {"image": ("cat.png", png()), "size": "640x480", "model": "gpt-image-1.5"},
            "gpt-image-1.5 takes the sizes auto, 1024x1024, 1536x1024, 1024x1536.",
        ),
        (
            {"image": ("cat.png", png()), "fidelity": "high"},
            "gpt-image-2.5-flare does not take an input fidelity.",
        ),
    ],
)
async def test_bad_inputs_are_refused_privately_and_nothing_is_paid(
    simcord_env: Any,
    channel: Any,
    alice: Any,
    images_api: FakeImagesAPI,
    options: dict[str, Any],
    sentence: str,
) -> None:
    result = await alice.slash(channel, "edit", prompt="make it blue", **options)
    assert callback_types(simcord_env) == [CALLBACK_MESSAGE]
    assert result.response.ephemeral
    assert result.response.content == sentence
    assert not images_api.edit_requests and not images_api.generation_requests


async def test_an_attachment_over_the_models_limit_is_refused_before_it_is_downloaded(
    simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI
) -> None:
    downloads = counted_downloads(simcord_env)
    oversized = png(256, 256) + b"\0" * (4 * 1024 * 1024)
    result = await alice.slash(
        channel, "edit", image=("big.png", oversized), prompt="x", model="dall-e-2"
    )
    assert result.response.content == "The image is 4.0 MB; the most accepted is 4.0 MB."
    assert downloads == []
    assert not images_api.edit_requests and not images_api.generation_requests


async def test_an_attachment_discord_cannot_serve_is_one_sentence(
    simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI
) -> None:
    simcord_env.backend.cdn.get = lambda url: None  # the CDN answers 404
    result = await alice.slash(channel, "edit", image=("cat.png", png()), prompt="x")
    assert result.response.ephemeral
    assert result.response.content == (
        "The image could not be downloaded from Discord. Please try again."
    )
    assert not images_api.edit_requests and not images_api.generation_requests


async def test_the_model_choices_are_the_models_that_edit(simcord_env: Any) -> None:
    command = simcord_env.bot.tree.get_command("edit")
    (model,) = [option for option in command.to_dict(simcord_env.bot.tree)["options"]
                if option["name"] == "model"]  # fmt: skip
    names = [choice["value"] for choice in model["choices"]]
    assert "dall-e-3" not in names
    assert names[0] == "gpt-image-2.5-flare" and "dall-e-2" in names


async def test_vary_image_varies_the_image_of_any_message(
    simcord_env: Any, channel: Any, alice: Any, bob: Any, images_api: FakeImagesAPI
) -> None:
    drawing = png(64, 64)
    posted = await alice.send(channel, "my drawing", attachments=[("a.png", drawing)])
    result = await bob.context_menu(channel, "Vary image", posted)

    assert callback_types(simcord_env) == [CALLBACK_DEFER]
    assert len(result.response.attachments) == 1
    assert result.response.embeds[0].author.name == "bob edited"
    form = images_api.edit_requests[0].body
    assert [part.data for part in form["image"]] == [drawing]
    assert form["prompt"] == VARY_PROMPT


async def test_vary_image_asks_which_image_when_there_are_several(
    simcord_env: Any, channel: Any, alice: Any, bob: Any, images_api: FakeImagesAPI
) -> None:
    first, second = png(64, 64), png(32, 32)
    posted = await alice.send(
        channel, "my two drawings", attachments=[("a.png", first), ("b.png", second)]
    )
    asked = await bob.context_menu(channel, "Vary image", posted)
    question = asked.response
    assert question.ephemeral
    assert question.content == "This message has several images: which one should be varied?"
    assert not images_api.edit_requests

    result = await bob.select(question, ["1"])
    assert len(result.response.attachments) == 1
    assert not result.response.ephemeral
    form = images_api.edit_requests[0].body
    assert [part.data for part in form["image"]] == [second]
    # Answered: the question keeps no select that nothing would answer any more.
    assert asked.response.content == "Image 2 chosen."
    assert not asked.response.components


async def test_an_unanswered_question_of_vary_image_expires_without_its_select(
    simcord_env: Any, channel: Any, alice: Any, bob: Any, images_api: FakeImagesAPI
) -> None:
    posted = await alice.send(
        channel, "two drawings", attachments=[("a.png", png(64, 64)), ("b.png", png(32, 32))]
    )
    asked = await bob.context_menu(channel, "Vary image", posted)
    await simcord_env.advance_time(CHOICE_SECONDS + 1)
    assert asked.response.content == "This question has expired: use Vary image again."
    assert not asked.response.components
    assert not images_api.edit_requests


async def test_vary_image_on_the_bots_own_images_keeps_their_prompt(
    simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI
) -> None:
    made = await alice.slash(channel, "imagine", prompt="a lighthouse at dusk")
    await alice.context_menu(channel, "Vary image", made.response)
    form = images_api.edit_requests[0].body
    assert form["prompt"] == "a lighthouse at dusk"
    assert [part.data for part in form["image"]] == images_api.served[:1]


async def test_vary_image_on_a_message_without_images_says_so(
    simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI
) -> None:
    posted = await alice.send(channel, "just words")
    result = await alice.context_menu(channel, "Vary image", posted)
    assert result.response.ephemeral
    assert result.response.content == "This message has no image to vary."
    assert not images_api.edit_requests and not images_api.generation_requests


async def test_vary_under_posted_images_edits_the_chosen_one_and_posts_the_result(
    simcord_env: Any, channel: Any, alice: Any, bob: Any, images_api: FakeImagesAPI
) -> None:
    made = await alice.slash(
        channel, "imagine", prompt="two foxes", count=2, model="gpt-image-1.5", quality="low"
    )
    buttons = [b["label"] for row in made.response.components for b in row["components"]]
    assert buttons[-11:-9] == ["Vary 1", "Vary 2"]  # then Zoom out, Info and pan (test_zoom.py)

    varied = await bob.click(made.response, label="Vary 2")

    (sent,) = images_api.edit_requests
    form = sent.body
    assert edit_form_problem(form) is None
    assert [part.data for part in form["image"]] == [images_api.served[1]]
    assert (form["prompt"], form["model"], form["quality"], form["n"]) == (
        "two foxes",
        "gpt-image-1.5",
        "low",
        "1",
    )
    asked = images_api.generation_requests[0].body
    assert form["user"] != asked["user"]  # bob's pseudonym: the presser asks
    assert str(bob.id) not in form["user"]
    reply = varied.response
    assert not reply.ephemeral and reply.id != made.response.id
    assert await uploaded(reply) == images_api.served[2:]
    assert reply.embeds[0].author.name == "bob edited"
    assert len(await uploaded(made.response)) == 2  # the pressed message keeps its images


@pytest.mark.parametrize("bot_overrides", [{"user_rate_limit": "1/minute"}])
async def test_a_vary_press_over_the_pressers_limit_is_told_privately(
    simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI
) -> None:
    made = await alice.slash(channel, "imagine", prompt="a fox")
    refused = await alice.click(made.response, label="Vary")
    assert_told_the_limit(refused.response, "1 image request per minute")
    assert not images_api.edit_requests


@pytest.mark.parametrize("bot_overrides", [{"user_rate_limit": "2/minute"}])
async def test_a_member_over_their_limit_costs_the_bot_no_download(
    simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI
) -> None:
    downloads = counted_downloads(simcord_env)
    # Refused for an option, before anything is downloaded: it does not count.
    refused = await alice.slash(
        channel, "edit", image=("a.png", png()), prompt="x", model="gpt-image-1.5", size="640x480"
    )
    assert refused.response.ephemeral
    assert downloads == []
    await alice.slash(channel, "imagine", prompt="a cat")
    made = await alice.slash(channel, "edit", image=("a.png", png()), prompt="a hat")
    assert len(made.response.attachments) == 1
    downloads.clear()

    limited = await alice.slash(
        channel, "edit", image=("a.png", png()), image2=("b.png", png()), prompt="x"
    )

    assert limited.response.content.startswith("You have reached")
    assert downloads == []


@pytest.mark.parametrize("bot_overrides", [{"user_rate_limit": "1/hour"}])
async def test_ten_edits_at_one_an_hour_download_at_most_once(
    simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI
) -> None:
    """A download counts against the member's limit whether or not the edit is then refused
    for its file: a member at one an hour makes the bot download once an hour, not ten times."""
    downloads = counted_downloads(simcord_env)
    not_an_image = os.urandom(3 * 1024 * 1024)  # 3 MB the bot must download to refuse
    for _ in range(10):  # refused for an option: before any download, and not counted
        await alice.slash(
            channel, "edit", image=("a.png", not_an_image), prompt="x", model="gpt-image-1.5",
            size="640x480",
        )  # fmt: skip
    assert downloads == []

    answers = [
        (await alice.slash(channel, "edit", image=("a.png", not_an_image), prompt="x")).response
        for _ in range(10)
    ]

    assert len(downloads) == 1
    assert answers[0].content == (
        "The image is not an image the bot can read; use PNG, JPEG or WebP."
    )
    for answer in answers[1:]:
        assert_told_the_limit(answer, "1 image request per hour")
    assert not images_api.edit_requests


@pytest.mark.parametrize("bot_overrides", [{"processing_slots": 1}])
async def test_concurrent_edits_hold_no_more_downloaded_inputs_than_the_slots_allow(
    simcord_env: Any, guild: Any, channel: Any, images_api: FakeImagesAPI
) -> None:
    """Downloaded inputs are held only in the room outside the processing slots (8 MiB a slot)
    or in a slot: six edits of 3 MB at once, with one slot, download three (two in the room,
    one in the slot) while the image service has not answered; the others wait, downloading
    nothing, and follow as the first end."""
    downloads = counted_downloads(simcord_env)
    gate = Gate(simcord_env)
    photo = incompressible_png(1000, 1000)  # about 3 MB
    assert 2.5 * 1024 * 1024 < len(photo) < 4 * 1024 * 1024
    members = [guild.add_member(simcord_env.create_user(f"member{i}")) for i in range(6)]
    results = [
        await member.slash(channel, "edit", image=("photo.png", photo), prompt="sharper")
        for member in members
    ]
    await simcord_env.settle()

    assert len(downloads) == 3
    processing = simcord_env.bot.admission.processing
    assert processing.room.used == 2 * len(photo) and processing.busy == 1

    while len(gate.opened) < 6 or not all(event.is_set() for event in gate.opened):
        for event in gate.opened:
            event.set()
        await simcord_env.settle()
    assert all(len(result.response.attachments) == 1 for result in results)
    assert len(downloads) == 6
    assert processing.room.used == 0 and processing.busy == 0
    assert processing.room.peak <= processing.room.total


async def test_an_edit_can_be_deleted_and_varied_but_not_asked_again(
    simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI
) -> None:
    result = await alice.slash(channel, "edit", image=("photo.png", png()), prompt="a hat")
    buttons = [b["label"] for row in result.response.components for b in row["components"]]
    # Its inputs are not kept: Reroll, Edit prompt and Larger could not ask for it again.
    assert buttons[:2] == ["Delete", "Vary"]  # then Zoom out, Info, Send to DM and pan

    varied = await alice.click(result.response, label="Vary")
    assert len(images_api.edit_requests) == 2
    assert varied.response.embeds[0].author.name == "alice edited"

    await alice.click(result.response, label="Delete")
    assert result.response is None  # Discord no longer has the message


async def test_vary_finds_an_image_posted_in_a_follow_up(
    simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI
) -> None:
    posted = await posted_in_three_messages(channel, alice, images_api)
    third = await posted.followups[-1].attachments[0].read()

    await alice.click(posted.response, label="Vary 3")

    (sent,) = images_api.edit_requests
    assert [part.data for part in sent.body["image"]] == [third]


def labels(message: Any) -> list[str]:
    return [button["label"] for row in message.components for button in row["components"]]


async def test_animated_gifs_get_no_vary_button(
    simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI
) -> None:
    """The edits endpoint takes PNG, JPEG or WebP: a Vary under a GIF could only refuse."""
    made = await alice.slash(
        channel, "imagine", prompt="a flickering candle", format="gif", frames=4, count=2
    )
    assert [a.filename for a in made.response.attachments] == ["imagine-1.gif", "imagine-2.gif"]
    assert labels(made.response) == [
        "Reroll", "Edit prompt", "Larger (2048x2048)", "Delete", "Info", "Send to DM",
    ]  # fmt: skip


async def test_fewer_images_than_asked_get_a_vary_button_each_and_no_more(
    simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI
) -> None:
    images_api.push(respond(200, images_body(make_image(64, 64), make_image(64, 64, shade=1))))
    made = await alice.slash(channel, "imagine", prompt="three owls", count=3)
    assert len(made.response.attachments) == 2
    assert [label for label in labels(made.response) if label.startswith("Vary")] == [
        "Vary 1",
        "Vary 2",
    ]


async def test_an_svg_posted_without_its_rendering_gets_no_vary_button(
    simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI
) -> None:
    """Vary sends an SVG's PNG rendering (the edits endpoint takes no SVG): without one, a Vary
    button could only answer that the image is not there."""
    broken = b'<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"><rect'
    images_api.push(respond(200, images_body(broken)))
    made = await alice.slash(channel, "imagine", prompt="a logo", format="svg")
    assert [a.filename for a in made.response.attachments] == ["imagine-1.svg"]
    assert "Vary" not in labels(made.response)

    drawn = await alice.slash(channel, "imagine", prompt="a logo", format="svg")
    assert [a.filename for a in drawn.response.attachments] == ["imagine-1.svg", "imagine-1.png"]
    await alice.click(drawn.response, label="Vary")
    (sent,) = images_api.edit_requests
    assert [part.data for part in sent.body["image"]] == [
        await drawn.response.attachments[1].read()
    ]


class TestVaryUnderTheServersSettings:
    @pytest.fixture
    def manager(self, simcord_env: Any, guild: Any) -> Any:
        role = guild.create_role("Mods", permissions=discord.Permissions(manage_guild=True))
        return guild.add_member(simcord_env.create_user("carol"), roles=[role])

    async def test_vary_on_a_model_the_server_no_longer_allows_falls_back_to_its_default(
        self, simcord_env: Any, channel: Any, alice: Any, manager: Any, images_api: FakeImagesAPI
    ) -> None:
        made = await alice.slash(
            channel, "imagine", prompt="a fox", model="gpt-image-1.5", size="1536x1024",
            quality="low",
        )  # fmt: skip
        plain = await alice.slash(channel, "edit", image=("a.png", png()), prompt="a hat")
        assert len(plain.response.attachments) == 1
        changed = await manager.slash(
            channel, "imagine-settings models", value="gpt-image-2.5-flare, dall-e-2"
        )
        assert changed.response.content.startswith("models is now gpt-image-2.5-flare")

        varied = await alice.click(made.response, label="Vary")

        assert not varied.response.ephemeral, varied.response.content
        assert len(varied.response.attachments) == 1
        edited, fallback = (request.body for request in images_api.edit_requests)
        assert fallback["model"] == "gpt-image-2.5-flare"
        assert fallback["prompt"] == "a fox"
        # The size and quality were gpt-image-1.5's: the default model's own stand in, as for
        # an /edit that names no model.
        assert (fallback.get("size"), fallback.get("quality")) == (
            edited.get("size"),
            edited.get("quality"),
        )

    async def test_vary_image_sends_the_whole_saved_prompt_not_the_embeds_clipped_one(
        self, simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI
    ) -> None:
        prompt = ", ".join(["a lighthouse at dusk"] * 200)  # 4,398 characters; the embed 3,000
        made = await alice.slash(channel, "imagine", prompt=prompt)
        assert len(made.response.embeds[0].description) < len(prompt)

        await alice.context_menu(channel, "Vary image", made.response)

        (sent,) = images_api.edit_requests
        assert sent.body["prompt"] == prompt


class TestTheLedger:
    @pytest.fixture
    def bot_overrides(self, database_url: str) -> dict[str, Any]:
        return {"database_url": database_url}

    async def test_an_edit_is_recorded_as_an_edit(
        self, simcord_env: Any, channel: Any, alice: Any, database_url: str
    ) -> None:
        await alice.slash(channel, "imagine", prompt="a cat")
        await alice.slash(channel, "edit", image=("cat.png", png()), prompt="a hat on the cat")
        rows = await ledger_rows(database_url)
        assert [(row["kind"], row["outcome"]) for row in rows] == [
            ("generate", "delivered"),
            ("edit", "delivered"),
        ]


class TestBudgets:
    @pytest.fixture
    def bot_overrides(self, database_url: str) -> dict[str, Any]:
        return {"database_url": database_url, "member_budget": "1 image/day"}

    async def test_an_edit_over_the_members_budget_is_refused_privately_and_not_sent(
        self, simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI
    ) -> None:
        made = await alice.slash(channel, "imagine", prompt="a cat")
        assert len(made.response.attachments) == 1
        downloads = counted_downloads(simcord_env)
        refused = await alice.slash(channel, "edit", image=("cat.png", png()), prompt="a hat")
        varied = await alice.click(made.response, label="Vary")
        for result in (refused, varied):
            assert result.response.ephemeral
            assert result.response.content.startswith(
                "Your budget on this server is 1 image per day"
            )
        assert not images_api.edit_requests
        assert downloads == []  # the budgets are checked before anything is downloaded


async def test_a_slow_download_is_acknowledged_then_refused_privately(
    simcord_env: Any,
    channel: Any,
    alice: Any,
    images_api: FakeImagesAPI,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Discord wants an answer within 3 s: a check still downloading after 1 s is acknowledged
    first, and its refusal then replaces the public placeholder with a private sentence."""
    cdn_answers = asyncio.Event()
    real_get = FakeHTTPClient.get_from_cdn

    async def slow_cdn(self: Any, url: str) -> bytes:
        await simcord_env.external_wait(cdn_answers.wait(), reason="a slow CDN")
        data: bytes = await real_get(self, url)
        return data

    monkeypatch.setattr(FakeHTTPClient, "get_from_cdn", slow_cdn)
    result = await alice.slash(channel, "edit", image=("cat.png", b"not an image"), prompt="x")
    await simcord_env.advance_time(1.5)
    assert callback_types(simcord_env) == [CALLBACK_DEFER]
    cdn_answers.set()
    await simcord_env.settle()
    assert private_reply(result).content == (
        "The image is not an image the bot can read; use PNG, JPEG or WebP."
    )
    assert not images_api.edit_requests


@pytest.mark.parametrize("bot_overrides", [{"user_rate_limit": "1/minute"}])
async def test_edits_share_the_members_limits_and_an_edit_refused_unread_does_not_count(
    simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI
) -> None:
    refused = await alice.slash(
        channel, "edit", image=("cat.png", png()), prompt="x", model="gpt-image-1.5", size="1x1"
    )
    assert refused.response.ephemeral  # refused before its file is downloaded: not counted
    made = await alice.slash(channel, "imagine", prompt="a cat")
    assert len(made.response.attachments) == 1
    limited = await alice.slash(channel, "edit", image=("cat.png", png()), prompt="a hat")
    assert_told_the_limit(limited.response, "1 image request per minute")
    assert not images_api.edit_requests


@pytest.mark.parametrize("bot_overrides", [{"shutdown_grace_seconds": 0.2}])
async def test_an_edit_in_flight_at_shutdown_is_cancelled_with_a_sentence(
    simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI
) -> None:
    Gate(simcord_env)  # held until the shutdown's grace period is over
    result = await alice.slash(channel, "edit", image=("cat.png", png()), prompt="a hat")
    await simcord_env.bot.shutdown()  # whichever cog unloads first drains every command's jobs
    await simcord_env.settle()
    assert private_reply(result).content == (
        "The bot is restarting, so your request was cancelled. Sorry!"
    )
    assert not simcord_env.bot.admission.jobs
