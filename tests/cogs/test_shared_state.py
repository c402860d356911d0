"""Two bot processes sharing one Redis and one PostgreSQL enforce the same limits and budget
exactly: twenty requests from one member, ten on each process at the same time, admit what the
limits and the budget allow, not one more."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from limits import parse_many
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter

from bot.store.db import open_engine
from bot.store.ledger import counted_since
from tests.conftest import SENTINELS
from tests.databases import POSTGRES_MISSING, PostgresServer, ledger_rows
from tests.fakes.images_api import FakeImagesAPI, images_body, make_image
from tests.redis_server import RedisServer

MEMBER_ID = 1_100_000_000_000_000_001
GUILD_ID = 1_100_000_000_000_000_002
APPLICATION_ID = 1_100_000_000_000_000_003  # one bot, two processes
PROJECT = Path(__file__).resolve().parents[2]
START_SECONDS = 60.0  # two bots starting on two shared cores
RUN_SECONDS = 120.0


async def start_instance(plan: dict[str, Any]) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.cogs.instance", json.dumps(plan),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, cwd=PROJECT,
        env={**os.environ, "PYTHONPATH": str(PROJECT)},
    )  # fmt: skip
    return process


async def wait_for_line(process: asyncio.subprocess.Process, expected: bytes = b"ready") -> None:
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), START_SECONDS)
    if line.strip() != expected:
        assert process.stderr is not None
        error = (await process.stderr.read()).decode(errors="replace")
        raise AssertionError(f"an instance did not say {expected!r}: {line!r}\n{error[-3000:]}")


def outcomes_of(out: bytes, err: bytes) -> list[str]:
    """What each request of an instance got; no secret in anything it wrote."""
    for sentinel in SENTINELS:
        assert sentinel.encode() not in out + err, "a secret reached an instance's output"
    outcomes: list[str] = json.loads(out.decode().splitlines()[-1])
    return outcomes


async def run_to_the_end(plan: dict[str, Any]) -> list[str]:
    """Start an instance, let it send its requests, and wait until it has stopped."""
    process = await start_instance(plan)
    try:
        await wait_for_line(process)
        return outcomes_of(*await asyncio.wait_for(process.communicate(b"go\n"), RUN_SECONDS))
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


@pytest.fixture
def database_url(postgres_server: PostgresServer | None) -> str:
    """A new, empty database on the real PostgreSQL server: the processes migrate it at once."""
    if postgres_server is None:
        pytest.skip(POSTGRES_MISSING)
    return postgres_server.create_database()


async def hourly_remaining(redis_server: RedisServer, limit: str) -> int:
    item = parse_many(limit)[0]
    store = RedisStorage(redis_server.url)
    reader = MovingWindowRateLimiter(store)
    return (await reader.get_window_stats(item, str(APPLICATION_ID), str(MEMBER_ID))).remaining


async def test_two_processes_admit_exactly_what_the_limits_and_the_budget_allow(
    images_api: FakeImagesAPI, redis_server: RedisServer, database_url: str, tmp_path: Path
) -> None:
    settings = {
        "rate_limit_storage_uri": redis_server.url,
        "database_url": database_url,
        "user_rate_limit": "6/minute;30/hour",
        "member_budget": "4 images/day",
    }
    processes = [
        await start_instance(
            {
                "base_url": images_api.base_url,
                "data_dir": str(tmp_path / f"data-{n}"),
                "settings": settings,
                "guild_id": GUILD_ID,
                "member_id": MEMBER_ID,
                "application_id": APPLICATION_ID,
                "requests": 10,
            }
        )
        for n in range(2)
    ]
    try:
        await asyncio.gather(*(wait_for_line(process) for process in processes))
        answers = await asyncio.wait_for(
            asyncio.gather(*(process.communicate(b"go\n") for process in processes)), RUN_SECONDS
        )
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()
                await process.wait()

    outcomes = [outcome for out, err in answers for outcome in outcomes_of(out, err)]
    assert len(outcomes) == 20
    # Six pass the limits (the minute's is the tighter); the budget takes four of those.
    assert outcomes.count("delivered") == 4
    assert sum("limit of 6 image requests per minute" in o for o in outcomes) == 14
    assert sum("Your budget on this server is 4 images per day" in o for o in outcomes) == 2
    assert len(images_api.generation_requests) == 4

    rows = await ledger_rows(database_url)
    assert [(row["outcome"], row["member_id"]) for row in rows] == [("delivered", MEMBER_ID)] * 4
    # The fourteen refused by the minute's limit took nothing of the hour's.
    assert await hourly_remaining(redis_server, "30/hour") == 30 - 6


async def test_a_process_restarting_loses_nothing_of_another_process_s_work(
    images_api: FakeImagesAPI, redis_server: RedisServer, database_url: str, tmp_path: Path
) -> None:
    release = asyncio.Event()

    async def held(request: web.Request) -> web.StreamResponse:
        await release.wait()
        return web.Response(body=images_body(make_image(256, 256)), content_type="application/json")

    images_api.push(held)  # the first request, the long-running one's, waits for the test
    settings = {
        "rate_limit_storage_uri": redis_server.url,
        "database_url": database_url,
        "user_rate_limit": "10/minute;30/hour",
        "shutdown_grace_seconds": 2,
    }

    def plan(name: str, **extra: Any) -> dict[str, Any]:
        return {
            "base_url": images_api.base_url, "data_dir": str(tmp_path / name),
            "settings": settings, "guild_id": GUILD_ID, "member_id": MEMBER_ID,
            "application_id": APPLICATION_ID, "requests": 1, **extra,
        }  # fmt: skip

    # simcord's clock stands still in a process holding its requests (its timers, the ledger's
    # lease renewals among them, move only with advance_time): a lease outlasting the test stands
    # for the renewals a running bot makes.
    running = await start_instance(plan("running", hold=True, lease_seconds=3600.0))
    try:
        await wait_for_line(running)
        assert running.stdin is not None
        running.stdin.write(b"go\n")
        await wait_for_line(running, b"sent")  # its request is waiting on the image service

        # Another process serves a request, stops, starts again (migrating again) and stops.
        # (Each with a DATA_DIR of its own: a bot that finds its commands synced in DATA_DIR does
        # not sync them again, and each process's simcord is a new Discord that knows none.)
        assert await run_to_the_end(plan("before-restart")) == ["delivered"]
        assert await run_to_the_end(plan("after-restart")) == ["delivered"]
        rows = await ledger_rows(database_url)
        assert [row["outcome"] for row in rows] == ["pending", "delivered", "delivered"]

        release.set()
        out, err = await asyncio.wait_for(running.communicate(b"finish\n"), RUN_SECONDS)
    finally:
        if running.returncode is None:
            running.kill()
            await running.wait()

    assert outcomes_of(out, err) == ["delivered"]
    rows = await ledger_rows(database_url)
    assert [row["outcome"] for row in rows] == ["delivered"] * 3
    assert await hourly_remaining(redis_server, "30/hour") == 30 - 3


async def test_a_process_killed_mid_request_leaves_rows_the_next_process_settles(
    images_api: FakeImagesAPI, redis_server: RedisServer, database_url: str, tmp_path: Path
) -> None:
    release = asyncio.Event()

    async def held(request: web.Request) -> web.StreamResponse:
        await release.wait()  # never, while the process that sent it lives
        return web.Response(body=images_body(make_image(256, 256)), content_type="application/json")

    images_api.push(held)
    lease = 2.0
    settings = {
        "rate_limit_storage_uri": redis_server.url,
        "database_url": database_url,
        "max_concurrent_generations": 1,  # the second request waits its turn: never sent
        "member_budget": "$5/day",
    }
    killed = await start_instance(
        {
            "base_url": images_api.base_url, "data_dir": str(tmp_path / "killed"),
            "settings": settings, "guild_id": GUILD_ID, "member_id": MEMBER_ID,
            "application_id": APPLICATION_ID, "requests": 2, "hold": True, "lease_seconds": lease,
        }
    )  # fmt: skip
    try:
        await wait_for_line(killed)
        assert killed.stdin is not None
        killed.stdin.write(b"go\n")
        await wait_for_line(killed, b"sent")
        killed.send_signal(signal.SIGKILL)
        await killed.wait()
    finally:
        if killed.returncode is None:
            killed.kill()
            await killed.wait()
    rows = await ledger_rows(database_url)
    assert [row["outcome"] for row in rows] == ["pending", "pending"]
    assert rows[0]["sent_at"] is not None and rows[1]["sent_at"] is None
    reserved = [row["estimated_cost"] for row in rows]

    await asyncio.sleep(lease)  # its lease expires; the next process settles its rows at start
    release.set()
    after = {
        "base_url": images_api.base_url, "data_dir": str(tmp_path / "next"),
        "settings": settings, "guild_id": GUILD_ID, "member_id": MEMBER_ID,
        "application_id": APPLICATION_ID, "requests": 1,
    }  # fmt: skip
    assert await run_to_the_end(after) == ["delivered"]

    rows = await ledger_rows(database_url)
    assert [row["outcome"] for row in rows] == ["abandoned", "abandoned", "delivered"]
    # The one that may have reached the image service keeps its reservation (its cost is
    # unknown, so its estimate counts); the one that never left the queue cost nothing.
    assert (rows[0]["cost"], rows[1]["cost"]) == (None, 0)
    engine = open_engine(database_url)
    try:
        async with engine.connect() as connection:
            since = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)  # every row: each simcord has its clock
            counted = await counted_since(connection, since, GUILD_ID, MEMBER_ID, images=False)
    finally:
        await engine.dispose()
    assert counted == reserved[0] + rows[2]["cost"]
