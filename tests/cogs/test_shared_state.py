"""Two bot processes sharing one Redis and one PostgreSQL enforce the same limits and budget
exactly: twenty requests from one member, ten on each process at the same time, admit what the
limits and the budget allow, not one more."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from limits import parse_many
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter

from tests.conftest import SENTINELS
from tests.databases import POSTGRES_MISSING, PostgresServer, ledger_rows
from tests.fakes.images_api import FakeImagesAPI
from tests.redis_server import RedisServer

MEMBER_ID = 1_100_000_000_000_000_001
GUILD_ID = 1_100_000_000_000_000_002
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


async def wait_ready(process: asyncio.subprocess.Process) -> None:
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), START_SECONDS)
    if line.strip() != b"ready":
        assert process.stderr is not None
        error = (await process.stderr.read()).decode(errors="replace")
        raise AssertionError(f"an instance did not start: {line!r}\n{error[-3000:]}")


async def test_two_processes_admit_exactly_what_the_limits_and_the_budget_allow(
    images_api: FakeImagesAPI,
    redis_server: RedisServer,
    postgres_server: PostgresServer | None,
    tmp_path: Path,
) -> None:
    if postgres_server is None:
        pytest.skip(POSTGRES_MISSING)
    database_url = postgres_server.create_database()  # fresh: both processes migrate it at once
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
                "requests": 10,
            }
        )
        for n in range(2)
    ]
    try:
        await asyncio.gather(*(wait_ready(process) for process in processes))
        answers = await asyncio.wait_for(
            asyncio.gather(*(process.communicate(b"go\n") for process in processes)), RUN_SECONDS
        )
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()
                await process.wait()

    outcomes: list[str] = []
    for out, err in answers:
        for sentinel in SENTINELS:
            assert sentinel.encode() not in out + err, "a secret reached an instance's output"
        outcomes += json.loads(out.decode().splitlines()[-1])
    assert len(outcomes) == 20
    # Six pass the limits (the minute's is the tighter); the budget takes four of those.
    assert outcomes.count("delivered") == 4
    assert sum("limit of 6 image requests per minute" in o for o in outcomes) == 14
    assert sum("Your budget on this server is 4 images per day" in o for o in outcomes) == 2
    assert len(images_api.generation_requests) == 4

    rows = await ledger_rows(database_url)
    assert [(row["outcome"], row["member_id"]) for row in rows] == [("delivered", MEMBER_ID)] * 4
    # The fourteen refused by the minute's limit took nothing of the hour's.
    hourly = parse_many("30/hour")[0]
    store = RedisStorage(redis_server.url)
    stats = await MovingWindowRateLimiter(store).get_window_stats(hourly, str(MEMBER_ID))
    assert stats.remaining == 30 - 6
