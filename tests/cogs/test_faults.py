"""Faults upstream and under load: each ends with the user told, and the next request is served."""

from __future__ import annotations

import asyncio
from typing import Any

import discord
import pytest

from tests.cogs.support import (
    Gate,
    declare_generation_waits,
    finish,
    private_reply,
    upload_limit,
    uploaded,
)
from tests.fakes.images_api import (
    FakeImagesAPI,
    api_error,
    cut_off,
    hang,
    images_body,
    incompressible_png,
    make_image,
    respond,
)

# Short bot sleeps (retry back-off, queue polling) are parked on simcord's virtual clock, which
# finish() moves forward; real I/O with the loopback API is a declared external wait.
pytestmark = pytest.mark.simcord(settle_timeout=3.0)

RETRYING = {"max_retries": 2, "request_timeout": 30}
BUSY = "The image service is busy right now."
UNAVAILABLE = "The image service is unavailable right now."
NOT_AN_IMAGE = "The image service sent back something that is not a valid image."


async def served_normally(env: Any, channel: Any, member: Any, api: FakeImagesAPI) -> None:
    api.script.clear()
    api.image_bytes = None
    before = len(api.served)
    result = await member.slash(channel, "imagine", prompt="the next one")
    await finish(env)
    assert await uploaded(result.response) == api.served[before:]


FAULTS = [
    pytest.param([cut_off()], NOT_AN_IMAGE, 1, id="reset-mid-body"),
    pytest.param(
        [api_error(429, "requests", "rate_limit_exceeded", headers={"Retry-After": "900"})],
        BUSY,
        1,
        id="429-retry-after-too-long",
    ),
    pytest.param(
        [api_error(429, "requests", "rate_limit_exceeded")] * 3, BUSY, 3, id="429-no-retry-after"
    ),
    pytest.param([api_error(500, "server_error", None)] * 3, UNAVAILABLE, 3, id="500-repeatedly"),
    pytest.param(
        [respond(502, "<html><h1>502 Bad Gateway</h1></html>", content_type="text/html")] * 3,
        UNAVAILABLE,
        3,
        id="502-html",
    ),
    pytest.param(
        [respond(200, b'{"created": 1, "data": [{"b64_json": "iVBORw0KGgo')],
        NOT_AN_IMAGE,
        1,
        id="truncated-json",
    ),
    pytest.param([respond(200, "<<<>>>")], NOT_AN_IMAGE, 1, id="malformed"),
    pytest.param([respond(200, '{"created": 1, "data": []}')], NOT_AN_IMAGE, 1, id="empty-data"),
    pytest.param(
        [respond(200, '{"created": 1, "data": [{"b64_json": "%%%not-base64%%%"}]}')],
        NOT_AN_IMAGE,
        1,
        id="bad-base64",
    ),
    pytest.param(
        [respond(200, images_body(make_image(8, 8) + b"\0" * 200_000))],
        "more data than the bot accepts",
        1,
        id="image-over-the-cap",
    ),
]


@pytest.mark.parametrize("bot_overrides", [RETRYING | {"max_image_mb": 0.1}])
@pytest.mark.parametrize(("handlers", "sentence", "attempts"), FAULTS)
async def test_each_upstream_fault_ends_with_the_user_told(
    simcord_env: Any,
    channel: Any,
    alice: Any,
    images_api: FakeImagesAPI,
    handlers: list[Any],
    sentence: str,
    attempts: int,
) -> None:
    declare_generation_waits(simcord_env)
    images_api.push(*handlers)
    result = await alice.slash(channel, "imagine", prompt="a cat")
    await finish(simcord_env)

    assert sentence in private_reply(result).content
    assert len(images_api.generation_requests) == attempts  # bounded: no retry storm
    await served_normally(simcord_env, channel, alice, images_api)


@pytest.mark.parametrize("bot_overrides", [RETRYING])
async def test_a_429_with_retry_after_is_waited_out_and_delivered(
    simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI
) -> None:
    declare_generation_waits(simcord_env)
    images_api.push(api_error(429, "requests", "rate_limit_exceeded", headers={"Retry-After": "1"}))
    result = await alice.slash(channel, "imagine", prompt="a cat")
    await simcord_env.advance_time(1)
    await finish(simcord_env)
    assert await uploaded(result.response) == images_api.served
    assert len(images_api.generation_requests) == 2


@pytest.mark.parametrize("bot_overrides", [RETRYING])
async def test_a_hanging_upstream_times_out_and_the_next_request_is_served(
    simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI
) -> None:
    declare_generation_waits(simcord_env)
    images_api.push(hang(3600))
    result = await alice.slash(channel, "imagine", prompt="a cat")
    await simcord_env.advance_time(31)  # the attempt's 30 s timeout, on simcord's clock
    await finish(simcord_env)
    assert "took too long to answer" in private_reply(result).content
    assert len(images_api.generation_requests) == 1  # a timed-out generation is not re-sent
    await served_normally(simcord_env, channel, alice, images_api)


# Previews off: their edits would slow the dispatch of the twelve requests in simcord.
@pytest.mark.parametrize("bot_overrides", [{"max_concurrent_generations": 3, "partial_images": 0}])
async def test_many_users_at_once_never_exceed_the_in_flight_cap(
    simcord_env: Any, guild: Any, channel: Any, images_api: FakeImagesAPI
) -> None:
    declare_generation_waits(simcord_env)
    images_api.latency = 0.3  # long enough for every request to be sent while the first wait
    members = [guild.add_member(simcord_env.create_user(f"user{n}")) for n in range(12)]
    results = [await m.slash(channel, "imagine", prompt=f"p{n}") for n, m in enumerate(members)]
    await finish(simcord_env)

    assert images_api.peak_in_flight == 3
    assert all(r.response.attachments for r in results)
    assert len(images_api.generation_requests) == 12


# simcord also runs the virtual timers due within its settle timeout: at 3 s the settle below
# reached a progress display's next edit (1 run in 3); the requests' own timers are this test's.
@pytest.mark.simcord(settle_timeout=0.5)
@pytest.mark.parametrize(
    "bot_overrides", [{"max_concurrent_generations": 2, "shutdown_grace_seconds": 0.5}]
)
async def test_shutdown_under_load_loses_no_request_without_telling_its_user(
    simcord_env: Any, guild: Any, channel: Any, images_api: FakeImagesAPI
) -> None:
    gate = Gate(simcord_env)
    members = [guild.add_member(simcord_env.create_user(f"user{n}")) for n in range(6)]
    results = [await m.slash(channel, "imagine", prompt=f"p{n}") for n, m in enumerate(members)]
    admission = simcord_env.bot.admission
    draining = asyncio.ensure_future(simcord_env.bot.shutdown())  # drains as the cog unloads
    gate.open(0)  # one of the two in flight finishes within the grace period
    await simcord_env.settle()
    await draining
    assert not admission.jobs  # the drain waited for every cancelled job to tell its member

    delivered = [r for r in results if r.response is not None and r.response.attachments]
    cancelled = [
        r
        for r in results
        if any("your request was cancelled" in m.content for m in r.followups if m.ephemeral)
    ]
    assert len(delivered) == 1
    assert len(cancelled) == 5


@pytest.mark.parametrize("bot_overrides", [{"user_rate_limit": "5/minute"}])
async def test_twenty_requests_from_one_member_never_exceed_the_limit(
    simcord_env: Any, channel: Any, alice: Any, bob: Any, images_api: FakeImagesAPI
) -> None:
    # simcord delivers interactions one at a time; twenty truly simultaneous calls are covered
    # at the limiter itself (tests/bot/test_ratelimit.py).
    declare_generation_waits(simcord_env)
    results = [await alice.slash(channel, "imagine", prompt=f"p{n}") for n in range(20)]
    await finish(simcord_env)
    refused = [r for r in results if r.response.ephemeral and "limit of 5" in r.response.content]
    assert len(refused) == 15
    assert len(images_api.generation_requests) == 5
    other = await bob.slash(channel, "imagine", prompt="mine")
    await finish(simcord_env)
    assert other.response.attachments
    # Refused before any acknowledgement or delivered: none is still waited for by the others.
    assert simcord_env.bot.admission.acknowledgements.waiting == 0


@pytest.mark.parametrize("bot_overrides", [{"shutdown_grace_seconds": 0.5}])
async def test_a_request_still_being_counted_when_shutdown_starts_is_not_lost(
    simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI
) -> None:
    admission = simcord_env.bot.admission
    release = asyncio.Event()
    real_acquire = admission.limiter.acquire

    async def slow_store(user_key: str) -> Any:  # a shared store taking its time to answer
        await simcord_env.external_wait(release.wait(), reason="rate-limit store")
        return await real_acquire(user_key)

    admission.limiter.acquire = slow_store
    result = await alice.slash(channel, "imagine", prompt="a cat")
    draining = asyncio.ensure_future(admission.drain(0.5))
    await draining  # the request never got past the store within the grace period
    await simcord_env.settle()

    assert result.response is not None
    assert result.response.ephemeral
    assert result.response.content == "The bot is restarting. Please try again in a minute."
    assert images_api.generation_requests == []
    assert not admission.jobs


@pytest.mark.parametrize("bot_overrides", [{"max_images_per_request": 2}])
async def test_images_already_posted_stay_when_the_rest_cannot_follow(
    simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI
) -> None:
    image = incompressible_png(300, 300)
    images_api.image_bytes = image
    hold = asyncio.Event()
    real_send = discord.Webhook.send

    async def stalled_upload(self: Any, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("files"):  # the follow-up carrying the second image never goes through
            await simcord_env.external_wait(hold.wait(), reason="a stalled upload")
        return await real_send(self, *args, **kwargs)

    discord.Webhook.send = stalled_upload  # type: ignore[method-assign]
    try:
        with upload_limit(len(image) + 1000):  # one image a message
            result = await alice.slash(channel, "imagine", prompt="two", count=2)
        await simcord_env.advance_time(15 * 60)  # the interaction token runs out
    finally:
        discord.Webhook.send = real_send  # type: ignore[method-assign]

    assert await uploaded(result.response) == [image]  # the posted image is still there
    (note,) = [m for m in result.followups if m.ephemeral]
    assert note.content.startswith("Not all of your images could be posted.")


async def test_a_rate_limit_store_that_fails_is_a_sentence_and_nothing_is_paid(
    simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI
) -> None:
    admission = simcord_env.bot.admission

    async def store_down(user_key: str) -> Any:
        raise ConnectionError("redis: connection refused")

    admission.limiter.acquire = store_down
    result = await alice.slash(channel, "imagine", prompt="a cat")
    assert result.response.ephemeral
    assert result.response.content == (
        "The bot cannot check usage limits right now. Please try again soon."
    )
    assert images_api.generation_requests == []
