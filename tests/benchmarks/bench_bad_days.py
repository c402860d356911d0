"""Benchmark: how long a member waits for an answer on a bad day. Prints figures; asserts none.

    python -m tests.benchmarks.bench_bad_days [--tries 20]

Against real servers on loopback (Debian's redis-server and PostgreSQL), with the timeouts the
/imagine command uses (bot/requests/admission.py: 1.5 s for the limits; past 1 s the ledger's
admission is acknowledged while it goes on). For each state of the limit store (answering,
stopped, hung) and of the database (answering, stopped): the time a limit check or a ledger
admission takes to succeed or fail, median and worst of N tries; then how soon after each server
comes back the bot uses it again, and how soon the settlements it kept are written.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import time
from collections.abc import Awaitable, Callable

from limits import parse_many

from bot.images import ImageRequest, load_catalog, prepare_request
from bot.requests.admission import ADMISSION_BEFORE_ACKNOWLEDGING, LIMITER_TIMEOUT
from bot.store.db import migrate_database
from bot.store.ledger import Ledger, Outcome
from bot.store.ratelimit import UserRateLimiter
from tests.databases import POSTGRES_MISSING, PostgresServer, start_postgres
from tests.redis_server import REDIS_MISSING, RedisServer, start_redis

PREPARED = prepare_request(
    ImageRequest(prompt="an otter", model="dall-e-2", count=1, user="u"),
    load_catalog()["dall-e-2"],
)


async def timed(call: Callable[[], Awaitable[object]], limit: float) -> tuple[float, str]:
    started = time.perf_counter()
    try:
        async with asyncio.timeout(limit):
            await call()
        outcome = "ok"
    except TimeoutError:
        outcome = "gave up"
    except Exception as exc:
        outcome = type(exc).__name__
    return time.perf_counter() - started, outcome


async def measure(label: str, call: Callable[[], Awaitable[object]], limit: float, n: int) -> None:
    runs = [await timed(call, limit) for _ in range(n)]
    seconds = sorted(run[0] for run in runs)
    outcomes = sorted({run[1] for run in runs})
    print(
        f"{label:<34} median {statistics.median(seconds) * 1000:7.1f} ms   "
        f"worst {seconds[-1] * 1000:7.1f} ms   ({', '.join(outcomes)})"
    )


async def until(call: Callable[[], Awaitable[object]], limit: float) -> float:
    """Seconds until ``call`` first succeeds."""
    started = time.perf_counter()
    while True:
        seconds, outcome = await timed(call, limit)
        if outcome == "ok":
            return time.perf_counter() - started
        await asyncio.sleep(max(0.0, 0.01 - seconds))


def report(label: str, seconds: float) -> None:
    print(f"{label:<34} {seconds * 1000:7.1f} ms")


async def limit_store(redis: RedisServer, tries: int) -> None:
    limiter = UserRateLimiter(parse_many("1000000/minute;1000000/day"), redis.url)

    async def check() -> object:
        return await limiter.acquire("alice")

    await measure("limit store answering", check, LIMITER_TIMEOUT, tries)
    redis.stop()
    await measure("limit store stopped", check, LIMITER_TIMEOUT, tries)
    redis.start()
    report("limit store back: used again after", await until(check, LIMITER_TIMEOUT))
    redis.pause()
    await measure("limit store hung", check, LIMITER_TIMEOUT, max(3, tries // 5))
    redis.resume()
    report("limit store woke: used again after", await until(check, LIMITER_TIMEOUT))


async def database(postgres: PostgresServer, tries: int) -> None:
    url = postgres.create_database()
    await migrate_database(url)
    ledger = Ledger(url)
    await ledger.open()
    rows: list[int] = []

    async def admit() -> object:
        rows.append(await ledger.admitted(PREPARED, member_id=1, guild_id=2, channel_id=3))
        return rows[-1]

    try:
        await measure("ledger admission answering", admit, 30.0, tries)
        postgres.stop()
        await measure("ledger admission, database stopped", admit, 30.0, tries)
        for row in rows:
            with contextlib.suppress(Exception):  # kept, to be written when the database is back
                await ledger.settle(row, Outcome.DELIVERED, PREPARED, images_returned=1)
        kept = len(ledger.unsettled)
        postgres.start()
        report("database back: admits again after", await until(admit, 30.0))
        started = time.perf_counter()
        while ledger.unsettled:  # noqa: ASYNC110 - polled: the ledger has no event to wait on
            await asyncio.sleep(0.01)
        report(f"{kept} settlements kept: written after", time.perf_counter() - started)
    finally:
        await ledger.close()
    print(f"(admissions over {ADMISSION_BEFORE_ACKNOWLEDGING:.1f} s are acknowledged first)")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tries", type=int, default=20)
    tries = parser.parse_args().tries
    with contextlib.contextmanager(start_redis)() as redis:
        if redis is None:
            print(REDIS_MISSING)
        else:
            await limit_store(redis, tries)
    with contextlib.contextmanager(start_postgres)() as postgres:
        if postgres is None:
            print(POSTGRES_MISSING)
        else:
            await database(postgres, tries)


if __name__ == "__main__":
    asyncio.run(main())
