"""Per-user limits: atomic under concurrency, per user, and say when to come back."""

from __future__ import annotations

import asyncio
import time

from limits import parse_many
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter

from bot.store.ratelimit import Refusal, UserRateLimiter, masked_storage_uri


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


class SilentStorage(MemoryStorage):
    """A store that never answers, as a Redis host that drops packets."""

    async def check(self) -> bool:
        await asyncio.sleep(3600)
        return True


class RefusingStorage(MemoryStorage):
    """A store nothing listens for: the client library's check says so at once."""

    async def check(self) -> bool:
        raise ConnectionRefusedError(111, "Connection refused")


async def test_a_store_in_this_process_answers() -> None:
    limiter = UserRateLimiter(parse_many("5/hour"))
    assert await limiter.probe() is None
    assert limiter.store == "memory:// (in this process)"


async def test_a_store_that_refuses_is_named_without_its_password() -> None:
    uri = "redis://bot:hunter2-SENTINEL@cache.example:6379/0"
    limiter = UserRateLimiter(parse_many("5/hour"), uri, storage=RefusingStorage())
    assert await limiter.probe() == (
        "the rate-limit store at redis://bot:***@cache.example:6379/0 (RATE_LIMIT_STORAGE_URI) "
        "does not answer"
    )


async def test_a_store_that_never_answers_is_given_up_on() -> None:
    limiter = UserRateLimiter(parse_many("5/hour"), "redis://10.0.0.9", storage=SilentStorage())
    started = time.monotonic()
    problem = await limiter.probe(seconds=0.05)
    assert problem is not None and "redis://10.0.0.9 (RATE_LIMIT_STORAGE_URI) does not" in problem
    assert time.monotonic() - started < 1


def test_passwords_are_masked_in_every_shape_of_storage_uri() -> None:
    assert masked_storage_uri("rediss://:p@ss@h:6380") == "rediss://:***@h:6380"
    assert masked_storage_uri("redis+cluster://u:pw@h1:7000,h2:7001") == (
        "redis+cluster://u:***@h1:7000,h2:7001"
    )
    assert masked_storage_uri("mongodb://h:27017/db") == "mongodb://h:27017/db"


async def test_a_request_taken_back_frees_its_place_in_every_window() -> None:
    limiter = UserRateLimiter(parse_many("10/hour;2/minute"))
    assert await limiter.acquire("alice") is None
    assert await limiter.acquire("alice") is None

    await limiter.refund("alice")
    await limiter.refund("bob")  # nothing counted: nothing to take back

    hourly = parse_many("10/hour")[0]
    assert (await limiter._limiter.get_window_stats(hourly, "alice")).remaining == 9
    assert await limiter.acquire("alice") is None
    assert await limiter.acquire("alice") is not None
