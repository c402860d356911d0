"""Per-user limits: atomic under concurrency, per user, and say when to come back."""

from __future__ import annotations

import asyncio
import time

from limits import parse_many
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter

from bot.ratelimit import Refusal, UserRateLimiter


class NetworkedStorage(MemoryStorage):
    """Memory storage that yields to the loop on every call, as a Redis round trip does."""

    async def acquire_entry(self, *args: object, **kwargs: object) -> bool:
        await asyncio.sleep(0)
        return await super().acquire_entry(*args, **kwargs)  # type: ignore[arg-type]

    async def get_moving_window(self, *args: object, **kwargs: object) -> tuple[float, int]:
        await asyncio.sleep(0)
        return await super().get_moving_window(*args, **kwargs)  # type: ignore[arg-type]


def networked(limits: str) -> UserRateLimiter:
    limiter = UserRateLimiter(parse_many(limits))
    limiter._limiter = MovingWindowRateLimiter(NetworkedStorage())
    return limiter


async def test_twenty_simultaneous_requests_never_exceed_the_limit() -> None:
    limiter = networked("5/minute")
    outcomes = await asyncio.gather(*(limiter.acquire("alice") for _ in range(20)))
    assert sum(outcome is None for outcome in outcomes) == 5
    assert await limiter.acquire("bob") is None


async def test_the_tightest_of_several_limits_refuses_and_says_until_when() -> None:
    limiter = UserRateLimiter(parse_many("10/hour;2/minute"))
    assert await limiter.acquire("alice") is None
    assert await limiter.acquire("alice") is None
    refusal = await limiter.acquire("alice")
    assert refusal is not None
    assert refusal.describe() == "2 image requests per minute"
    assert time.time() < refusal.reset_at <= time.time() + 61


async def test_a_refusal_does_not_use_up_the_other_limits() -> None:
    limiter = UserRateLimiter(parse_many("3/hour;1/minute"))
    assert await limiter.acquire("alice") is None
    for _ in range(5):
        assert await limiter.acquire("alice") is not None
    hourly = parse_many("3/hour")[0]
    stats = await limiter._limiter.get_window_stats(hourly, "alice")
    assert stats.remaining == 2


async def test_windows_of_several_units_read_naturally() -> None:
    limiter = UserRateLimiter(parse_many("1/day"))
    assert await limiter.acquire("alice") is None
    refusal = await limiter.acquire("alice")
    assert refusal is not None
    assert refusal.describe() == "1 image request per day"
    assert time.time() + 86_000 < refusal.reset_at <= time.time() + 86_401
    assert Refusal(parse_many("20/6 hours")[0], 0).describe() == "20 image requests per 6 hours"
    assert Refusal(parse_many("1/day")[0], 0).describe() == "1 image request per day"


async def test_simultaneous_requests_refused_by_one_limit_do_not_use_up_another() -> None:
    limiter = networked("20/hour;1/minute")
    outcomes = await asyncio.gather(*(limiter.acquire("alice") for _ in range(20)))
    assert sum(outcome is None for outcome in outcomes) == 1
    hourly = parse_many("20/hour")[0]
    stats = await limiter._limiter.get_window_stats(hourly, "alice")
    assert stats.remaining == 19
    assert limiter._locks == {}  # nothing kept for members who are not asking
