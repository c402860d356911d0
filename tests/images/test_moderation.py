"""The moderation check in the engine: what it sends and what the fake answers fit the newest
``openai`` SDK's ``ModerationCreateParams`` and ``ModerationCreateResponse``; the probe finds
whether a gateway has the route; anything but a moderation answer fails closed; a policy refuses
the categories it names at its scores."""

from __future__ import annotations

import io
import json
from typing import Any

import aiohttp
import pytest
from openai.types import ModerationCreateParams, ModerationCreateResponse
from openai.types.moderation import Categories
from PIL import Image
from pydantic import TypeAdapter

from bot.images import (
    CATEGORIES,
    ImageClient,
    ModerationUnavailable,
    Policy,
    PolicyRefused,
    load_catalog,
    parse_policy,
)
from bot.images.moderation import CHECKED_SIDE, ModerationResult, checked_image, parse_moderation
from tests.conftest import API_KEY
from tests.fakes.images_api import FakeImagesAPI, incompressible_png, make_image, respond

SDK_PARAMS = TypeAdapter(ModerationCreateParams)
SDK_FIELDS = ModerationCreateParams.__required_keys__ | ModerationCreateParams.__optional_keys__


def assert_valid_params(body: dict[str, Any]) -> None:
    SDK_PARAMS.validate_python(body, strict=True)
    assert set(body) <= SDK_FIELDS  # a TypedDict leaves unknown keys open; the API does not


def test_the_categories_are_the_sdks() -> None:
    aliases = {field.alias or name for name, field in Categories.model_fields.items()}
    assert aliases == set(CATEGORIES)


async def test_what_the_engine_sends_and_the_fake_answers_fit_the_sdk(
    client: ImageClient, images_api: FakeImagesAPI, http: aiohttp.ClientSession
) -> None:
    image = make_image(32, 32)
    images_api.moderation_images[image] = {"violence/graphic": 0.9}
    result = await client.moderate("a gore scene", [("png", image)])
    assert {"violence", "violence/graphic"} <= result.flagged
    (sent,) = images_api.moderation_requests
    assert_valid_params(sent.body)
    assert sent.body["model"] == "omni-moderation-latest"
    assert sent.body["input"][1]["image_url"]["url"].startswith("data:image/png;base64,")
    assert "user" not in sent.body  # nothing of the member goes with a check

    for body in (
        {"input": "a cat"},
        {"input": ["a cat", "a dog"], "model": "omni-moderation-latest"},
    ):
        assert_valid_params(body)
        async with http.post(
            f"{images_api.base_url}/moderations",
            json=body,
            headers={"Authorization": f"Bearer {API_KEY}"},
        ) as response:
            assert response.status == 200
            answer = ModerationCreateResponse.model_validate(await response.json())
        assert len(answer.results) == len(body["input"]) if isinstance(body["input"], list) else 1


@pytest.mark.parametrize(
    "body",
    [{}, {"input": "x", "user": "u"}, {"input": "x", "model": "gpt-image-1"}, {"input": []}],
    ids=["no-input", "unknown-field", "not-a-moderation-model", "empty"],
)
async def test_the_fake_refuses_what_the_api_refuses(
    images_api: FakeImagesAPI, http: aiohttp.ClientSession, body: dict[str, Any]
) -> None:
    async with http.post(
        f"{images_api.base_url}/moderations",
        json=body,
        headers={"Authorization": f"Bearer {API_KEY}"},
    ) as response:
        assert response.status == 400
        assert (await response.json())["error"]["type"] == "invalid_request_error"


async def test_the_probe_finds_whether_the_gateway_has_moderations(
    client: ImageClient, http: aiohttp.ClientSession
) -> None:
    assert await client.has_moderations() is True
    gateway = FakeImagesAPI(api_key=API_KEY, moderations_route=False)
    await gateway.start()
    try:
        other = ImageClient(
            http, base_url=gateway.base_url, api_key=API_KEY, catalog=load_catalog()
        )
        assert await other.has_moderations() is False
        with pytest.raises(ModerationUnavailable, match="status 404"):
            await other.moderate("a cat")
    finally:
        await gateway.close()


@pytest.mark.parametrize(
    "answer",
    [
        b"<html></html>",
        b"null",
        b'{"results": []}',
        b'{"results": [{"categories": {}, "category_scores": {}}]}',
        json.dumps(
            {
                "results": [
                    {
                        "categories": dict.fromkeys(CATEGORIES, "yes"),
                        "category_scores": dict.fromkeys(CATEGORIES, 0.1),
                    }
                ]
            }
        ).encode(),
        json.dumps(
            {
                "results": [
                    {
                        "categories": dict.fromkeys(CATEGORIES, False),
                        "category_scores": dict.fromkeys(CATEGORIES, 7.0),
                    }
                ]
            }
        ).encode(),
    ],
)
def test_an_answer_that_is_not_a_moderation_result_fails_closed(answer: bytes) -> None:
    with pytest.raises(ModerationUnavailable):
        parse_moderation(answer)


async def test_a_failing_endpoint_fails_closed(
    client: ImageClient, images_api: FakeImagesAPI
) -> None:
    images_api.moderation_script.append(respond(502, "bad gateway", content_type="text/plain"))
    with pytest.raises(ModerationUnavailable, match="status 502"):
        await client.moderate("a cat")


def test_large_input_images_are_checked_scaled_down() -> None:
    small = make_image(64, 64)
    assert checked_image("png", small) == ("png", small)
    image_format, data = checked_image("png", incompressible_png(2048, 1536))
    with Image.open(io.BytesIO(data)) as shrunk:
        assert (image_format, shrunk.format, shrunk.size) == ("jpeg", "JPEG", (CHECKED_SIDE, 768))
    transparent = io.BytesIO()
    Image.new("RGBA", (2000, 1000), (0, 0, 0, 0)).save(transparent, "PNG")
    image_format, data = checked_image("png", transparent.getvalue())
    with Image.open(io.BytesIO(data)) as shrunk:
        assert (image_format, shrunk.mode, shrunk.size) == ("png", "RGBA", (CHECKED_SIDE, 512))
    with pytest.raises(ModerationUnavailable):
        checked_image("png", b"\x89PNG" + bytes(2_000_000))


def result(**scores: float) -> ModerationResult:
    named = dict.fromkeys(CATEGORIES, 0.0)
    named |= {name.replace("_", "/"): score for name, score in scores.items()}
    return ModerationResult(frozenset(name for name, score in named.items() if score >= 0.5), named)


def test_an_answer_without_a_category_fails_only_a_policy_that_scores_it() -> None:
    older = {c: 0.9 if c == "violence" else 0.0 for c in CATEGORIES if not c.startswith("illicit")}
    answer = parse_moderation(
        json.dumps(
            {
                "results": [
                    {
                        "categories": {c: s >= 0.5 for c, s in older.items()},
                        "category_scores": older,
                    }
                ]
            }
        ).encode()
    )
    assert parse_policy("on").refused(answer) == ("violence",)  # the service's flags
    with pytest.raises(ModerationUnavailable, match="no score of illicit"):
        parse_policy("strict").refused(answer)
    assert parse_policy("strict illicit=off illicit/violent=off").refused(answer) == ("violence",)


def test_presets_and_overrides() -> None:
    assert parse_policy("off").refused(result(violence=0.9)) == ()
    assert parse_policy("on").refused(result(violence=0.9)) == ("violence",)
    assert parse_policy("on").refused(result(violence=0.45)) == ()
    assert parse_policy("strict").refused(result(violence=0.45)) == ("violence",)
    assert parse_policy("strict violence=off").refused(result(violence=0.9)) == ()
    assert parse_policy("off sexual=0.1").refused(result(sexual=0.2)) == ("sexual",)
    assert str(parse_policy("Strict, violence=0.6 hate=off")) == "strict violence=0.6 hate=off"
    assert Policy().checks is False and parse_policy("off sexual=0.1").checks
    for bad in ("sometimes", "on gore=0.5", "on violence=2", "on violence", ""):
        with pytest.raises(PolicyRefused):
            parse_policy(bad)
