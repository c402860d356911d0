"""Zoom out and pan under posted images, pressed in simcord against the fake Images API: each
press sends the image on a larger canvas with a mask of exactly the new area to /images/edits,
as a new request from the presser."""

from __future__ import annotations

import io
from decimal import Decimal
from typing import Any

import pytest
from PIL import Image

from bot.requests.saved_requests import SavedRequest
from bot.requests.zoom import BAD_IMAGE, read_form
from tests.cogs import test_buttons
from tests.cogs.support import uploaded
from tests.databases import ledger_rows
from tests.fakes.images_api import FakeImagesAPI, edit_form_problem

restarted = test_buttons.restarted  # the fixture that restarts the bot on the same database

ZOOM_LABELS = [
    "Zoom out 1.5\u00d7",
    "Zoom out 2\u00d7",
    "Custom zoom",
    "Pan left",
    "Pan right",
    "Pan up",
    "Pan down",
]


def button_rows(message: Any) -> list[list[str]]:
    return [[button["label"] for button in row["components"]] for row in message.components]


# The zoom rows as posted: Info and Send to DM share the first one (3 + 2 buttons).
ZOOM_ROWS = [[*ZOOM_LABELS[:3], "Info", "Send to DM"], ZOOM_LABELS[3:]]
ZOOM_AND_INFO = [label for row in ZOOM_ROWS for label in row]


def all_labels(message: Any) -> list[str]:
    return [label for row in button_rows(message) for label in row]


def decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def transparent_box(image: Image.Image) -> tuple[int, int, int, int] | None:
    """The bounding box of the opaque pixels: (left, top, right, bottom)."""
    return image.getchannel("A").getbbox()


def sent_canvas(images_api: FakeImagesAPI) -> tuple[dict[str, Any], Image.Image, Image.Image]:
    """The last edit's form, its image and its mask, decoded from the multipart body."""
    form = images_api.edit_requests[-1].body
    assert edit_form_problem(form) is None
    (image,) = form["image"]
    (mask,) = form["mask"]
    return form, decoded(image.data), decoded(mask.data)


def assert_new_area_is(mask: Image.Image, image: Image.Image, box: tuple[int, ...]) -> None:
    """The mask is transparent exactly outside ``box`` (the original) and opaque inside it, and
    the image sent is transparent there too."""
    alpha = mask.getchannel("A")
    assert alpha.getbbox() == box
    assert alpha.crop(box).getextrema() == (255, 255)  # the original is kept, all of it
    inverse = Image.eval(alpha, lambda value: 255 - value)
    assert inverse.crop(box).getbbox() is None
    assert Image.eval(alpha, lambda value: 255 - value).getbbox() is not None  # there is new area
    assert transparent_box(image) == box


@pytest.mark.parametrize(
    ("label", "box"),
    [
        ("Zoom out 2\u00d7", (256, 256, 768, 768)),
        ("Zoom out 1.5\u00d7", (170, 170, 853, 853)),
        ("Pan left", (512, 0, 1536, 1024)),
        ("Pan right", (0, 0, 1024, 1024)),
    ],
)
async def test_each_button_sends_the_image_on_a_larger_canvas_and_a_mask_of_the_new_area(
    simcord_env: Any,
    channel: Any,
    alice: Any,
    bob: Any,
    images_api: FakeImagesAPI,
    label: str,
    box: tuple[int, int, int, int],
) -> None:
    made = await alice.slash(channel, "imagine", prompt="a fox in a meadow", quality="low")

    extended = await bob.click(made.response, label=label)

    form, image, mask = sent_canvas(images_api)
    width = 1536 if label.startswith("Pan") else 1024
    assert image.size == mask.size == (width, 1024)
    assert (form["size"], form["prompt"], form["model"], form["quality"]) == (
        f"{width}x1024",
        "a fox in a meadow",
        "gpt-image-2.5-flare",
        "low",
    )
    assert_new_area_is(mask, image, box)
    assert form["user"] != images_api.generation_requests[0].body["user"]  # bob asks
    reply = extended.response
    assert not reply.ephemeral and reply.embeds[0].author.name == "bob edited"
    assert await uploaded(reply) == images_api.served[1:]
    # The result has the buttons too, so a member can keep zooming.
    assert all_labels(reply)[-9:] == ZOOM_AND_INFO


@pytest.mark.parametrize("bot_overrides", [{"max_images_per_request": 10}])
async def test_the_buttons_take_two_rows_after_the_vary_rows_within_discords_five(
    simcord_env: Any, channel: Any, alice: Any
) -> None:
    made = await alice.slash(channel, "imagine", prompt="ten foxes", count=10)

    rows = button_rows(made.response)
    assert len(rows) == 5
    assert rows[3:] == ZOOM_ROWS


async def test_pan_up_and_down_extend_the_other_way(
    simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI
) -> None:
    made = await alice.slash(channel, "imagine", prompt="a tower", size="1024x1024")

    await alice.click(made.response, label="Pan up")
    _, image, mask = sent_canvas(images_api)
    assert mask.size == (1024, 1536)
    assert_new_area_is(mask, image, (0, 512, 1024, 1536))

    await alice.click(made.response, label="Pan down")
    _, image, mask = sent_canvas(images_api)
    assert_new_area_is(mask, image, (0, 0, 1024, 1024))


async def test_a_square_only_model_extends_a_pan_to_a_square(
    simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI
) -> None:
    """dall-e-2 edits squares only: a pan to the right shrinks the original against the left
    edge, and the rest of the square is new."""
    made = await alice.slash(
        channel, "imagine", prompt="a castle", model="dall-e-2", size="256x256"
    )

    await alice.click(made.response, label="Pan right")

    form, image, mask = sent_canvas(images_api)
    assert (form["model"], form["size"]) == ("dall-e-2", "256x256")
    assert image.size == mask.size == (256, 256)
    assert_new_area_is(mask, image, (0, 42, 171, 213))


async def test_custom_zoom_asks_the_factor_and_the_prompt_and_sends_the_changed_prompt(
    simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI
) -> None:
    made = await alice.slash(channel, "imagine", prompt="a lighthouse", quality="low")

    shown = await alice.click(made.response, label="Custom zoom")

    inputs = {
        label["component"]["custom_id"]: label["component"] for label in shown.modal["components"]
    }
    assert inputs["factor"]["value"] == "1.5"
    assert inputs["prompt"]["value"] == "a lighthouse"
    assert "image" not in inputs  # one image: nothing to choose
    assert images_api.edit_requests == []  # nothing is sent until it is submitted

    zoomed = await alice.submit_modal(
        shown, {"factor": "4", "prompt": "a lighthouse on a stormy coast"}
    )

    form, image, mask = sent_canvas(images_api)
    assert form["prompt"] == "a lighthouse on a stormy coast"
    assert_new_area_is(mask, image, (384, 384, 640, 640))
    assert zoomed.response.embeds[0].description == "a lighthouse on a stormy coast"


async def test_custom_zoom_on_a_set_of_several_asks_which_image(
    simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI
) -> None:
    made = await alice.slash(channel, "imagine", prompt="two boats", count=2)
    shown = await alice.click(made.response, label="Custom zoom")

    await alice.submit_modal(shown, {"factor": "2", "prompt": "two boats", "image": "2"})

    _, image, _ = sent_canvas(images_api)
    original = decoded(images_api.served[1]).convert("RGBA").resize((512, 512))
    assert image.crop((256, 256, 768, 768)).tobytes() == original.tobytes()


@pytest.mark.parametrize(
    ("factor", "image", "sentence"),
    [
        ("9", "1", "The zoom factor must be a number from 1.1 to 4, such as 1.5."),
        ("nan", "1", "The zoom factor must be a number from 1.1 to 4, such as 1.5."),
        ("2", "3", "That image is no longer in this message."),
        ("2", "0", "The image number must be a whole number, such as 1."),
    ],
)
async def test_a_bad_custom_zoom_is_refused_privately_and_sends_nothing(
    simcord_env: Any,
    channel: Any,
    alice: Any,
    images_api: FakeImagesAPI,
    factor: str,
    image: str,
    sentence: str,
) -> None:
    made = await alice.slash(channel, "imagine", prompt="two boats", count=2)
    shown = await alice.click(made.response, label="Custom zoom")

    refused = await alice.submit_modal(
        shown, {"factor": factor, "prompt": "two boats", "image": image}
    )

    assert refused.response.ephemeral and refused.response.content == sentence
    assert images_api.edit_requests == []


def test_a_forged_image_number_of_thousands_of_digits_is_one_sentence() -> None:
    """Discord holds the form's field to 2 characters; a forged submission is not parsed."""
    saved = SavedRequest(1, 1, None, None, "boats", "gpt-image-1", "1024x1024", "low", 2, {})
    values = {"factor": "2", "prompt": "boats", "image": "9" * 5000}
    assert read_form(values, saved) == BAD_IMAGE


async def test_zoom_buttons_posted_before_a_restart_work(
    simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI, restarted: Any
) -> None:
    made = await alice.slash(channel, "imagine", prompt="a harbour")
    shown = await alice.click(made.response, label="Custom zoom")

    await restarted()
    zoomed = await alice.click(made.response, label="Zoom out 2\u00d7")
    custom = await alice.submit_modal(shown, {"factor": "1.5", "prompt": "a harbour at dusk"})

    assert [request.body["prompt"] for request in images_api.edit_requests] == [
        "a harbour",
        "a harbour at dusk",
    ]
    assert len(zoomed.response.attachments) == 1
    assert len(custom.response.attachments) == 1


@pytest.mark.parametrize(
    "bot_overrides", [{"offered_models": "dall-e-3", "default_model": "dall-e-3"}]
)
async def test_models_that_do_not_edit_get_no_zoom_buttons(
    simcord_env: Any, channel: Any, alice: Any
) -> None:
    made = await alice.slash(channel, "imagine", prompt="a lighthouse")
    assert all_labels(made.response) == ["Reroll", "Edit prompt", "Delete", "Info", "Send to DM"]


async def test_an_animated_gif_gets_no_zoom_buttons(
    simcord_env: Any, channel: Any, alice: Any
) -> None:
    made = await alice.slash(channel, "imagine", prompt="a spinning coin", format="gif")
    assert not set(ZOOM_LABELS) & set(all_labels(made.response))


class TestTheLedgerAndBudgets:
    @pytest.fixture
    def bot_overrides(self, database_url: str) -> dict[str, Any]:
        return {"database_url": database_url, "member_budget": "2 images/day"}

    async def test_a_zoom_is_a_priced_edit_and_one_over_the_budget_is_refused_privately(
        self,
        simcord_env: Any,
        channel: Any,
        alice: Any,
        images_api: FakeImagesAPI,
        database_url: str,
    ) -> None:
        made = await alice.slash(channel, "imagine", prompt="a cat", model="gpt-image-1-mini")
        panned = await alice.click(made.response, label="Pan left")
        assert len(panned.response.attachments) == 1

        refused = await alice.click(made.response, label="Zoom out 2\u00d7")

        assert refused.response.ephemeral and refused.response.attachments == []
        assert refused.response.content.startswith("Your budget on this server is 2 images per day")
        assert len(images_api.edit_requests) == 1
        rows = await ledger_rows(database_url)  # the refused press charged nothing
        assert [(row["kind"], row["outcome"], row["size"]) for row in rows] == [
            ("generate", "delivered", "1024x1024"),
            ("edit", "delivered", "1536x1024"),
        ]
        assert rows[1]["cost"] is not None and Decimal(rows[1]["cost"]) > 0
