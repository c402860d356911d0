"""Streamed answers through the engine, against the loopback fake: previews, images, and every
way a stream goes wrong (error events, cut short, oversized lines, JSON instead of a stream)."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import io
import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from aiohttp import web
from PIL import Image

from bot.discord_out.progress import make_preview
from bot.images import (
    ClientSettings,
    ImageClient,
    ImageError,
    ImageRequest,
    MalformedResponse,
    ModerationBlocked,
    QuotaExhausted,
    RateLimited,
    ResponseTooLarge,
    UnsupportedOption,
    UpstreamUnavailable,
    load_catalog,
    prepare_request,
)
from bot.images import streaming as streaming_module
from bot.images.pricing import estimate_cost
from bot.images.processing import ProcessingSlots
from bot.images.streaming import PartialImage
from tests.conftest import API_KEY
from tests.fakes.images_api import (
    FakeImagesAPI,
    Handler,
    completed_event,
    error_event,
    images_body,
    incompressible_png,
    make_image,
    partial_event,
    respond,
    sse,
    stream,
)

IMAGE = make_image(64, 64, shade=1)
OTHER = make_image(64, 64, shade=2)
ROUGH = make_image(64, 64, shade=3)


def streaming(count: int = 1, partials: int = 2, **fields: Any) -> ImageRequest:
    return ImageRequest(
        prompt="an otter", model="gpt-image-1.5", count=count, partial_images=partials, **fields
    )


async def generate(client: ImageClient, request: ImageRequest) -> tuple[Any, list[PartialImage]]:
    previews: list[PartialImage] = []
    result = await client.generate(request, on_partial=previews.append)
    return result, previews


# -- what is asked for -------------------------------------------------------------------------


async def test_a_streaming_model_asks_for_a_stream_and_gets_previews_then_the_images(
    client: ImageClient, images_api: FakeImagesAPI
) -> None:
    result, previews = await generate(client, streaming(count=2, size="1024x1024"))

    sent = images_api.generation_requests[0]
    assert (sent.body["stream"], sent.body["partial_images"]) == (True, 2)
    assert "text/event-stream" in sent.headers["Accept"]
    assert [image.data for image in result.images] == images_api.served
    assert [p.decode() for p in previews] == images_api.served_partials
    assert [p.index for p in previews] == [0, 1, 0, 1]
    # Each image's usage: the prompt once, every image's output (with its partials) added.
    assert result.usage == {
        "input_tokens": 50,
        "input_tokens_details": {"text_tokens": 50, "image_tokens": 0},
        "output_tokens": 2 * (272 + 200),
        "total_tokens": 50 + 2 * (272 + 200),
    }


@pytest.mark.parametrize(
    ("request_", "why"),
    [
        (streaming(partials=0), "previews off"),
        (
            ImageRequest(prompt="x", model="gpt-image-2", output_format="gif", partial_images=2),
            "GIF output never streams",
        ),
        (ImageRequest(prompt="x", model="dall-e-3", partial_images=2), "the model does not stream"),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
async def test_no_stream_is_asked_for_where_it_cannot_be(
    client: ImageClient, images_api: FakeImagesAPI, request_: ImageRequest, why: str
) -> None:
    _, previews = await generate(client, request_)
    body = images_api.generation_requests[0].body
    assert "stream" not in body and "partial_images" not in body, why
    assert previews == []


def test_a_partial_count_beyond_the_apis_is_refused_before_anything_is_sent() -> None:
    spec = load_catalog()["gpt-image-1.5"]
    with pytest.raises(UnsupportedOption, match="0 to 3"):
        prepare_request(streaming(partials=4), spec)


def test_previews_are_counted_in_the_estimate_at_100_output_tokens_each() -> None:
    spec = load_catalog()["gpt-image-1-mini"]
    plain = estimate_cost(prepare_request(streaming(partials=0, quality="low"), spec))
    previewed = estimate_cost(prepare_request(streaming(partials=2, quality="low"), spec))
    assert plain is not None and previewed is not None
    # 200 output tokens at $8 per million.
    assert previewed - plain == Decimal("0.0016")


# -- streams that deliver -----------------------------------------------------------------------


def done() -> bytes:
    return b"data: [DONE]\n\n"


BIG = incompressible_png(1100, 1100)  # about 3.6 MB: a 4.9 MB base64 line
Delivering = list[tuple[str, Callable[[], Handler], list[bytes], int, int]]

DELIVERING: Delivering = [
    (
        "JSON instead of a stream",
        lambda: respond(200, images_body(IMAGE)),
        [IMAGE],
        0,
        1,
    ),
    (
        "ends with [DONE]",
        lambda: stream(partial_event(ROUGH, 0), completed_event(IMAGE), done()),
        [IMAGE],
        1,
        1,
    ),
    (
        "CRLF line ends, comments, an unknown event, chunks cut anywhere",
        lambda: stream(
            *_split(
                (
                    b": keep-alive\r\n\r\n"
                    + sse({"type": "image_generation.progress"})
                    + partial_event(ROUGH, 0)
                    + completed_event(IMAGE)
                ).replace(b"\n", b"\r\n"),
                7,
            )
        ),
        [IMAGE],
        1,
        1,
    ),
    (
        "an event line of several megabytes",
        lambda: stream(partial_event(BIG, 0) + completed_event(BIG)),
        [BIG],
        1,
        1,
    ),
    (
        "no event names, the type in the data",
        lambda: stream(
            b"data: " + partial_event(ROUGH, 0).split(b"data: ", 1)[1],
            b"data: " + completed_event(IMAGE).split(b"data: ", 1)[1],
        ),
        [IMAGE],
        1,
        1,
    ),
    (
        "closed right after the last data line, without its blank line",
        lambda: stream(completed_event(IMAGE).rstrip(b"\n") + b"\n"),
        [IMAGE],
        0,
        1,
    ),
    (
        "cut after the first of two images: that one is delivered",
        lambda: stream(partial_event(ROUGH, 0), completed_event(IMAGE), cut=True),
        [IMAGE],
        1,
        2,
    ),
    (
        "more images than asked for: the extra is not read",
        lambda: stream(completed_event(IMAGE), completed_event(OTHER), completed_event(ROUGH)),
        [IMAGE, OTHER],
        0,
        2,
    ),
]


def _split(data: bytes, size: int) -> list[bytes]:
    return [data[start : start + size] for start in range(0, len(data), size)]


@pytest.mark.parametrize(
    ("handler", "images", "previews", "count"),
    [case[1:] for case in DELIVERING],
    ids=[case[0] for case in DELIVERING],
)
async def test_streams_that_deliver(
    client: ImageClient,
    images_api: FakeImagesAPI,
    handler: Callable[[], Handler],
    images: list[bytes],
    previews: int,
    count: int,
) -> None:
    images_api.push(handler())
    result, shown = await generate(client, streaming(count=count))
    assert [image.data for image in result.images] == images
    assert len(shown) == previews


async def test_fewer_images_than_asked_for_is_said(
    client: ImageClient, images_api: FakeImagesAPI
) -> None:
    images_api.push(stream(partial_event(ROUGH, 0), completed_event(IMAGE), cut=True))
    result, _ = await generate(client, streaming(count=2))
    assert result.missing == 1


# -- streams that fail --------------------------------------------------------------------------

Failing = list[tuple[str, Callable[[], Handler], type[ImageError], str]]

FAILING: Failing = [
    (
        "an error event: the safety system",
        lambda: stream(
            partial_event(ROUGH, 0),
            error_event("Blocked.", "image_generation_user_error", "moderation_blocked"),
        ),
        ModerationBlocked,
        "moderation_blocked",
    ),
    (
        "an error event: rate limited",
        lambda: stream(error_event("Slow down.", "requests", "rate_limit_exceeded")),
        RateLimited,
        "rate_limit_exceeded",
    ),
    (
        "an error event: quota",
        lambda: stream(error_event("No money.", "insufficient_quota", "insufficient_quota")),
        QuotaExhausted,
        "insufficient_quota",
    ),
    (
        "an error event: server error",
        lambda: stream(error_event("Oops.", "server_error", None)),
        UpstreamUnavailable,
        "server_error",
    ),
    (
        "a data object with an error key, no event name",
        lambda: stream(
            b"data: "
            + json.dumps({"error": {"message": "x", "code": "moderation_blocked"}}).encode()
            + b"\n\n"
        ),
        ModerationBlocked,
        "moderation_blocked",
    ),
    (
        "cut short in the middle of an image",
        lambda: stream(partial_event(ROUGH, 0), completed_event(IMAGE)[:200], cut=True),
        MalformedResponse,
        "cut off",
    ),
    (
        "ends without an image",
        lambda: stream(partial_event(ROUGH, 0), partial_event(ROUGH, 1)),
        MalformedResponse,
        "ended before the image was complete",
    ),
    (
        "[DONE] before an image",
        lambda: stream(partial_event(ROUGH, 0), done(), completed_event(IMAGE)),
        MalformedResponse,
        "ended before the image was complete",
    ),
    (
        "an event that is not JSON",
        lambda: stream(b"data: <html>502</html>\n\n", completed_event(IMAGE)),
        MalformedResponse,
        "not JSON",
    ),
    (
        "a completed event without its image",
        lambda: stream(sse({"type": "image_generation.completed", "usage": {}})),
        MalformedResponse,
        "carries no image",
    ),
    (
        "an image that is not an image",
        lambda: stream(completed_event(b"not a picture at all")),
        MalformedResponse,
        "not a readable image",
    ),
]


@pytest.mark.parametrize(
    ("handler", "error", "detail"),
    [case[1:] for case in FAILING],
    ids=[case[0] for case in FAILING],
)
async def test_streams_that_fail(
    client: ImageClient,
    images_api: FakeImagesAPI,
    handler: Callable[[], Handler],
    error: type[ImageError],
    detail: str,
) -> None:
    images_api.push(handler())
    with pytest.raises(error) as raised:
        await generate(client, streaming())
    assert detail in str(raised.value)
    assert raised.value.user_message.endswith(".")
    assert len(images_api.generation_requests) == 1  # an answer that began is never sent again


async def test_a_stream_over_the_response_cap_is_refused(
    images_api: FakeImagesAPI, http: Any, client_settings: ClientSettings
) -> None:
    small = ImageClient(
        http,
        base_url=images_api.base_url,
        api_key=API_KEY,
        catalog=load_catalog(),
        settings=dataclasses.replace(client_settings, max_response_bytes=2_000_000),
    )
    images_api.push(stream(*[partial_event(BIG, index) for index in range(3)]))
    with pytest.raises(ResponseTooLarge, match="2,000,000-byte cap"):
        await generate(small, streaming())


async def test_a_bad_preview_is_dropped_and_the_image_still_comes(
    client: ImageClient, images_api: FakeImagesAPI
) -> None:
    broken = sse(
        {"type": "image_generation.partial_image", "b64_json": "!!!", "partial_image_index": 0}
    )
    images_api.push(stream(broken, completed_event(IMAGE)))
    result, previews = await generate(client, streaming())
    assert [image.data for image in result.images] == [IMAGE]
    assert [preview.decode() for preview in previews] == [None]  # no preview made of it


def test_a_preview_declaring_more_pixels_than_the_request_allows_is_not_decoded() -> None:
    # A few kilobytes of PNG that would decode into 400 MB: refused from its header.
    huge = io.BytesIO()
    Image.new("L", (20_000, 20_000)).save(huge, "PNG", optimize=False)
    encoded = base64.b64encode(huge.getvalue()).decode()
    allowed = PartialImage(0, encoded, max_bytes=10_000_000, max_pixels=4_000_000)
    assert make_preview(allowed) is None
    small = io.BytesIO()
    Image.new("RGB", (64, 48), "teal").save(small, "PNG")
    fine = PartialImage(0, base64.b64encode(small.getvalue()).decode(), 10_000_000, 4_000_000)
    assert make_preview(fine) is not None


async def test_a_stream_takes_its_slot_before_reading_a_large_event(
    client: ImageClient, images_api: FakeImagesAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small previews are read without a slot; an event larger than the bound is not read
    # further until the stream holds one, so memory is bounded by the slots.
    monkeypatch.setattr(streaming_module, "UNSLOTTED_BYTES", 1_000_000)
    images_api.push(stream(partial_event(ROUGH, 0), partial_event(BIG, 1), completed_event(IMAGE)))
    slots = ProcessingSlots(1)
    busy = slots.lease()
    await busy.hold()  # the one slot is taken by another request's images
    previews: list[PartialImage] = []
    lease = slots.lease()
    request = asyncio.ensure_future(
        client.generate(streaming(), lease=lease, on_partial=previews.append)
    )
    while not slots.waiting:  # noqa: ASYNC110 - until the stream asks for the slot
        await asyncio.sleep(0.01)
    assert [preview.index for preview in previews] == [0]  # the large one is not in memory yet
    busy.release()
    result = await request
    lease.release()
    assert [preview.index for preview in previews] == [0, 1]
    assert [image.data for image in result.images] == [IMAGE]


async def test_a_stream_reads_on_after_waiting_for_its_slot(
    client: ImageClient, images_api: FakeImagesAPI
) -> None:
    # While it waits for a slot, a request reads nothing from its connection; once it has one,
    # the rest of the stream still comes in, however it is cut into HTTP chunks.
    second = make_image(64, 64, shade=1)
    event = completed_event(second)

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(completed_event(IMAGE))
        await asyncio.sleep(0.3)
        # The second image in two HTTP chunks that arrive together.
        await response.write(event[: len(event) // 2])
        await response.write(event[len(event) // 2 :])
        await response.write_eof()
        return response

    images_api.push(handler)
    slots = ProcessingSlots(1)
    busy = slots.lease()
    await busy.hold()
    lease = slots.lease()
    request = asyncio.ensure_future(client.generate(streaming(count=2), lease=lease))
    while not slots.waiting:  # noqa: ASYNC110 - until the first image waits for the slot
        await asyncio.sleep(0.01)
    busy.release()  # before the second image has been sent
    async with asyncio.timeout(3):
        result = await request
    lease.release()
    assert len(result.images) == 2


def test_a_large_event_without_an_image_is_never_parsed_whole_on_the_event_loop() -> None:
    # Megabytes of JSON that carry no image (a hostile service): json.loads of it held the loop
    # for 0.46 s; on the loop it is refused to the caller, which parses it in a thread.
    numbers = json.dumps({"type": "image_generation.partial_image", "x": list(range(300_000))})
    with pytest.raises(streaming_module._ParseWhole):
        streaming_module._load(numbers.encode(), whole=False)
    image = partial_event(BIG, 0).split(b"data: ", 1)[1].strip()
    assert streaming_module._load(image, whole=False).encoded  # an image event is lifted at once


def unnamed(event: bytes) -> bytes:
    """The event without its ``event:`` line: the kind only in the data, as some gateways send."""
    return b"data: " + event.split(b"data: ", 1)[1]


async def _second_stream_beside_a_kept_preview(
    client: ImageClient, images_api: FakeImagesAPI, second: Handler
) -> tuple[ProcessingSlots, list[PartialImage], Callable[[], Any]]:
    """With 1 MiB of room and the one slot busy, a first stream's preview of 360 KB is kept
    (not yet released by whoever shows it); then ``second`` is asked for. Returns the slots,
    the previews handed over, and what frees the slot and awaits both requests."""
    small = incompressible_png(300, 300)
    images_api.push(stream(partial_event(small, 0), completed_event(IMAGE), pause=0.3), second)
    slots = ProcessingSlots(1, room=1024 * 1024)
    busy = slots.lease()
    await busy.hold()  # the one slot is taken by another request's images
    previews: list[PartialImage] = []
    leases = [slots.lease(), slots.lease()]
    requests = [
        asyncio.ensure_future(client.generate(streaming(), lease=lease, on_partial=previews.append))
        for lease in leases[:1]
    ]
    while not previews:  # noqa: ASYNC110 - until the first preview is handed over
        await asyncio.sleep(0.01)
    assert slots.room.used >= len(previews[0].encoded) > 256 * 1024  # kept: its room too
    requests.append(
        asyncio.ensure_future(
            client.generate(streaming(), lease=leases[1], on_partial=previews.append)
        )
    )

    async def finish() -> None:
        busy.release()
        for request, lease in zip(requests, leases, strict=True):
            result = await request
            lease.release()  # its images posted
            assert len(result.images) == 1
        for preview in previews:
            preview.release()
        assert slots.room.used == 0

    return slots, previews, finish


async def test_a_preview_the_room_has_no_space_for_is_let_go_and_the_image_still_comes(
    client: ImageClient, images_api: FakeImagesAPI
) -> None:
    # Previews are read without a slot, within room shared by every request: one that finds
    # no room is read past as it comes, keeping nothing, so that the image never waits for it.
    large = incompressible_png(500, 500)  # 1 MB of base64: more than the room has left
    second = stream(partial_event(large, 0), completed_event(OTHER), pause=0.3)
    slots, previews, finish = await _second_stream_beside_a_kept_preview(client, images_api, second)
    while slots.waiting < 2:  # noqa: ASYNC110 - both images wait for the slot
        await asyncio.sleep(0.01)
    assert len(previews) == 1  # the second preview was let go, not waited for
    await finish()


async def test_an_event_of_unknown_kind_without_room_waits_reading_no_further(
    client: ImageClient, images_api: FakeImagesAPI
) -> None:
    # Without an `event:` line, nothing says it is a preview until it is whole: it waits for
    # room (or a slot), the rest of it in the socket.
    large = incompressible_png(500, 500)
    second = stream(unnamed(partial_event(large, 0)), unnamed(completed_event(OTHER)), pause=0.3)
    slots, previews, finish = await _second_stream_beside_a_kept_preview(client, images_api, second)
    await asyncio.sleep(0.5)
    assert len(previews) == 1 and slots.waiting == 2
    previews[0].release()  # shown, or replaced: its room goes back
    while len(previews) < 2:  # noqa: ASYNC110 - the second stream reads on
        await asyncio.sleep(0.01)
    assert previews[1].decode() == large
    await finish()
