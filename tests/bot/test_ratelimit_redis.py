"""Per-user limits on a real Redis server shared by several limiters, as several processes share it:
a member's limits are checked and counted as one, a store that goes away and comes back is used
again without a restart, and two bots sharing the server count each member apart."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import coredis
import pytest
from limits import parse_many
from limits.aio.strategies import MovingWindowRateLimiter

from bot.app import ImagineBot
from bot.store.ratelimit import UserRateLimiter
from tests.cogs.conftest import make_settings
from tests.fakes.images_api import FakeImagesAPI
from tests.redis_server import RedisServer

MEMBER = 1_200_000_000_000_000_042


def redis_client(server: RedisServer) -> coredis.Redis[bytes]:
    return coredis.Redis(host="127.0.0.1", port=server.port)


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


async def test_two_bots_on_one_redis_count_a_member_apart(
    redis_server: RedisServer, images_api: FakeImagesAPI, tmp_path: Path
) -> None:
    """Two bots (two Discord applications) sharing one Redis: each counts the member against its
    own limits, under its own application id."""
    bots = []
    for application_id in (1_200_000_000_000_000_001, 1_200_000_000_000_000_002):
        settings = make_settings(
            images_api.base_url,
            tmp_path / str(application_id),
            rate_limit_storage_uri=redis_server.url,
            user_rate_limit="1/minute",
        )
        bot = ImagineBot(settings, sync_on_start=False, serve_metrics=False)
        bot._connection.application_id = application_id  # what logging in to Discord sets
        bots.append(bot)
    try:
        for bot in bots:
            await bot.setup_hook()
        first, second = (bot.services.limiter for bot in bots)

        assert await first.acquire(str(MEMBER)) is None
        assert await second.acquire(str(MEMBER)) is None  # the first bot's count is not its
        refusal = await first.acquire(str(MEMBER))
        assert refusal is not None and refusal.describe() == "1 image request per minute"
    finally:
        for bot in bots:
            await bot.close()
    keys = [key.decode() async for key in redis_client(redis_server).scan_iter()]
    windows = [key for key in keys if not key.startswith("LIMITS:imagine-call/")]
    assert sorted(windows) == [
        f"LIMITS:LIMITER/1200000000000000001/{MEMBER}/1/1/minute",
        f"LIMITS:LIMITER/1200000000000000002/{MEMBER}/1/1/minute",
    ]
    # Beside them, one key per counted call (what makes a retried call count once), naming no one.
    assert len(keys) - len(windows) == 2


class ReplyLosingProxy:
    """A TCP relay to Redis that drops the connection once, after Redis has run a script and
    before its answer reaches the client: what a network blip or a failover does. The client's
    retry policy then sends the same script again on a new connection."""

    def __init__(self, server: RedisServer) -> None:
        self._upstream_port = server.port
        self._armed = True
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"redis://127.0.0.1:{port}"

    async def __aenter__(self) -> ReplyLosingProxy:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _relay(
        self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter
    ) -> None:
        server_in, server_out = await asyncio.open_connection("127.0.0.1", self._upstream_port)
        sent_script = asyncio.Event()

        async def requests() -> None:
            while chunk := await client_in.read(65536):
                if b"EVAL" in chunk.upper():
                    sent_script.set()
                server_out.write(chunk)
                await server_out.drain()

        async def answers() -> None:
            while chunk := await server_in.read(65536):
                # An error (NOSCRIPT before the script is loaded) ran nothing: pass it on.
                if self._armed and sent_script.is_set() and not chunk.startswith(b"-"):
                    self._armed = False
                    client_out.transport.abort()
                    server_out.close()
                    return
                client_out.write(chunk)
                await client_out.drain()

        relays = [asyncio.create_task(requests()), asyncio.create_task(answers())]
        await asyncio.wait(relays, return_when=asyncio.FIRST_COMPLETED)
        for relay in relays:
            relay.cancel()
        client_out.close()
        server_out.close()


async def test_an_acquire_whose_answer_is_lost_counts_once_when_the_client_sends_it_again(
    redis_server: RedisServer,
) -> None:
    (direct,) = limiters(redis_server, "5/minute", count=1)
    async with ReplyLosingProxy(redis_server) as proxy:
        through_proxy = UserRateLimiter(parse_many("5/minute"), proxy.url)

        assert await through_proxy.acquire("alice") is None

    assert await remaining(direct, "5/minute", "alice") == 4


async def test_a_refund_whose_answer_is_lost_takes_back_one_request(
    redis_server: RedisServer,
) -> None:
    (direct,) = limiters(redis_server, "5/minute", count=1)
    for _ in range(3):
        assert await direct.acquire("alice") is None
    async with ReplyLosingProxy(redis_server) as proxy:
        through_proxy = UserRateLimiter(parse_many("5/minute"), proxy.url)

        await through_proxy.refund("alice")

    assert await remaining(direct, "5/minute", "alice") == 3
