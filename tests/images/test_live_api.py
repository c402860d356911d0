"""The engine against a service that behaves as OpenAI's does today (November 2026), and against
gateways that answer in other shapes."""

from __future__ import annotations

import base64
import io
import json
import time

import pytest
from PIL import Image

from bot.images import (
    ImageClient,
    ImageLinkBroken,
    ImageRequest,
    InvalidRequest,
    MalformedResponse,
    ModelUnavailable,
    ModerationBlocked,
    OptionNotAvailable,
    UnsupportedOption,
    load_catalog,
)
from tests.fakes.images_api import (
    OPENAI_RETIRED,
    FakeImagesAPI,
    images_body,
    make_image,
    respond,
)

CATALOG = load_catalog()


def request(model: str = "gpt-image-2.5-flare", **fields: object) -> ImageRequest:
    return ImageRequest(prompt="a lighthouse", model=model, user="discord-abc", **fields)  # type: ignore[arg-type]


# -- today's models and options ----------------------------------------------------------------


async def test_the_default_model_works_where_gpt_image_1_is_shut_down(
    client: ImageClient, images_api: FakeImagesAPI
) -> None:
    images_api.retired = OPENAI_RETIRED
    result = await client.generate(request())
    assert len(result.images) == 1 and result.model == "gpt-image-2.5-flare"


async def test_a_shut_down_model_is_named_in_one_sentence(
    client: ImageClient, images_api: FakeImagesAPI
) -> None:
    images_api.retired = OPENAI_RETIRED
    with pytest.raises(ModelUnavailable) as caught:
        await client.generate(request("gpt-image-1"))
    sentence = caught.value.user_message
    assert sentence == (
        "The model gpt-image-1 is not available on this image service (it was shut down on "
        "OpenAI on 2026-10-23). Please choose another model."
    )
    assert "model_not_found" in str(caught.value)  # the operator's detail
    assert len(images_api.generation_requests) == 1  # never retried


async def test_the_pseudonym_goes_in_user_and_in_safety_identifier_where_taken(
    client: ImageClient, images_api: FakeImagesAPI
) -> None:
    await client.generate(request())
    await client.generate(request("dall-e-2"))
    live, legacy = (r.body for r in images_api.generation_requests)
    assert live["user"] == live["safety_identifier"] == "discord-abc"
    assert legacy["user"] == "discord-abc" and "safety_identifier" not in legacy


async def test_xhigh_quality_and_complexity_on_the_2_5_family(
    client: ImageClient, images_api: FakeImagesAPI
) -> None:
    await client.generate(request(quality="max", complexity="high", size="1536x864"))
    sent = images_api.generation_requests[0].body
    assert (sent["quality"], sent["complexity"], sent["size"]) == ("max", "high", "1536x864")
    with pytest.raises(UnsupportedOption, match="auto, low, medium, high"):
        client.prepare(request("gpt-image-2.6-flare", quality="xhigh"))
    with pytest.raises(UnsupportedOption, match="does not take `complexity`"):
        client.prepare(request("gpt-image-1.5", complexity="low"))


async def test_an_animated_gif_comes_back_with_its_frames(
    client: ImageClient, images_api: FakeImagesAPI
) -> None:
    result = await client.generate(request(output_format="gif", frame_count=5))
    (image,) = result.images
    assert (image.format, image.frames) == ("gif", 5)
    assert images_api.generation_requests[0].body["frame_count"] == 5


async def test_svg_output_is_recognised_with_its_declared_size(client: ImageClient) -> None:
    result = await client.generate(request(output_format="svg", size="1536x1024"))
    (image,) = result.images
    assert (image.format, image.width, image.height) == ("svg", 1536, 1024)
    assert image.data.lstrip().startswith(b"<?xml")


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"output_format": "svg", "count": 2}, "SVG output makes one image per request."),
        ({"frame_count": 4}, "`frame_count` only applies to the gif output format."),
        ({"output_format": "gif", "frame_count": 40}, "An animated GIF has 2 to 16 frames."),
        (
            {"output_format": "gif", "output_compression": 50},
            "`output_compression` only applies to the jpeg and webp output formats.",
        ),
    ],
)
async def test_gif_and_svg_rules_are_checked_before_any_call(
    client: ImageClient, images_api: FakeImagesAPI, fields: dict[str, object], says: str
) -> None:
    with pytest.raises(UnsupportedOption) as caught:
        await client.generate(request(**fields))  # type: ignore[arg-type]
    assert caught.value.user_message == says
    assert images_api.generation_requests == []


async def test_gif_output_without_access_is_one_sentence(
    client: ImageClient, images_api: FakeImagesAPI
) -> None:
    images_api.gif_access = False
    with pytest.raises(OptionNotAvailable) as caught:
        await client.generate(request(output_format="gif"))
    assert caught.value.user_message == (
        "The bot's image-service account has no access to GIF output on gpt-image-2.5-flare. "
        "Please choose another output format."
    )


async def test_a_refusal_never_offers_what_a_member_cannot_choose(client: ImageClient) -> None:
    with pytest.raises(UnsupportedOption) as caught:
        client.prepare(request("gpt-image-1.5", style="vivid"))
    assert "stream" not in caught.value.user_message
    assert caught.value.user_message.endswith(
        "(its options: background, moderation, output_compression, output_format)."
    )


# -- defects found against independent references ----------------------------------------------


@pytest.mark.parametrize(
    ("status", "content_type", "body", "reason"),
    [
        (
            422,
            "application/problem+json",
            {"type": "about:blank", "title": "Unprocessable", "detail": "size must be WxH"},
            "Unprocessable: size must be WxH",
        ),
        (
            422,
            "application/json",
            {"detail": [{"loc": ["body", "n"], "msg": "must be at most 10", "type": "too_big"}]},
            "n: must be at most 10",
        ),
    ],
)
async def test_error_bodies_in_other_shapes_keep_their_reason(
    client: ImageClient,
    images_api: FakeImagesAPI,
    status: int,
    content_type: str,
    body: dict[str, object],
    reason: str,
) -> None:
    images_api.push(respond(status, json.dumps(body), content_type=content_type))
    with pytest.raises(InvalidRequest) as caught:
        await client.generate(request())
    assert reason in str(caught.value)
    assert reason in caught.value.user_message
    assert str(caught.value).count(str(status)) == 1  # not "HTTP 422; status 422"


async def test_an_unreadable_image_is_described_without_a_python_repr(
    client: ImageClient, images_api: FakeImagesAPI
) -> None:
    images_api.push(respond(200, images_body(b"\x89PNG\r\n\x1a\nnot really")))
    with pytest.raises(MalformedResponse) as caught:
        await client.generate(request())
    assert "0x" not in str(caught.value) and "<" not in str(caught.value)


async def test_fewer_images_than_asked_are_counted(
    client: ImageClient, images_api: FakeImagesAPI
) -> None:
    images_api.push(respond(200, images_body(make_image(64, 64))))
    result = await client.generate(request(count=3, size="1024x1024"))
    assert (len(result.images), result.missing) == (1, 2)


async def test_an_error_object_in_a_200_keeps_its_meaning(
    client: ImageClient, images_api: FakeImagesAPI
) -> None:
    body = {
        "created": 1,
        "error": {
            "message": "Your request was rejected by the safety system.",
            "type": "image_generation_user_error",
            "code": "moderation_blocked",
        },
    }
    images_api.push(respond(200, json.dumps(body)))
    with pytest.raises(ModerationBlocked):
        await client.generate(request())
    assert len(images_api.generation_requests) == 1


async def test_an_image_link_that_is_gone_is_not_try_again_later(
    client: ImageClient, images_api: FakeImagesAPI
) -> None:
    gone = images_api.base_url.removesuffix("/v1") + "/files/expired"
    images_api.push(respond(200, json.dumps({"created": 1, "data": [{"url": gone}]})))
    with pytest.raises(ImageLinkBroken) as caught:
        await client.generate(request("dall-e-2"))
    assert "later" not in caught.value.user_message
    assert "HTTP 404" in str(caught.value)


@pytest.mark.parametrize("wrap", ["lines", "data-url"])
async def test_base64_in_lines_or_as_a_data_url_is_decoded(
    client: ImageClient, images_api: FakeImagesAPI, wrap: str
) -> None:
    png = make_image(96, 96)
    encoded = base64.b64encode(png).decode()
    if wrap == "lines":
        encoded = "\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76))
    else:
        encoded = "data:image/png;base64," + encoded
    images_api.push(respond(200, json.dumps({"created": 1, "data": [{"b64_json": encoded}]})))
    result = await client.generate(request(size="1024x1024"))
    assert result.images[0].data == png


async def test_a_nan_retry_after_is_not_a_sleep(
    client: ImageClient, images_api: FakeImagesAPI
) -> None:
    busy = json.dumps({"error": {"message": "busy", "type": "", "code": "rate_limit_exceeded"}})
    images_api.push(respond(429, busy, headers={"retry-after": "nan"}))
    started = time.perf_counter()
    result = await client.generate(request())
    assert len(result.images) == 1
    assert time.perf_counter() - started < 2  # the backoff (10 ms here), not some other timer


# -- the endpoint's model list and the check ---------------------------------------------------


async def test_check_lists_the_endpoints_models(
    client: ImageClient, images_api: FakeImagesAPI
) -> None:
    images_api.retired = OPENAI_RETIRED
    result = await client.check()
    assert result.models is not None
    assert "gpt-image-2.5-flare" in result.models and "gpt-image-1" not in result.models


async def test_check_refuses_a_models_page_that_is_not_a_model_list(
    client: ImageClient, images_api: FakeImagesAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def html_page(request: object) -> object:
        from aiohttp import web

        return web.Response(text="<html>Welcome to nginx</html>", content_type="text/html")

    monkeypatch.setattr(images_api, "_models", html_page)
    await images_api.close()
    await images_api.start()
    client._base_url = images_api.base_url
    with pytest.raises(MalformedResponse, match="HTML page, not a model list"):
        await client.check()


async def test_check_takes_a_422_to_its_probe_as_a_key_accepted(
    client: ImageClient, images_api: FakeImagesAPI
) -> None:
    images_api.models_route = False
    await images_api.close()
    await images_api.start()
    client._base_url = images_api.base_url
    images_api.push(respond(422, json.dumps({"detail": [{"msg": "field required"}]})))
    result = await client.check()
    assert "accepts the key" in result.detail and result.models is None


def test_an_image_is_checked_whole() -> None:
    """A truncated PNG (its last chunks missing) is refused before it is posted."""
    from bot.images.response import ImageLimits, identify_image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(buffer, format="PNG")
    whole = buffer.getvalue()
    limits = ImageLimits(max_bytes=10**6, max_pixels=10**6)
    assert identify_image(whole, limits=limits, revised_prompt=None).width == 64
    for cut in (1, 20, len(whole) // 2):
        with pytest.raises(MalformedResponse, match=r"cut short|not a readable image"):
            identify_image(whole[:-cut], limits=limits, revised_prompt=None)


def test_a_size_in_other_digits_is_refused_before_it_is_sent(client: ImageClient) -> None:
    arabic_indic = "\u0661\u0660\u0662\u0664x\u0661\u0660\u0662\u0664"  # "1024x1024"
    with pytest.raises(UnsupportedOption):
        client.prepare(request(size=arabic_indic))
    assert client.prepare(request(size=" 1024x1024\n")).body["size"] == "1024x1024"
