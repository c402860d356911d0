"""Per-user limits on a real Redis server shared by several limiters, as several processes share it:
a member's limits are checked and counted as one, and a store that goes away and comes back is
used again without a restart."""

from __future__ import annotations

import asyncio
import time

import pytest
from limits import parse_many
from limits.aio.strategies import MovingWindowRateLimiter

from bot.ratelimit import UserRateLimiter
from tests.redis_server import RedisServer


def limiters(server: RedisServer, limits: str, count: int = 2) -> list[UserRateLimiter]:
    """``count`` limiters, each with its own connections, like as many bot processes."""
    return [UserRateLimiter(parse_many(limits), server.url) for _ in range(count)]


async def remaining(limiter: UserRateLimiter, limit: str, user: str) -> int:
    reader = MovingWindowRateLimiter(limiter._storage)
    return (await reader.get_window_stats(parse_many(limit)[0], user)).remaining


async def test_twenty_simultaneous_requests_on_two_processes_count_once_in_every_window(
    redis_server: RedisServer,
) -> None:
    first, second = limiters(redis_server, "20/hour;5/minute")

    outcomes = await asyncio.gather(
        *(limiter.acquire("alice") for _ in range(10) for limiter in (first, second))
    )

    assert sum(outcome is None for outcome in outcomes) == 5
    # The fifteen refused by the minute's limit took nothing of the hour's.
    assert await remaining(first, "20/hour", "alice") == 15
    assert await remaining(second, "5/minute", "alice") == 0
    assert await first.acquire("bob") is None


async def test_the_limit_that_refuses_is_named_with_when_to_come_back(
    redis_server: RedisServer,
) -> None:
    (limiter,) = limiters(redis_server, "10/hour;2/minute", count=1)
    assert await limiter.acquire("alice") is None
    assert await limiter.acquire("alice") is None

    refusal = await limiter.acquire("alice")

    assert refusal is not None
    assert refusal.describe() == "2 image requests per minute"
    assert time.time() + 55 < refusal.reset_at <= time.time() + 61


async def test_a_full_daily_window_refuses_without_counting_in_the_minute(
    redis_server: RedisServer,
) -> None:
    first, second = limiters(redis_server, "3/minute;2/day")
    assert await first.acquire("alice") is None
    assert await second.acquire("alice") is None

    refusal = await first.acquire("alice")

    assert refusal is not None
    assert refusal.describe() == "2 image requests per day"
    assert await remaining(second, "3/minute", "alice") == 1


async def test_a_store_that_goes_away_fails_fast_and_is_used_again_when_it_is_back(
    redis_server: RedisServer,
) -> None:
    (limiter,) = limiters(redis_server, "5/minute", count=1)
    assert await limiter.acquire("alice") is None

    redis_server.stop()
    started = time.monotonic()
    with pytest.raises(Exception):  # noqa: B017, PT011 - whatever the client raises
        await limiter.acquire("alice")
    assert time.monotonic() - started < 1.5  # the command's limit; the figure is in the benchmark
    assert await limiter.probe(1.0) is not None

    redis_server.start()  # empty: this test's server keeps nothing on disk
    assert await limiter.probe(1.0) is None
    assert await limiter.acquire("alice") is None  # the script is loaded again, unasked
    assert await remaining(limiter, "5/minute", "alice") == 4


async def test_a_request_taken_back_frees_its_place_in_every_window(
    redis_server: RedisServer,
) -> None:
    first, second = limiters(redis_server, "10/hour;2/minute")
    assert await first.acquire("alice") is None
    assert await second.acquire("alice") is None

    await first.refund("alice")

    assert await remaining(second, "10/hour", "alice") == 9
    assert await second.acquire("alice") is None
    assert await first.acquire("alice") is not None


async def test_a_store_that_hangs_is_given_up_on_and_used_again_when_it_answers(
    redis_server: RedisServer,
) -> None:
    (limiter,) = limiters(redis_server, "5/minute", count=1)
    assert await limiter.acquire("alice") is None

    redis_server.pause()
    try:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.5):  # the command's own limit is 1.5 s
                await limiter.acquire("alice")
    finally:
        redis_server.resume()

    # The connection the abandoned call used is not reused with its answer still unread.
    assert await limiter.acquire("bob") is None
    assert await remaining(limiter, "5/minute", "bob") == 4
    # The abandoned call had reached the server, which ran it once it woke: the request counts
    # though the member was told the limits could not be checked (erring towards the limit),
    # and counts once.
    assert await remaining(limiter, "5/minute", "alice") == 3
