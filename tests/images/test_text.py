"""The text model's engine (bot/images/text.py): the bodies it sends fit the `openai` SDK's
request type (``CompletionCreateParamsNonStreaming``, strictly, nothing more), the fake's answers
fit its ``ChatCompletion``, the reservation is a bound, and hostile answers become sentences."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
from openai.types.chat import ChatCompletion
from PIL import Image

from bot.images import CatalogError, ImageClient, ImageError, MalformedResponse, UnsupportedOption
from bot.images.text import (
    IMAGE_EDGE,
    image_data_url,
    load_text_models,
    prepare_describe,
    prepare_enhance,
    suggestions_of,
    text_estimate,
    text_settle,
    text_usage,
)
from tests.conftest import API_KEY
from tests.fakes.images_api import (
    TEXT_MODELS,
    FakeImagesAPI,
    chat_answer,
    chat_completion,
    chat_problem,
    chat_usage,
    respond,
)

MODELS = load_text_models()
SPEC = MODELS["gpt-5.4-mini"]


@pytest.fixture
async def images_api() -> AsyncIterator[FakeImagesAPI]:
    fake = FakeImagesAPI(api_key=API_KEY, text_models=TEXT_MODELS)
    await fake.start()
    yield fake
    await fake.close()


def photo(width: int, height: int, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (10, 120, 200)).save(buffer, format=fmt)
    return buffer.getvalue()


async def test_a_description_body_fits_the_sdk_and_names_the_member_by_pseudonym() -> None:
    prepared = prepare_describe(SPEC, "u-pseudonym").with_image(await image_data_url(photo(64, 48)))
    body = prepared.body

    assert chat_problem(body) is None
    assert (body["user"], body["safety_identifier"]) == ("u-pseudonym", "u-pseudonym")
    assert body["max_completion_tokens"] == prepared.max_output_tokens
    assert body["reasoning_effort"] == "none"
    assert "pseudonym" not in repr(prepared) and "base64" not in repr(prepared)
    # The SDK's check is a real one: a field it does not know, or a wrong value, is refused.
    assert chat_problem({**body, "prompt": "x"}) is not None
    assert chat_problem({**body, "reasoning_effort": "some"}) is not None


def test_a_model_without_safety_identifier_gets_user_only() -> None:
    spec = SPEC.model_copy(update={"safety_identifier": False, "reasoning_effort": None})
    body = prepare_enhance(spec, "a fox", "u-pseudonym").body
    assert chat_problem(body) is None
    assert body["user"] == "u-pseudonym" and "safety_identifier" not in body
    assert "reasoning_effort" not in body


async def test_an_image_is_sent_scaled_down_and_a_non_image_is_refused_in_a_sentence() -> None:
    url = await image_data_url(photo(3000, 2000, "JPEG"))
    head, _, data = url.partition(";base64,")
    with Image.open(io.BytesIO(base64.b64decode(data))) as sent:
        assert max(sent.size) == IMAGE_EDGE
    assert head == "data:image/jpeg"

    with pytest.raises(UnsupportedOption) as refused:
        await image_data_url(b"%PDF-1.7 not an image")
    assert refused.value.user_message.startswith("The image is not an image the bot can read")


async def test_the_fakes_answers_fit_the_sdks_chat_completion(client: ImageClient) -> None:
    prepared = prepare_describe(SPEC, "u").with_image(await image_data_url(photo(64, 64)))
    ChatCompletion.model_validate_json(
        chat_completion(prepared.body, chat_answer(prepared.body), chat_usage(prepared.body, "x"))
    )

    result = await client.complete(prepared)

    assert suggestions_of(result.text) == tuple(
        f"A small red square on a white field, flat colour, study {n}" for n in range(1, 5)
    )
    assert result.usage is not None
    assert result.usage["input_tokens_details"]["image_tokens"] == 85


@pytest.mark.parametrize(
    "prompt", ["a fox", "長い" * 2000, "🦊" * 4000], ids=["short", "chinese", "emoji"]
)
def test_the_reservation_bounds_what_the_answer_can_cost(prompt: str) -> None:
    prepared = prepare_enhance(SPEC, prompt, "u")
    estimate = text_estimate(prepared)
    assert estimate is not None
    # The most the answer can report believably: every input byte a token, every output token.
    text = prepared.text
    usage = {"input_tokens": len(text.encode()) + 30, "output_tokens": prepared.max_output_tokens}
    settled = text_settle(prepared, usage)
    assert settled is not None and settled < estimate  # believed, and within the reservation


def test_usage_below_the_least_or_above_ten_times_the_estimate_is_settled_at_the_estimate() -> None:
    prepared = prepare_enhance(SPEC, "a lighthouse at night", "u")
    estimate = text_estimate(prepared)
    assert estimate is not None and estimate > 0
    for usage in (None, {}, {"input_tokens": 0, "output_tokens": 0}, {"input_tokens": -1}):
        assert text_settle(prepared, usage) == estimate
    huge = {"input_tokens": 2**30, "output_tokens": 2**30}
    assert text_settle(prepared, huge) == estimate
    honest = text_settle(prepared, {"input_tokens": 200, "output_tokens": 100})
    assert honest is not None and Decimal(0) < honest < estimate


def test_chat_usage_is_read_into_the_shape_of_the_image_answers() -> None:
    raw = {
        "prompt_tokens": 300,
        "completion_tokens": 40,
        "prompt_tokens_details": {"image_tokens": 85},
    }
    assert text_usage(raw) == {
        "input_tokens": 300,
        "output_tokens": 40,
        "input_tokens_details": {"text_tokens": 215, "image_tokens": 85},
    }
    assert text_usage("nonsense") is None
    assert text_usage({"prompt_tokens": "3"}) == {"input_tokens": None, "output_tokens": None}


@pytest.mark.parametrize(
    ("answer", "sentence"),
    [
        (respond(200, "<html>"), "The text model sent back something the bot cannot read."),
        (respond(200, json.dumps({"choices": []})), "The text model sent back something"),
        (respond(200, b"{" + b" " * (2 * 1024 * 1024)), "The text model sent back something"),
        (
            respond(
                200, json.dumps({"choices": [{"message": {"content": None, "refusal": "no"}}]})
            ),
            "The text model declined",
        ),
    ],
    ids=["html", "no-choices", "huge", "refusal"],
)
async def test_a_hostile_answer_is_a_sentence(
    client: ImageClient, images_api: FakeImagesAPI, answer: Any, sentence: str
) -> None:
    images_api.chat_script.append(answer)
    with pytest.raises(ImageError) as failed:
        await client.complete(prepare_enhance(SPEC, "a fox", "u"))
    assert failed.value.user_message.startswith(sentence)


async def test_a_gateway_without_the_model_says_so(
    client: ImageClient, images_api: FakeImagesAPI
) -> None:
    images_api.text_models = frozenset()
    with pytest.raises(ImageError) as failed:
        await client.complete(prepare_enhance(SPEC, "a fox", "u"))
    assert "gpt-5.4-mini is not available" in failed.value.user_message


def test_an_answer_without_prompts_is_malformed() -> None:
    with pytest.raises(MalformedResponse):
        suggestions_of("\n -\n1.\n")
    assert suggestions_of('1. "A fox"\n- A wolf\n\nPrompt 3: An owl') == (
        "A fox",
        "A wolf",
        "An owl",
    )


def test_an_operator_adds_a_gateways_text_model_in_the_models_file(tmp_path: Any) -> None:
    path = tmp_path / "models.toml"
    text = (
        '[models."gpt-image-1.5"]\nmax_count = 2\n'
        '[text_models."vision-local"]\nsafety_identifier = false\n'
        "price = { as_of = 2026-12-01, input_per_million = 0.1, output_per_million = 0.4 }\n"
    )
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())  # an editor's byte-order mark is fine
    models = load_text_models(path)
    assert models["vision-local"].price is not None
    assert "gpt-5.4-mini" in models  # the shipped ones stay

    path.write_text('[text_models."x"]\nprice = { as_of = 2026-12-01, input_per_million = -1 }\n')
    with pytest.raises(CatalogError, match=r"text_models\.x: price"):
        load_text_models(path)
