"""Benchmark: what the budgets cost an admission. Prints figures; asserts none.

    python -m tests.benchmarks.bench_admission [--n 50] [--rounds 5] [--rows 0 100000]

N admissions at once (N members, each in a server of their own, as N /imagine requests arriving
together would be) through :meth:`bot.store.ledger.Ledger.admitted`, on SQLite (the group commit)
and
on a real PostgreSQL on loopback (a transaction each on the pool, advisory locks), with:

- no budget (the default);
- MEMBER_BUDGET and SERVER_BUDGET (a lock each per member and per server on PostgreSQL);
- TOTAL_BUDGET alone: one lock every admission waits its turn for;
- all four budgets.

Every budget is $1,000,000/month, so nothing is refused and each sum covers the month. With
``--rows`` the month already holds that many settled rows (spread over 1,000 servers and 10,000
members): the bot-wide sum reads every one of them, in turn, under the global lock. Reported:
the wall time for the N, and the median and worst time one admission took.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import statistics
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import insert

from bot.images import ImageRequest, load_catalog, prepare_request
from bot.store.budgets import parse_budgets
from bot.store.db import migrate_database, open_engine
from bot.store.db.schema import usage_ledger
from bot.store.ledger import Ledger
from tests.databases import POSTGRES_MISSING, start_postgres

PREPARED = prepare_request(
    ImageRequest(prompt="an otter", model="dall-e-2", count=1, user="u"),
    load_catalog()["dall-e-2"],
)
BUDGET = parse_budgets("$1000000/month")
CONFIGURATIONS: dict[str, dict[str, Any]] = {
    "no budget (default)": {},
    "MEMBER + SERVER": {"member_budget": BUDGET, "server_budget": BUDGET},
    "TOTAL": {"total_budget": BUDGET},
    "MEMBER + SERVER + USER + TOTAL": {
        "member_budget": BUDGET,
        "server_budget": BUDGET,
        "user_budget": BUDGET,
        "total_budget": BUDGET,
    },
}


async def prefill(url: str, rows: int) -> None:
    """``rows`` settled rows earlier this month (the first day of it)."""
    start = dt.datetime.now(dt.UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    engine = open_engine(url)
    try:
        async with engine.begin() as connection:
            for first in range(0, rows, 10_000):
                batch = [
                    {
                        "requested_at": start + dt.timedelta(seconds=n),
                        "settled_at": start + dt.timedelta(seconds=n + 10),
                        "guild_id": n % 1000,
                        "channel_id": 1,
                        "member_id": n % 10_000,
                        "kind": "generate",
                        "model": "dall-e-2",
                        "size": "1024x1024",
                        "quality": "standard",
                        "images_requested": 1,
                        "images_delivered": 1,
                        "outcome": "delivered",
                        "estimated_cost": Decimal("0.02"),
                        "cost": Decimal("0.02"),
                    }
                    for n in range(first, min(first + 10_000, rows))
                ]
                await connection.execute(insert(usage_ledger), batch)
    finally:
        await engine.dispose()


async def one_round(book: Ledger, n: int, offset: int) -> tuple[float, list[float]]:
    async def admit(k: int) -> float:
        started = time.perf_counter()
        await book.admitted(
            PREPARED, member_id=100_000 + offset + k, guild_id=10_000 + offset + k, channel_id=1
        )
        return time.perf_counter() - started

    started = time.perf_counter()
    each = await asyncio.gather(*(admit(k) for k in range(n)))
    return time.perf_counter() - started, list(each)


async def measure(url: str, label: str, budgets: dict[str, Any], n: int, rounds: int) -> None:
    book = Ledger(url, **budgets)
    await book.open()
    try:
        await one_round(book, 5, 0)  # warm: the pool's connections, the statements
        walls, each = [], []
        for r in range(rounds):
            wall, latencies = await one_round(book, n, (r + 1) * 1000)
            walls.append(wall)
            each += latencies
    finally:
        await book.close()
    each.sort()
    print(
        f"  {label:<32} {n} at once: {statistics.median(walls) * 1000:7.1f} ms   one: median "
        f"{statistics.median(each) * 1000:6.1f} ms, worst {each[-1] * 1000:6.1f} ms"
    )


async def run(urls: dict[str, Any], n: int, rounds: int, rows: list[int]) -> None:
    for name, make_url in urls.items():
        for count in rows:
            print(f"{name}, {count:,} rows already this month")
            for label, budgets in CONFIGURATIONS.items():
                url = make_url()
                await migrate_database(url)
                await prefill(url, count)
                await measure(url, label, budgets, n, rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rows", type=int, nargs="+", default=[0, 100_000])
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        files = (Path(directory) / f"ledger{k}.db" for k in range(1000))
        urls: dict[str, Any] = {"SQLite": lambda: f"sqlite+aiosqlite:///{next(files)}"}
        for server in start_postgres():  # one, stopped once the figures are printed
            if server is None:
                print(POSTGRES_MISSING)
            else:
                urls["PostgreSQL"] = server.create_database
            asyncio.run(run(urls, options.n, options.rounds, options.rows))


if __name__ == "__main__":
    main()
