"""Processing slots: answers are read only with a slot, so few bodies are in memory at once."""

from __future__ import annotations

import asyncio
import json
import tracemalloc
from typing import Any, cast

import aiohttp
import pytest

from bot.discord_out.progress import EditBudget, ProgressDisplay
from bot.images import (
    ClientSettings,
    ImageClient,
    ImageRequest,
    ProcessingSlots,
    RetryPolicy,
    load_catalog,
)
from bot.images.streaming import PartialImage
from tests.conftest import API_KEY
from tests.fakes.images_api import FakeImagesAPI, flood, respond


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
    from bot.requests.queue import GenerationQueue
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


# -- a hostile service: memory is bounded by the slots, however many answers it floods ---------

MIB = 1024 * 1024
# What one request waiting for room or a slot may hold, all told: aiohttp's read buffer (it
# stops reading past 128 KiB, after a read of up to 256 KiB), what a stream reads with no room
# of its own (64 KiB), and the fake's side of the connection, which runs in this process too.
# Measured: 0.8 MiB, however large the flood.
PER_REQUEST = 1024 * 1024
PREVIEW_DATA = (
    b'data: {"type": "image_generation.partial_image", "partial_image_index": 0, "b64_json": "'
)
NAMED_PREVIEW_HEAD = b"event: image_generation.partial_image\n" + PREVIEW_DATA
JSON_HEAD = b'{"created": 1, "data": [{"b64_json": "'


async def _held_at_rest(started: float) -> float:
    """The most bytes traced since ``started``, once memory has stopped growing (the flood has
    filled what the bot reads and the rest waits in the sockets)."""
    last, still = tracemalloc.get_traced_memory()[0], 0
    while still < 8:  # 0.8 s without growth
        await asyncio.sleep(0.1)
        current = tracemalloc.get_traced_memory()[0]
        still = still + 1 if current - last < MIB else 0
        last = max(last, current)
    return tracemalloc.get_traced_memory()[1] - started


async def test_a_flood_of_large_answers_holds_memory_bounded_by_the_slots_not_the_answers(
    http: aiohttp.ClientSession, images_api: FakeImagesAPI
) -> None:
    """Streams whose one preview is nearly 8 MiB and never ends (half of them named as
    previews by their `event:` line, half not), and JSON bodies of 24 MB, sixteen of each,
    while both processing slots are busy posting other images: what the bot holds is the room
    the slots allow outside them, and a socket's worth per request."""
    client = ImageClient(
        http, base_url=images_api.base_url, api_key=API_KEY, catalog=load_catalog(),
        settings=ClientSettings(timeout=60.0),
    )  # fmt: skip
    streams = bodies = 16
    heads = [NAMED_PREVIEW_HEAD, PREVIEW_DATA] * (streams // 2)
    images_api.push(*(flood(head, 8 * MIB - 256 * 1024) for head in heads))
    images_api.push(
        *(flood(JSON_HEAD, 24 * MIB, content_type="application/json") for _ in range(bodies))
    )
    slots = ProcessingSlots(2)
    posting = [slots.lease() for _ in range(slots.count)]
    for lease in posting:
        await lease.hold()
    previews: list[object] = []
    tracemalloc.start()
    try:
        started = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        requests = [
            asyncio.create_task(
                client.generate(
                    ImageRequest(prompt="x", model="gpt-image-1.5", partial_images=2, user="u"),
                    lease=slots.lease(),
                    on_partial=previews.append,
                )
            )
            for _ in range(streams + bodies)
        ]
        held = await _held_at_rest(started)
    finally:
        tracemalloc.stop()
    for request in requests:
        request.cancel()
    await asyncio.gather(*requests, return_exceptions=True)
    assert images_api.peak_in_flight == streams + bodies  # every answer was on its way at once
    # Before the room, each stream read its preview whole without a slot: 139 MiB here.
    bound = slots.room.total + (streams + bodies) * PER_REQUEST
    assert slots.room.total == slots.count * 8 * MIB
    assert held <= bound, f"{held / MIB:.1f} MiB held, over {bound / MIB:.1f} MiB"
    assert slots.room.peak <= slots.room.total


# -- the room: bytes held outside the slots ----------------------------------------------------


async def _settled() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_request_without_room_waits_for_room_or_a_slot_whichever_comes_first() -> None:
    slots = ProcessingSlots(1, room=100)
    posting = slots.lease()
    await posting.hold()
    first, second, third = slots.lease(), slots.lease(), slots.lease()
    first_grant, second_grant, third_grant = first.grant(), second.grant(), third.grant()
    await first.cover(first_grant, 80)  # there is room: at once
    waiting_for_room = asyncio.create_task(second.cover(second_grant, 50))
    await _settled()
    assert not waiting_for_room.done() and slots.waiting == 1
    first_grant.resize(30)  # the first holds less now: room enough for the second
    await waiting_for_room
    assert (second_grant.size, second.held, slots.room.used) == (50, False, 80)

    waiting_for_either = asyncio.create_task(third.cover(third_grant, 90))  # over what is left
    await _settled()
    assert not waiting_for_either.done()
    posting.release()  # a slot first: it covers what the third holds, and it needs no room
    await waiting_for_either
    assert third.held and third_grant.size == 0 and slots.busy == 1
    third.release()
    first_grant.release()
    second_grant.release()
    assert slots.room.used == 0 and slots.room.peak == 80


async def test_room_is_given_in_turn_and_a_wait_given_up_leaves_nothing_taken() -> None:
    slots = ProcessingSlots(1, room=100)
    posting = slots.lease()
    await posting.hold()
    holder = slots.lease().grant()
    assert holder.resize(100)
    big, small = slots.lease(), slots.lease()
    big_grant, small_grant = big.grant(), small.grant()
    waiting_big = asyncio.create_task(big.cover(big_grant, 90))
    await _settled()
    waiting_small = asyncio.create_task(small.cover(small_grant, 5))
    await _settled()
    holder.resize(90)  # room for the small one, not the big one: first come, first served
    await _settled()
    assert not waiting_small.done()
    waiting_big.cancel()  # the big one gives up: the small one is next
    await asyncio.gather(waiting_big, return_exceptions=True)
    await waiting_small
    assert (small_grant.size, slots.room.used, slots.waiting) == (5, 95, 0)
    posting.release()
    assert slots.busy == 0  # the cancelled wait took no slot either


async def test_inputs_kept_on_a_slot_keep_it_through_a_back_off_until_the_request_closes() -> None:
    slots = ProcessingSlots(1, room=10)
    edit = slots.lease()
    await edit.keep(50)  # more than the whole room: only a slot can hold it
    assert edit.held and edit.pinned and slots.room.used == 0
    edit.release()  # a retry's back-off, or the reply posted: the inputs are still held
    assert slots.busy == 1
    edit.close()
    assert slots.busy == 0 and not edit.held

    small = slots.lease()
    await small.keep(8)  # room enough: no slot taken
    assert not small.held and slots.room.used == 8
    small.close()
    assert slots.room.used == 0


async def test_a_preview_waiting_to_be_shown_is_let_go_for_what_a_stream_must_read() -> None:
    slots = ProcessingSlots(1, room=100)
    budget = EditBudget()
    while budget.try_take():  # no edit may be made now: the previews wait to be shown
        pass
    display = ProgressDisplay(cast(Any, None), budget, previews=2)
    older, newer = slots.room.grant(), slots.room.grant()
    assert older.resize(40) and newer.resize(30)
    display.offer(PartialImage(0, "QUJD", 1000, 1000, older))
    display.offer(PartialImage(1, "QUJD", 1000, 1000, newer))  # the older one is replaced
    assert slots.room.used == 30 and display.dropped_previews == 1

    reading = slots.lease().grant()
    assert reading.resize(90)  # a stream needs the room: the preview waiting is let go
    assert (slots.room.used, slots.room.dropped) == (90, 1)
    assert display.dropped_previews == 2  # nothing left to show: the time elapsed is shown
    await display.stop()
    reading.release()
    assert slots.room.used == 0


def _held_by_the_bot(snapshot: tracemalloc.Snapshot) -> int:
    """Bytes traced at rest, less the fake's side of the connections (its write buffers): every
    allocation made while a frame of the fake was on the stack."""
    fake = tracemalloc.Filter(False, "*/tests/fakes/*", all_frames=True)
    served = tracemalloc.Filter(False, "*/aiohttp/web_*", all_frames=True)
    return sum(trace.size for trace in snapshot.filter_traces([fake, served]).traces)


async def test_requests_waiting_for_a_slot_hold_sockets_not_bytes(
    http: aiohttp.ClientSession, images_api: FakeImagesAPI
) -> None:
    """Forty-eight hostile answers at once (endless previews and endless JSON bodies, sent in
    small pieces) while both slots are busy: beyond the room, each waiting request holds its
    socket and what came with its headers, not the 0.5 MiB aiohttp would read on to."""
    client = ImageClient(
        http, base_url=images_api.base_url, api_key=API_KEY, catalog=load_catalog(),
        settings=ClientSettings(timeout=60.0),
    )  # fmt: skip
    waiting = 48
    piece = 16 * 1024  # the fake's own buffers stay small
    heads = [NAMED_PREVIEW_HEAD, PREVIEW_DATA] * (waiting // 4)
    images_api.push(*(flood(head, 8 * MIB, piece=piece) for head in heads))
    images_api.push(
        *(
            flood(JSON_HEAD, 8 * MIB, content_type="application/json", piece=piece)
            for _ in range(waiting // 2)
        )
    )
    slots = ProcessingSlots(2)
    posting = [slots.lease() for _ in range(slots.count)]
    for lease in posting:
        await lease.hold()
    tracemalloc.start(16)  # deep enough to see the fake's frames
    try:
        started = tracemalloc.take_snapshot()
        requests = [
            asyncio.create_task(
                client.generate(
                    ImageRequest(prompt="x", model="gpt-image-1.5", partial_images=2, user="u"),
                    lease=slots.lease(),
                    on_partial=lambda partial: None,
                )
            )
            for _ in range(waiting)
        ]
        await _held_at_rest(0)
        held = _held_by_the_bot(tracemalloc.take_snapshot()) - _held_by_the_bot(started)
    finally:
        tracemalloc.stop()
    for request in requests:
        request.cancel()
    await asyncio.gather(*requests, return_exceptions=True)
    assert images_api.peak_in_flight == waiting and slots.waiting == 0
    # Before, aiohttp read on while a request waited, to 128 KiB and a read of up to 256 KiB
    # past it: 524 KiB a request. Now: what came with the headers (one read of up to 256 KiB)
    # or what a stream holds without room (64 KiB); 148 KiB a request, measured.
    per_request = (held - slots.room.total) / waiting
    assert per_request <= 192 * 1024, f"{per_request / 1024:.0f} KiB held per waiting request"
