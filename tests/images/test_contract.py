"""Contract: what the engine sends, and what the fake answers, fit the published contracts.

Two references. The ``openai`` SDK (3.54, November 2026) is the newest published contract: every
body is validated against its request types (``ImageGenerateParams``, through pydantic), and the
fake's answers against its ``ImagesResponse``. The official OpenAPI spec (August 2026) predates
the newest fields (``complexity``, GIF and SVG output, ``xhigh``/``max``, ``safety_identifier``):
bodies without them are validated against it too. The spec (OpenAPI 3.1) marks optional fields
``nullable: true``, a 3.0 keyword that 2020-12 validation ignores: a ``null`` therefore fails,
which is the strictness we want.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, get_args

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from openai.types import ImageGenStreamEvent, ImagesResponse
from openai.types.image_generate_params import (
    ImageGenerateParamsNonStreaming,
    ImageGenerateParamsStreaming,
)
from openai.types.image_model import ImageModel
from pydantic import TypeAdapter
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from bot.images import ImageClient, ImageRequest, UnsupportedOption, build_body, load_catalog
from bot.images.catalog import OPTION_VALUES
from tests.fakes.images_api import FakeImagesAPI, error_body

SPEC = json.loads(
    (Path(__file__).parent.parent / "data" / "openai-images.openapi.json").read_text()
)
SCHEMAS = SPEC["components"]["schemas"]
_REGISTRY = Registry().with_resource("spec", DRAFT202012.create_resource(SPEC))
CATALOG = load_catalog()


def validator(schema_name: str) -> Draft202012Validator:
    return Draft202012Validator(
        {"$ref": f"spec#/components/schemas/{schema_name}"}, registry=_REGISTRY
    )


SDK_REQUEST = TypeAdapter(ImageGenerateParamsNonStreaming)
SDK_STREAMING_REQUEST = TypeAdapter(ImageGenerateParamsStreaming)
SDK_STREAM_EVENT: TypeAdapter[Any] = TypeAdapter(ImageGenStreamEvent)
SDK_FIELDS = (
    ImageGenerateParamsNonStreaming.__required_keys__
    | ImageGenerateParamsNonStreaming.__optional_keys__
)
# What the SDK added after the spec: a body using any of it is checked against the SDK only.
NEWER_THAN_SPEC = {"complexity", "frame_count", "frame_duration_ms", "svg", "safety_identifier"}
NEWER_VALUES = {("quality", "xhigh"), ("quality", "max"), ("output_format", "gif")} | {
    ("output_format", "svg")
}


def spec_knows(body: dict[str, Any]) -> bool:
    return not (set(body) & NEWER_THAN_SPEC) and not (set(body.items()) & NEWER_VALUES)


def assert_valid_request(body: dict[str, Any]) -> None:
    adapter = SDK_STREAMING_REQUEST if body.get("stream") else SDK_REQUEST
    adapter.validate_python(body, strict=True)
    # TypedDicts and the schema leave unknown keys open; the real API does not.
    assert set(body) <= SDK_FIELDS
    assert None not in body.values()
    if spec_knows(body):
        validator("CreateImageRequest").validate(body)
        assert set(body) <= set(SCHEMAS["CreateImageRequest"]["properties"])


def test_the_sdk_refuses_what_the_api_refuses() -> None:
    """The SDK adapter is a real check: it refuses a quality and a format no model takes."""
    for bad in ({"prompt": "x", "quality": "ultra"}, {"prompt": "x", "output_format": "bmp"}):
        assert not _accepts(bad)
    assert _accepts({"prompt": "x", "quality": "xhigh", "output_format": "gif", "frame_count": 4})


def _accepts(body: dict[str, Any]) -> bool:
    try:
        SDK_REQUEST.validate_python(body, strict=True)
    except ValueError:
        return False
    return True


def test_the_catalog_knows_every_model_the_sdk_lists() -> None:
    assert set(get_args(ImageModel)) <= set(CATALOG)
    default = CATALOG["gpt-image-2.5-flare"]
    assert default.is_live
    for retired in ("gpt-image-1", "dall-e-2", "dall-e-3"):
        assert not CATALOG[retired].is_live and CATALOG[retired].shut_down_on is not None


def test_a_null_field_fails_the_schema_as_the_reference_says() -> None:
    assert not validator("CreateImageRequest").is_valid({"prompt": "x", "size": None})


@st.composite
def valid_requests(draw: st.DrawFn) -> ImageRequest:
    name = draw(st.sampled_from(list(CATALOG)))
    spec = CATALOG[name]
    options: dict[str, Any] = {}
    if "output_format" in spec.options and draw(st.booleans()):
        options["output_format"] = draw(st.sampled_from(spec.output_formats))
    if options.get("output_format") == "gif" and draw(st.booleans()):
        options["frame_count"] = draw(st.integers(2, 16))
        options["frame_duration_ms"] = draw(st.none() | st.integers(10, 655_350))
    if "complexity" in spec.options and draw(st.booleans()):
        options["complexity"] = draw(st.sampled_from(OPTION_VALUES["complexity"] or ()))
    if options.get("output_format") in ("jpeg", "webp") and draw(st.booleans()):
        options["output_compression"] = draw(st.integers(0, 100))
    if "background" in spec.options and draw(st.booleans()):
        allowed = ["opaque", "auto"]
        if options.get("output_format", "png") in ("png", "webp"):
            allowed.append("transparent")
        options["background"] = draw(st.sampled_from(allowed))
    if "moderation" in spec.options and draw(st.booleans()):
        options["moderation"] = draw(st.sampled_from(["low", "auto"]))
    if "style" in spec.options and draw(st.booleans()):
        options["style"] = draw(st.sampled_from(["vivid", "natural"]))
    return ImageRequest(
        partial_images=draw(st.integers(0, 3)),
        prompt=draw(st.text(min_size=1, max_size=200).filter(str.strip)),
        model=name,
        size=draw(st.none() | st.sampled_from(spec.sizes)),
        quality=draw(st.none() | st.sampled_from(spec.qualities)),
        count=1 if options.get("output_format") == "svg" else draw(st.integers(1, spec.max_count)),
        user=draw(st.none() | st.text(min_size=1, max_size=64)),
        **options,
    )


@given(valid_requests())
@settings(max_examples=300)
def test_every_body_the_engine_builds_fits_the_spec(req: ImageRequest) -> None:
    assert_valid_request(build_body(req, CATALOG[req.model]))


@given(
    model=st.sampled_from(list(CATALOG)),
    size=st.from_regex(r"\A[0-9]{1,5}x[0-9]{1,5}\Z"),
    quality=st.sampled_from(
        ["low", "medium", "high", "xhigh", "max", "auto", "standard", "hd", "ultra"]
    ),
    count=st.integers(-2, 12),
)
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_any_request_is_either_refused_or_fits_the_spec(
    model: str, size: str, quality: str, count: int
) -> None:
    req = ImageRequest(prompt="otter", model=model, size=size, quality=quality, count=count)
    try:
        body = build_body(req, CATALOG[model])
    except UnsupportedOption as exc:
        assert exc.user_message.endswith(".")
        return
    assert_valid_request(body)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "req",
    [
        ImageRequest(prompt="otter", model="gpt-image-1", count=2, quality="high"),
        ImageRequest(prompt="otter", model="gpt-image-2", size="2048x1152"),
        ImageRequest(prompt="otter", model="dall-e-3", style="vivid"),
        ImageRequest(prompt="otter", model="dall-e-2", size="512x512"),
        ImageRequest(prompt="otter", model="gpt-image-2.5-flare", quality="xhigh"),
        ImageRequest(prompt="otter", model="gpt-image-2.5-sunburst", output_format="gif"),
        ImageRequest(prompt="otter", model="gpt-image-2.6-flare", output_format="svg"),
    ],
)
async def test_the_fakes_answers_fit_the_spec(
    client: ImageClient, images_api: FakeImagesAPI, req: ImageRequest
) -> None:
    import aiohttp

    async with (
        aiohttp.ClientSession() as session,
        session.post(
            images_api.base_url + "/images/generations",
            json=client.prepare(req).body,
            headers={"Authorization": f"Bearer {images_api.api_key}"},
        ) as response,
    ):
        assert response.status == 200
        answer = await response.json()
    ImagesResponse.model_validate(answer, strict=True)
    if spec_knows(client.prepare(req).body):
        validator("ImagesResponse").validate(answer)


def test_the_fakes_error_bodies_fit_the_spec() -> None:
    validator("ErrorResponse").validate(
        json.loads(error_body("bad", "invalid_request_error", None))
    )


@pytest.mark.parametrize(
    "req",
    [
        ImageRequest(prompt="otter", model="gpt-image-1.5", partial_images=1),
        ImageRequest(prompt="otter", model="gpt-image-1-mini", count=2, partial_images=2),
        ImageRequest(
            prompt="otter", model="gpt-image-2.5-flare", quality="xhigh", size="1536x864",
            output_format="webp", background="transparent", partial_images=3,
        ),
        ImageRequest(prompt="otter", model="gpt-image-2", output_format="jpeg", partial_images=2),
    ],
)  # fmt: skip
async def test_the_fakes_streams_fit_the_sdks_event_types(
    client: ImageClient, images_api: FakeImagesAPI, req: ImageRequest
) -> None:
    """Every event the fake streams is one of the SDK's ImageGenStreamEvent types, in the order
    the API sends them: each image's partial images (indices from 0), then its completed event."""
    import aiohttp

    from bot.images.sse import SSEParser

    prepared = client.prepare(req)
    assert prepared.body["stream"] is True
    assert_valid_request(prepared.body)
    parser = SSEParser()
    events = []
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            images_api.base_url + "/images/generations",
            json=prepared.body,
            headers={"Authorization": f"Bearer {images_api.api_key}"},
        ) as response,
    ):
        assert response.status == 200
        assert response.content_type == "text/event-stream"
        async for chunk, _ in response.content.iter_chunks():
            events += parser.feed(chunk)
    events += parser.close()
    kinds = []
    for event in events:
        document = json.loads(event.data)
        parsed = SDK_STREAM_EVENT.validate_python(document, strict=True)
        assert event.event == document["type"] == parsed.type
        kinds.append(
            parsed.partial_image_index if parsed.type.endswith("partial_image") else "completed"
        )
    one_image = [*range(req.partial_images), "completed"]
    assert kinds == one_image * req.count
