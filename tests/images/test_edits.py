"""Edits: images as input to ``POST /images/edits``, checked from their bytes before anything is
paid for, sent as the multipart form the contract describes, answered like generations."""

from __future__ import annotations

import dataclasses
import io
import struct
import zlib
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, assume, given, settings
from openai.types.image_edit_params import ImageEditParamsNonStreaming, ImageEditParamsStreaming
from PIL import Image
from pydantic import ConfigDict, TypeAdapter, with_config

from bot.images import (
    EditRequest,
    ImageClient,
    ImageRequest,
    ModerationBlocked,
    UnsupportedOption,
    load_catalog,
)
from bot.images import edits as edits_module
from bot.images.edits import first_picture, form_value, prepare_edit
from bot.images.pricing import INPUT_IMAGE_TOKENS_BOUND, estimate_cost
from tests.fakes.images_api import (
    EDIT_INTEGERS,
    FakeImagesAPI,
    FormFile,
    api_error,
    edit_form_problem,
    make_gif,
    make_image,
)
from tests.fakes.phone_photos import first_picture_size, motion_photo, ultra_hdr
from tests.images.test_contract import valid_requests

CATALOG = load_catalog()


# Its files are `FileTypes`, which take IO objects: pydantic needs to be told to accept those.
@with_config(ConfigDict(arbitrary_types_allowed=True))
class SdkEditParams(ImageEditParamsNonStreaming, total=False):
    pass


@with_config(ConfigDict(arbitrary_types_allowed=True))
class SdkStreamingEditParams(ImageEditParamsStreaming, total=False):
    pass


SDK_EDIT = TypeAdapter(SdkEditParams)
SDK_STREAMING_EDIT = TypeAdapter(SdkStreamingEditParams)


def png(width: int = 64, height: int = 64, mode: str = "RGB", transparent: bool = False) -> bytes:
    image = Image.new(mode, (width, height), (10, 20, 30, 0 if transparent else 255)[: len(mode)])
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


SQUARE_PNG = png()  # what every model that edits takes (dall-e-2: square PNGs only)


def mask(width: int = 64, height: int = 64) -> bytes:
    return png(width, height, "RGBA", transparent=True)


def edit(*images: bytes, model: str = "gpt-image-2.5-flare", **options: Any) -> EditRequest:
    fidelity = options.pop("input_fidelity", None)
    mask_bytes = options.pop("mask", None)
    request = ImageRequest(prompt="add a hat", model=model, user="discord-pseudonym", **options)
    return EditRequest(request, images, mask=mask_bytes, input_fidelity=fidelity)


def assert_fits_the_contract(form: dict[str, Any]) -> None:
    """The received form against the spec's CreateImageEditRequest and the SDK's ImageEditParams."""
    assert edit_form_problem(form) is None
    as_params: dict[str, Any] = {}
    for key, value in form.items():
        if key in ("image", "image[]", "mask"):
            files = [part.data for part in value]
            as_params[key.removesuffix("[]")] = files if key == "image[]" else files[0]
        elif key in EDIT_INTEGERS:
            as_params[key] = int(value)
        elif key == "stream":
            as_params[key] = value == "true"
        else:
            as_params[key] = value
    sdk = SDK_STREAMING_EDIT if as_params.get("stream") else SDK_EDIT
    sdk.validate_python(as_params, strict=True)


# -- what is sent -------------------------------------------------------------------------------


async def test_an_edit_is_a_multipart_form_the_contract_accepts(
    client: ImageClient, images_api: FakeImagesAPI
) -> None:
    source = png(96, 64)
    prepared = await client.prepare_edit(edit(source, size="1536x1024", quality="low", count=2))
    result = await client.generate(prepared)

    assert len(result.images) == 2
    (sent,) = images_api.edit_requests
    assert sent.headers["Content-Type"].startswith("multipart/form-data; boundary=")
    form = sent.body
    assert_fits_the_contract(form)
    assert {key: value for key, value in form.items() if key != "image"} == {
        "model": "gpt-image-2.5-flare",
        "prompt": "add a hat",
        "n": "2",
        "size": "1536x1024",
        "quality": "low",
        "user": "discord-pseudonym",
        "safety_identifier": "discord-pseudonym",
    }
    assert form["image"] == [FormFile("image", "image.png", "image/png", source)]
    assert not images_api.generation_requests


async def test_several_images_go_as_image_brackets_with_the_mask(
    client: ImageClient, images_api: FakeImagesAPI
) -> None:
    first, second = png(64, 64), make_image(32, 48, "jpeg")
    prepared = await client.prepare_edit(edit(first, second, mask=mask()))
    await client.generate(prepared)

    form = images_api.edit_requests[0].body
    assert_fits_the_contract(form)
    assert "image" not in form
    assert [(part.filename, part.content_type) for part in form["image[]"]] == [
        ("image.png", "image/png"),
        ("image2.jpg", "image/jpeg"),
    ]
    assert [part.data for part in form["image[]"]] == [first, second]
    assert form["mask"][0].data == mask()


async def test_input_fidelity_is_sent_where_the_model_takes_it(
    client: ImageClient, images_api: FakeImagesAPI
) -> None:
    prepared = await client.prepare_edit(edit(png(), model="gpt-image-1.5", input_fidelity="high"))
    await client.generate(prepared)
    form = images_api.edit_requests[0].body
    assert form["input_fidelity"] == "high"
    assert_fits_the_contract(form)


async def test_dall_e_2_edits_one_square_png_and_answers_with_a_link(
    client: ImageClient, images_api: FakeImagesAPI
) -> None:
    prepared = await client.prepare_edit(edit(png(256, 256), model="dall-e-2", size="256x256"))
    result = await client.generate(prepared)
    assert [(image.width, image.height) for image in result.images] == [(256, 256)]
    form = images_api.edit_requests[0].body
    assert form["response_format"] == "b64_json"
    assert edit_form_problem(form) is None


async def test_a_retried_edit_sends_the_whole_form_again(
    client: ImageClient, images_api: FakeImagesAPI
) -> None:
    images_api.push(api_error(503, "server_error", None))
    prepared = await client.prepare_edit(edit(png(), mask=mask()))
    result = await client.generate(prepared)
    assert result.attempts == 2
    first, second = (request.body for request in images_api.edit_requests)
    assert first == second


async def test_an_edit_refused_upstream_is_classified_like_a_generation(
    client: ImageClient, images_api: FakeImagesAPI
) -> None:
    images_api.push(api_error(400, "image_generation_user_error", "moderation_blocked"))
    prepared = await client.prepare_edit(edit(png()))
    with pytest.raises(ModerationBlocked):
        await client.generate(prepared)
    assert len(images_api.edit_requests) == 1


async def test_the_estimate_counts_the_input_images(client: ImageClient) -> None:
    plain = client.prepare(ImageRequest(prompt="add a hat", model="gpt-image-1-mini"))
    edited = await client.prepare_edit(edit(png(), png(), model="gpt-image-1-mini", mask=mask()))
    price = CATALOG["gpt-image-1-mini"].price
    assert price is not None and price.image_input_per_million is not None
    extra = price.image_input_per_million * 3 * INPUT_IMAGE_TOKENS_BOUND / 1_000_000
    before, after = estimate_cost(plain), estimate_cost(edited)
    assert before is not None and after is not None
    assert after - before == extra.quantize(after)
    assert edited.kind == "edit" and plain.kind == "generate"


@given(valid_requests())
@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
def test_every_edit_the_engine_builds_fits_the_contract(request_: ImageRequest) -> None:
    """Any valid set of options on any model that edits: the form's fields, as sent, and its
    file, fit the spec's CreateImageEditRequest and the SDK's ImageEditParams."""
    spec = CATALOG[request_.model]
    assume(spec.edits)
    request_ = dataclasses.replace(request_, moderation=None, style=None)
    prepared = prepare_edit(EditRequest(request_, (SQUARE_PNG,)), spec)
    form: dict[str, Any] = {key: form_value(value) for key, value in prepared.body.items()}
    (image,) = prepared.inputs
    form["image"] = [FormFile("image", image.filename, image.content_type, image.data)]
    assert_fits_the_contract(form)


# -- refused before anything is sent ------------------------------------------------------------

NOT_AN_IMAGE = b"%PDF-1.7 this is a document"
REFUSALS = [
    (
        edit(NOT_AN_IMAGE),
        "image",
        "The image is not an image the bot can read; use PNG, JPEG or WebP.",
    ),
    (edit(b""), "image", "The image is an empty file."),
    (
        edit(png(), make_gif(8, 8, 2)),
        "image2",
        "Image 2 is a GIF file; this takes PNG, JPEG or WebP.",
    ),
    (edit(png()[:-20]), "image", "The image is cut off (its file is incomplete)."),
    (
        edit(make_image(64, 64, "jpeg"), model="dall-e-2"),
        "image",
        "The image is a JPEG file; this takes PNG.",
    ),
    (
        edit(png(64, 32), model="dall-e-2"),
        "image",
        "dall-e-2 edits square images only; the image is 64x32.",
    ),
    (
        edit(png(), png(), model="dall-e-2"),
        "image",
        "dall-e-2 takes one image to edit; you gave 2.",
    ),
    (
        edit(*[png()] * 17),
        "image",
        "gpt-image-2.5-flare takes at most 16 images to edit; you gave 17.",
    ),
    (
        edit(png(), mask=make_image(64, 64, "jpeg")),
        "mask",
        "The mask is a JPEG file; this takes PNG.",
    ),
    (
        edit(png(), mask=png()),
        "mask",
        "The mask has no transparency (alpha channel): its transparent areas mark where "
        "the image is edited.",
    ),
    (
        edit(png(), mask=mask(32, 64)),
        "mask",
        "The mask is 32x64 but the image is 64x64; they must be the same size.",
    ),
    (
        edit(png(), output_format="gif", mask=mask()),
        "mask",
        "GIF output cannot be combined with a mask.",
    ),
    (
        edit(png(), model="dall-e-3"),
        "model",
        "dall-e-3 cannot edit images; these can: gpt-image-2.5-flare, "
        "gpt-image-2.5-sunburst, gpt-image-2.5-flare-2026-09-08, "
        "gpt-image-2.5-sunburst-2026-09-08, "
        "gpt-image-2.6-flare, gpt-image-2.6-sunburst, gpt-image-2, gpt-image-2-2026-04-21, "
        "chatgpt-image-latest, gpt-image-1.5, gpt-image-1-mini.",
    ),
    (edit(png(), moderation="low"), "moderation", "`moderation` does not apply to edits."),
    (
        edit(png(), input_fidelity="high"),
        "input_fidelity",
        "gpt-image-2.5-flare does not take an input fidelity.",
    ),
    (
        edit(png(), model="gpt-image-1-mini", input_fidelity="high"),
        "input_fidelity",
        "gpt-image-1-mini takes the input fidelities low.",
    ),
    (edit(png(), size="999x999"), "size", None),
]


@pytest.mark.parametrize(("request_", "field", "sentence"), REFUSALS)
async def test_each_bad_input_is_one_sentence_and_nothing_is_sent(
    client: ImageClient,
    images_api: FakeImagesAPI,
    request_: EditRequest,
    field: str,
    sentence: str | None,
) -> None:
    with pytest.raises(UnsupportedOption) as refused:
        await client.prepare_edit(request_)
    assert refused.value.field == field
    if sentence is not None:
        assert refused.value.user_message == sentence
    assert refused.value.user_message.endswith(".")
    assert "\n" not in refused.value.user_message
    assert not images_api.requests


async def test_an_image_over_the_models_size_limit_is_refused_from_its_length(
    client: ImageClient, images_api: FakeImagesAPI
) -> None:
    big = png(256, 256) + b"\0" * (4 * 1024 * 1024)  # still a PNG by its header
    with pytest.raises(UnsupportedOption) as refused:
        await client.prepare_edit(edit(big, model="dall-e-2"))
    assert refused.value.user_message == "The image is 4.0 MB; the most accepted is 4.0 MB."
    assert not images_api.requests


# -- photos as phones make them ------------------------------------------------------------------


@pytest.mark.parametrize("made", [ultra_hdr, motion_photo], ids=["ultra-hdr", "motion-photo"])
async def test_a_phone_photo_is_sent_as_its_first_picture(
    client: ImageClient, images_api: FakeImagesAPI, made: Callable[[], tuple[bytes, bytes]]
) -> None:
    data, picture = made()
    prepared = await client.prepare_edit(edit(data))
    await client.generate(prepared)

    form = images_api.edit_requests[0].body
    assert_fits_the_contract(form)
    assert form["image"] == [FormFile("image", "image.jpg", "image/jpeg", picture)]
    with Image.open(io.BytesIO(picture)) as sent:
        assert (sent.format, sent.size) == ("JPEG", (96, 64))  # no MPO: one picture, whole


def test_the_first_picture_is_found_by_its_segments_not_the_first_end_marker() -> None:
    """The EXIF thumbnail inside the header is a JPEG with an end marker of its own."""
    data, picture = ultra_hdr()
    assert data.index(b"\xff\xd9") < len(picture) - 2
    assert first_picture(data) == picture
    still = make_image(300, 200, "jpeg")
    assert first_picture(still + b"\x00\x00\x00\x18ftypmp42") == still
    assert first_picture(still) == still


def test_a_phone_photo_whose_first_picture_never_ends_is_cut_off() -> None:
    data, _ = ultra_hdr()
    end = first_picture_size(data)
    no_end = data[: end - 2] + data[end:]
    assert data[end - 2 : end] == b"\xff\xd9" and first_picture(no_end) is None
    with pytest.raises(UnsupportedOption) as refused:
        prepare_edit(edit(no_end), CATALOG["gpt-image-2.5-flare"])
    assert refused.value.user_message == "The image is cut off (its file is incomplete)."
    still = make_image(300, 200, "jpeg")
    with pytest.raises(UnsupportedOption) as refused:
        prepare_edit(edit(still[:-200] + bytes(5000)), CATALOG["gpt-image-2.5-flare"])
    assert refused.value.user_message == "The image is cut off (its file is incomplete)."


def test_a_phone_photo_is_still_checked_as_a_jpeg() -> None:
    data, _ = ultra_hdr()
    with pytest.raises(UnsupportedOption) as refused:
        prepare_edit(edit(data, model="dall-e-2"), CATALOG["dall-e-2"])
    assert refused.value.user_message == "The image is a JPEG file; this takes PNG."
    # Its first picture declaring 60000x60000 pixels: a decompression bomb, refused unread.
    size = data.index(
        b"\x08" + struct.pack(">HH", 64, 96)
    )  # its frame header (not the thumbnail's)
    bomb = data[: size + 1] + struct.pack(">HH", 60000, 60000) + data[size + 5 :]
    with pytest.raises(UnsupportedOption) as refused:
        prepare_edit(edit(bomb), CATALOG["gpt-image-2.5-flare"])
    assert "not an image the bot can read" in refused.value.user_message


# A JPEG's first scan ends where its end marker is (make_image's JPEGs have one scan).
def _with_markers(still: bytes, markers: bytes, *, before_scan: bool) -> bytes:
    if before_scan:  # between the start marker and the rest: Pillow reads these
        return still[:2] + markers + still[2:]
    return still[:-2] + markers + still[-2:]  # after the scan, before its end


@pytest.mark.parametrize(
    ("markers", "before_scan"),
    [
        (b"\xff\x01" * 200_000, False),  # two-byte markers after the scan (a motion photo's walk)
        (b"\xff\xfe\x00\x02" * 100_000, True),  # empty comments in the header (Pillow's read)
        (b"\xff" * 400_000, True),  # fill bytes in the header
    ],
    ids=["markers-after-the-scan", "comments-in-the-header", "fill-in-the-header"],
)
async def test_a_jpeg_of_countless_markers_is_refused_before_it_is_walked(
    client: ImageClient, images_api: FakeImagesAPI, markers: bytes, before_scan: bool
) -> None:
    """A few megabytes of tiny segments made the walk keep millions of pieces (25 MB: 1.8 GB and
    4 s of the interpreter held) and Pillow read them one by one; no camera writes that many."""
    hostile = _with_markers(make_image(16, 16, "jpeg"), markers, before_scan=before_scan)
    with pytest.raises(UnsupportedOption) as refused:
        await client.prepare_edit(edit(hostile + b"video"))
    assert refused.value.user_message == (
        "The image is not an image the bot can read; use PNG, JPEG or WebP."
    )
    assert not images_api.requests


def test_a_scans_end_is_found_across_the_search_windows() -> None:
    """The end of a scan is searched a window at a time: an end marker astride two windows (its
    0xFF the last byte of one) is still found, and a stuffed 0xFF 0x00 there is still skipped."""
    still = make_image(16, 16, "jpeg")
    scan = still.index(b"\xff\xda")
    scan += 2 + int.from_bytes(still[scan + 2 : scan + 4], "big")  # where its data begins
    boundary = scan + edits_module._SEARCH_WINDOW
    for filler in (b"\x00", b"\xff\x00"):
        for shift in range(-3, 3):
            count = (boundary - 1 + shift - (len(still) - 2)) // len(filler)
            stuffed = still[:-2] + filler * count + b"\xff\xd9"
            assert first_picture(stuffed + b"trailing video") == stuffed


async def test_a_decompression_bomb_is_refused_unread(client: ImageClient) -> None:
    # A small PNG whose header declares 60000x60000 pixels: refused without decoding.
    small = png(8, 8)
    header = b"IHDR" + (60000).to_bytes(4, "big") * 2 + small[24:29]
    bomb = small[:12] + header + zlib.crc32(header).to_bytes(4, "big") + small[33:]
    with pytest.raises(UnsupportedOption) as refused:
        await client.prepare_edit(edit(bomb))
    assert "not an image the bot can read" in refused.value.user_message


# -- the fake is as strict as the contract --------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"prompt": "x", "model": "gpt-image-1.5", "moderation": "low"}, "moderation"),
        ({"prompt": "x", "model": "gpt-image-1.5", "n": "eleven"}, "n"),
        ({"prompt": "x", "model": "gpt-image-1.5", "n": "11"}, "n"),
        ({"prompt": "x", "model": "gpt-image-1.5", "background": "green"}, "background"),
        ({"model": "gpt-image-1.5"}, None),
    ],
)
async def test_the_fake_refuses_forms_the_contract_refuses(
    images_api: FakeImagesAPI, fields: dict[str, str], param: str | None
) -> None:
    form = aiohttp.FormData()
    for key, value in fields.items():
        form.add_field(key, value)
    form.add_field("image", png(), filename="a.png", content_type="image/png")
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            images_api.base_url + "/images/edits",
            data=form,
            headers={"Authorization": f"Bearer {images_api.api_key}"},
        ) as response,
    ):
        assert response.status == 400
        error = (await response.json())["error"]
    assert error["param"] == param
