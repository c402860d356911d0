"""Processing slots: answers are read only with a slot, so few bodies are in memory at once."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from bot.images import (
    ClientSettings,
    ImageClient,
    ImageRequest,
    ProcessingSlots,
    RetryPolicy,
    load_catalog,
)
from tests.conftest import API_KEY
from tests.fakes.images_api import FakeImagesAPI, respond


def request() -> ImageRequest:
    return ImageRequest(prompt="a lighthouse", model="gpt-image-1.5", size="1024x1024", user="u")


async def test_bodies_are_read_one_slot_at_a_time_while_all_requests_are_in_flight(
    client: ImageClient, images_api: FakeImagesAPI
) -> None:
    images_api.latency = 0.05
    slots = ProcessingSlots(1)
    peak_busy = 0
    leases = [slots.lease() for _ in range(6)]

    async def one(index: int) -> None:
        nonlocal peak_busy
        lease = leases[index]
        try:
            result = await client.generate(request(), lease=lease)
            peak_busy = max(peak_busy, slots.busy)
            assert lease.held and result.images  # held until the caller has posted
            await asyncio.sleep(0.01)  # "posting"
        finally:
            lease.release()

    await asyncio.gather(*(one(i) for i in range(6)))
    assert images_api.peak_in_flight == 6  # the service saw every request at once
    assert peak_busy == 1 and slots.busy == 0
    assert slots.waited >= 4  # the others waited with their answers in the socket


async def test_no_slot_is_held_through_a_retry_back_off(
    http: aiohttp.ClientSession, images_api: FakeImagesAPI
) -> None:
    client = ImageClient(
        http, base_url=images_api.base_url, api_key=API_KEY, catalog=load_catalog(),
        settings=ClientSettings(timeout=5.0, retry=RetryPolicy(backoff_base=0.2)),
    )  # fmt: skip
    slots = ProcessingSlots(1)
    lease = slots.lease()
    busy = json.dumps({"error": {"message": "busy", "type": "", "code": "rate_limit_exceeded"}})
    images_api.push(respond(429, busy))
    during_back_off: list[int] = []

    async def watch() -> None:
        await asyncio.sleep(0.1)  # inside the 0.15-0.2 s back-off
        during_back_off.append(slots.busy)

    watcher = asyncio.create_task(watch())
    result = await client.generate(request(), lease=lease)
    await watcher
    assert result.images and during_back_off == [0]
    lease.release()
    assert slots.busy == 0


async def test_the_limit_hears_every_answer(
    http: aiohttp.ClientSession, images_api: FakeImagesAPI
) -> None:
    heard: list[int] = []

    class Listener:
        def record(self, status: int, headers: object) -> None:
            heard.append(status)

    client = ImageClient(
        http, base_url=images_api.base_url, api_key=API_KEY, catalog=load_catalog(),
        settings=ClientSettings(timeout=5.0, retry=RetryPolicy(backoff_base=0.01)),
        feedback=Listener(),
    )  # fmt: skip
    images_api.push(respond(429, json.dumps({"error": {"message": "slow down"}})))
    await client.generate(request())
    assert heard == [429, 200]


@pytest.mark.parametrize("count", [0, -1])
def test_a_pool_needs_a_slot(count: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        ProcessingSlots(count)


async def test_waiting_for_a_processing_slot_does_not_time_out_a_paid_answer(
    http: aiohttp.ClientSession, images_api: FakeImagesAPI
) -> None:
    from tests.fakes.images_api import images_body, incompressible_png

    client = ImageClient(
        http, base_url=images_api.base_url, api_key=API_KEY, catalog=load_catalog(),
        settings=ClientSettings(timeout=1.0),
    )  # fmt: skip
    images_api.push(respond(200, images_body(incompressible_png(1024, 1024))))  # about 4 MB
    slots = ProcessingSlots(1)
    busy = slots.lease()
    await busy.hold()  # another answer is being posted (a slow upload to Discord)
    asyncio.get_running_loop().call_later(1.5, busy.release)
    lease = slots.lease()
    try:
        result = await client.generate(request(), lease=lease)
    finally:
        lease.release()
    assert result.images and len(images_api.generation_requests) == 1


async def test_an_odd_rate_limit_header_does_not_lose_a_paid_answer(
    http: aiohttp.ClientSession, images_api: FakeImagesAPI
) -> None:
    from bot.queue import GenerationQueue
    from tests.fakes.images_api import images_body, make_image

    queue = GenerationQueue(8)
    client = ImageClient(
        http, base_url=images_api.base_url, api_key=API_KEY, catalog=load_catalog(),
        settings=ClientSettings(timeout=5.0), feedback=queue,
    )  # fmt: skip
    headers = {"x-ratelimit-remaining-requests": "\u00b2"}
    images_api.push(respond(200, images_body(make_image(64, 64)), headers=headers))
    async with queue.slot():
        result = await client.generate(request())
    assert result.images
