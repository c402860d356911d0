"""The engine against the loopback fake of the Images API: real HTTP, real error shapes."""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import time
from pathlib import Path

import aiohttp
import pytest

from bot.images import (
    AuthenticationFailed,
    ClientSettings,
    GenerationTimeout,
    ImageClient,
    ImageRequest,
    InvalidRequest,
    MalformedResponse,
    ModerationBlocked,
    PreparedRequest,
    QuotaExhausted,
    RateLimited,
    ResponseTooLarge,
    UnsupportedOption,
    UpstreamUnavailable,
    load_catalog,
)
from tests.conftest import API_KEY
from tests.fakes.images_api import (
    FakeImagesAPI,
    api_error,
    cut_off,
    hang,
    images_body,
    make_image,
    reset_before_answer,
    respond,
)

pytestmark = pytest.mark.asyncio


def request(model: str = "gpt-image-1", **fields: object) -> ImageRequest:
    return ImageRequest(prompt="a cute baby sea otter", model=model, user="u-1", **fields)  # type: ignore[arg-type]


# -- happy paths per model family ------------------------------------------------------------


async def test_gpt_image_returns_decoded_images_and_sends_a_clean_body(
    client: ImageClient, images_api: FakeImagesAPI
) -> None:
    result = await client.generate(request(size="1536x1024", quality="low", count=2))

    assert [image.data for image in result.images] == images_api.served
    assert [(i.format, i.width, i.height) for i in result.images] == [("png", 1536, 1024)] * 2
    assert result.usage is not None and result.usage["total_tokens"] > 0
    assert result.request_id and result.request_id.startswith("req_")
    sent = images_api.generation_requests[0]
    assert sent.body == {
        "model": "gpt-image-1",
        "prompt": "a cute baby sea otter",
        "n": 2,
        "size": "1536x1024",
        "quality": "low",
        "user": "u-1",
    }
    assert sent.headers["Accept"] == "application/json"
    assert sent.headers["Content-Type"] == "application/json"


async def test_gpt_image_2_takes_a_free_size_and_output_format(
    client: ImageClient, images_api: FakeImagesAPI
) -> None:
    result = await client.generate(
        request("gpt-image-2", size="1536x864", output_format="webp", output_compression=80)
    )
    (image,) = result.images
    assert (image.format, image.width, image.height) == ("webp", 1536, 864)
    assert images_api.generation_requests[0].body["output_compression"] == 80


async def test_dall_e_3_asks_for_base64_and_keeps_the_revised_prompt(
    client: ImageClient, images_api: FakeImagesAPI
) -> None:
    result = await client.generate(request("dall-e-3", quality="hd", style="natural"))
    assert images_api.generation_requests[0].body["response_format"] == "b64_json"
    assert result.revised_prompt == "A detailed rendering of a cute baby sea otter"
    assert result.images[0].data == images_api.served[0]


async def test_url_responses_are_downloaded_without_the_key(
    client: ImageClient, images_api: FakeImagesAPI
) -> None:
    first, second = make_image(256, 256, shade=1), make_image(256, 256, shade=2)
    urls = [images_api.file_url(first), images_api.file_url(second)]
    body = json.dumps({"created": 1, "data": [{"url": u} for u in urls]})
    images_api.push(respond(200, body))

    result = await client.generate(request("dall-e-2", size="256x256", count=2))

    assert [image.data for image in result.images] == [first, second]


async def test_url_that_is_not_http_is_refused(
    client: ImageClient, images_api: FakeImagesAPI
) -> None:
    images_api.push(
        respond(200, json.dumps({"created": 1, "data": [{"url": "file:///etc/passwd"}]}))
    )
    with pytest.raises(MalformedResponse, match="not http"):
        await client.generate(request())


# -- validation before any paid call ---------------------------------------------------------


@pytest.mark.parametrize(
    ("req", "field", "says"),
    [
        (request("dall-e-3", count=2), "count", "one image"),
        (request("dall-e-2", size="1024x1536"), "size", "256x256, 512x512, 1024x1024"),
        (request("gpt-image-2", size="1000x1000"), "size", "multiples of 16"),
        (request("gpt-image-2", size="3840x1024"), "size", "aspect ratio"),
        (request("gpt-image-2", size="0x1024"), "size", "at least 16 pixels"),
        (request("gpt-image-1", quality="hd"), "quality", "auto, low, medium, high"),
        (request("gpt-image-1", style="vivid"), "style", "does not take `style`"),
        (request("gpt-image-1", output_compression=50), "output_compression", "jpeg and webp"),
        (
            request("gpt-image-1", background="transparent", output_format="jpeg"),
            "background",
            "png or webp",
        ),
        (request("no-such-model"), "model", "known: gpt-image-2"),
        (ImageRequest(prompt="x" * 1001, model="dall-e-2"), "prompt", "at most 1,000"),
        (ImageRequest(prompt="   ", model="dall-e-2"), "prompt", "empty"),
    ],
)
async def test_unsupported_combinations_are_refused_before_any_call(
    client: ImageClient, images_api: FakeImagesAPI, req: ImageRequest, field: str, says: str
) -> None:
    with pytest.raises(UnsupportedOption, match=says) as caught:
        await client.generate(req)
    assert caught.value.field == field
    assert says in caught.value.user_message
    assert images_api.generation_requests == []


async def test_operator_model_from_a_file_is_sent_under_its_name(
    images_api: FakeImagesAPI, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    path = tmp_path / "models.toml"
    path.write_text('[models."gpt-image-1-mini"]\nmax_count = 1\n', encoding="utf-8")
    client = ImageClient(
        http, base_url=images_api.base_url + "/", api_key=API_KEY, catalog=load_catalog(path)
    )
    with pytest.raises(UnsupportedOption, match="one image"):
        await client.generate(request("gpt-image-1-mini", count=2))
    result = await client.generate(request("gpt-image-1-mini"))
    assert len(result.images) == 1


# -- errors from the API ---------------------------------------------------------------------


async def test_wrong_key_is_authentication_failed_and_the_echoed_key_is_redacted(
    images_api: FakeImagesAPI, client: ImageClient
) -> None:
    images_api.api_key = "another-key"
    with pytest.raises(AuthenticationFailed) as caught:
        await client.generate(request())
    assert "sk-abc" not in str(caught.value)
    assert API_KEY not in str(caught.value) and API_KEY not in repr(caught.value)
    assert len(images_api.generation_requests) == 1  # never retried


@pytest.mark.parametrize(
    ("handler", "kind"),
    [
        (api_error(400, "image_generation_user_error", "moderation_blocked"), ModerationBlocked),
        (api_error(400, "invalid_request_error", "content_policy_violation"), ModerationBlocked),
        (api_error(429, "insufficient_quota", "insufficient_quota"), QuotaExhausted),
        (api_error(400, "invalid_request_error", "invalid_size", "Bad size."), InvalidRequest),
        (api_error(404, "invalid_request_error", None, "Not found"), InvalidRequest),
    ],
)
async def test_errors_that_are_never_retried(
    client: ImageClient, images_api: FakeImagesAPI, handler: object, kind: type[Exception]
) -> None:
    images_api.push(handler)  # type: ignore[arg-type]
    with pytest.raises(kind):
        await client.generate(request())
    assert len(images_api.generation_requests) == 1


async def test_the_fakes_real_refusals_become_invalid_request(
    client: ImageClient, images_api: FakeImagesAPI
) -> None:
    # Bypass our own validation to prove the fake is strict and the refusal is typed.
    def unchecked(model: str, **fields: object) -> PreparedRequest:
        prepared = client.prepare(request(model))
        return dataclasses.replace(prepared, body={"model": model, "prompt": "x", **fields})

    with pytest.raises(InvalidRequest, match="invalid_size"):
        await client.generate(unchecked("dall-e-2", size="9x9"))
    with pytest.raises(InvalidRequest, match="response_format"):
        await client.generate(unchecked("gpt-image-1", response_format="url"))


async def test_moderation_block_from_the_prompt(client: ImageClient) -> None:
    with pytest.raises(ModerationBlocked) as caught:
        await client.generate(ImageRequest(prompt="moderation_blocked please", model="gpt-image-1"))
    assert "safety system" in caught.value.user_message


# -- retries ---------------------------------------------------------------------------------


async def test_rate_limit_is_retried_after_the_servers_delay(
    client: ImageClient, images_api: FakeImagesAPI
) -> None:
    images_api.push(
        api_error(429, "requests", "rate_limit_exceeded", headers={"Retry-After": "0.3"})
    )
    started = time.monotonic()
    result = await client.generate(request())
    assert time.monotonic() - started >= 0.3
    assert result.attempts == 2 and len(images_api.generation_requests) == 2


async def test_retry_after_ms_is_preferred(client: ImageClient, images_api: FakeImagesAPI) -> None:
    images_api.push(
        api_error(
            429,
            "requests",
            "rate_limit_exceeded",
            headers={"retry-after-ms": "10", "Retry-After": "30"},
        )
    )
    started = time.monotonic()
    await client.generate(request())
    assert time.monotonic() - started < 5


async def test_a_retry_after_longer_than_we_wait_is_reported(
    client: ImageClient, images_api: FakeImagesAPI
) -> None:
    images_api.push(
        api_error(429, "requests", "rate_limit_exceeded", headers={"Retry-After": "600"})
    )
    with pytest.raises(RateLimited) as caught:
        await client.generate(request())
    assert caught.value.retry_after == 600
    assert len(images_api.generation_requests) == 1


async def test_server_errors_are_retried_a_bounded_number_of_times(
    client: ImageClient, images_api: FakeImagesAPI
) -> None:
    images_api.push(
        *[respond(502, "<html><body>Bad Gateway</body></html>", content_type="text/html")] * 5
    )
    with pytest.raises(UpstreamUnavailable, match="HTML page"):
        await client.generate(request())
    assert len(images_api.generation_requests) == 1 + client.settings.retry.max_retries


async def test_x_should_retry_false_is_obeyed(
    client: ImageClient, images_api: FakeImagesAPI
) -> None:
    images_api.push(api_error(500, "server_error", None, headers={"x-should-retry": "false"}))
    with pytest.raises(UpstreamUnavailable):
        await client.generate(request())
    assert len(images_api.generation_requests) == 1


async def test_connection_reset_is_retried_then_succeeds(
    client: ImageClient, images_api: FakeImagesAPI
) -> None:
    images_api.push(reset_before_answer())
    result = await client.generate(request())
    assert len(result.images) == 1 and result.attempts == 2


async def test_unreachable_endpoint_is_upstream_unavailable(
    http: aiohttp.ClientSession, client_settings: ClientSettings
) -> None:
    client = ImageClient(
        http, base_url="http://127.0.0.1:9/v1", api_key=API_KEY, catalog=load_catalog(),
        settings=client_settings,
    )  # fmt: skip
    with pytest.raises(UpstreamUnavailable) as caught:
        await client.generate(request())
    assert API_KEY not in str(caught.value)


async def test_a_hanging_upstream_times_out(
    images_api: FakeImagesAPI, http: aiohttp.ClientSession
) -> None:
    client = ImageClient(
        http, base_url=images_api.base_url, api_key=API_KEY, catalog=load_catalog(),
        settings=ClientSettings(timeout=0.3),
    )  # fmt: skip
    images_api.push(hang())
    started = time.monotonic()
    with pytest.raises(GenerationTimeout):
        await client.generate(request())
    assert time.monotonic() - started < 2


# -- malformed and oversized bodies -------------------------------------------------------------


@pytest.mark.parametrize(
    ("handler", "says"),
    [
        (respond(200, "<html>oops</html>", content_type="text/html"), "HTML page"),
        (respond(200, "not json at all"), "not JSON"),
        (respond(200, json.dumps({"created": 1, "data": []})), "no images"),
        (respond(200, json.dumps({"created": 1, "data": [{"b64_json": "!!!"}]})), "base64"),
        (
            respond(
                200,
                json.dumps(
                    {"created": 1, "data": [{"b64_json": base64.b64encode(b"hello").decode()}]}
                ),
            ),
            "not a readable image",
        ),
        (
            respond(
                200, json.dumps({"id": "chatcmpl-1", "object": "chat.completion", "choices": []})
            ),
            "chat completion",
        ),
        (cut_off(), "cut off"),
    ],
)
async def test_malformed_bodies_become_typed_errors(
    client: ImageClient, images_api: FakeImagesAPI, handler: object, says: str
) -> None:
    images_api.push(handler)  # type: ignore[arg-type]
    with pytest.raises(MalformedResponse, match=says):
        await client.generate(request())
    assert len(images_api.generation_requests) == 1


async def test_responses_over_the_cap_are_refused(
    images_api: FakeImagesAPI, http: aiohttp.ClientSession
) -> None:
    big = make_image(64, 64) + b"\0" * 300_000
    images_api.push(respond(200, images_body(big)))
    client = ImageClient(
        http, base_url=images_api.base_url, api_key=API_KEY, catalog=load_catalog(),
        settings=ClientSettings(max_response_bytes=200_000),
    )  # fmt: skip
    with pytest.raises(ResponseTooLarge):
        await client.generate(request())

    images_api.push(respond(200, images_body(big)))
    client = ImageClient(
        http, base_url=images_api.base_url, api_key=API_KEY, catalog=load_catalog(),
        settings=ClientSettings(max_image_bytes=200_000),
    )  # fmt: skip
    with pytest.raises(ResponseTooLarge, match="exceeds"):
        await client.generate(request())


async def test_url_download_over_the_cap_is_refused(
    images_api: FakeImagesAPI, http: aiohttp.ClientSession
) -> None:
    url = images_api.file_url(make_image(64, 64) + b"\0" * 300_000)
    images_api.push(respond(200, json.dumps({"created": 1, "data": [{"url": url}]})))
    client = ImageClient(
        http, base_url=images_api.base_url, api_key=API_KEY, catalog=load_catalog(),
        settings=ClientSettings(max_image_bytes=200_000, allow_private_urls=True),
    )  # fmt: skip
    with pytest.raises(ResponseTooLarge):
        await client.generate(request("dall-e-2"))


# -- logging and the key ---------------------------------------------------------------------


async def test_request_id_is_logged_and_the_key_never_is(
    client: ImageClient, images_api: FakeImagesAPI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    images_api.push(api_error(500, "server_error", None, headers={"x-request-id": "req_abc"}))
    result = await client.generate(request())
    assert any("req_abc" in record.getMessage() for record in caplog.records)
    assert any(result.request_id and result.request_id in r.getMessage() for r in caplog.records)
    assert all(API_KEY not in record.getMessage() for record in caplog.records)
    assert API_KEY not in repr(client)


# -- check ---------------------------------------------------------------------------------------


async def test_check_accepts_a_good_key_and_lists_models(client: ImageClient) -> None:
    result = await client.check()
    assert result.models is not None and "gpt-image-1" in result.models


async def test_check_reports_a_rejected_key(client: ImageClient, images_api: FakeImagesAPI) -> None:
    images_api.api_key = "other"
    with pytest.raises(AuthenticationFailed):
        await client.check()
    assert images_api.generation_requests == []


async def test_check_without_a_models_route_probes_without_generating(
    http: aiohttp.ClientSession, client_settings: ClientSettings
) -> None:
    fake = FakeImagesAPI(api_key=API_KEY, models_route=False)
    await fake.start()
    try:
        client = ImageClient(
            http, base_url=fake.base_url, api_key=API_KEY, catalog=load_catalog(),
            settings=client_settings,
        )  # fmt: skip
        result = await client.check()
        assert "accepts the key" in result.detail
        assert result.models is None
        assert fake.served == []  # the probe has no prompt: nothing was generated
        fake.api_key = "another"
        with pytest.raises(AuthenticationFailed):
            await client.check()
    finally:
        await fake.close()
