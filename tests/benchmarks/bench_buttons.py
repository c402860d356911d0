"""Benchmark: N members press the buttons under one posted set of images at once. Prints
figures; asserts none.

    python -m tests.benchmarks.bench_buttons [--n 50 200] [--latency 1.0]

The bot runs unmodified in simcord's in-memory Discord against the benchmark's fake Images API
in another process (tests.benchmarks.bench_imagine). One member posts images; then N members
each press Reroll at once, then N press Edit prompt at once. Reported: the time from discord.py
handing the press to the bot's view store to the acknowledgement (Reroll: the defer, after the
request was read back from the database, counted against the limits and recorded in the
ledger; Edit prompt: the modal), the event loop's worst stall, and the saved requests alone
(N concurrent saves, then N concurrent reads, on SQLite, with no Discord in the process).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import discord
import simcord

from bot.app import ImagineBot
from bot.images import ImageRequest, load_catalog, prepare_request
from bot.requests.saved_requests import SavedRequests
from bot.store.db import default_database_url, migrate_database
from bot.store.ledger import Ledger
from tests.benchmarks.bench_imagine import (
    Probe,
    images_api_process,
    instrumented,
    percentiles,
    ticker,
    unsettled,
)
from tests.cogs.conftest import RECOMMENDED_SHARDS, make_settings
from tests.fakes.images_api import incompressible_png


@contextmanager
def press_times(probe: Probe, modals: dict[int, float]) -> Iterator[None]:
    """A press arrives when discord.py hands it to the view store; Edit prompt is acknowledged
    by its modal."""
    real_dispatch = discord.ui.view.ViewStore.dispatch_view
    real_modal = discord.InteractionResponse.send_modal

    def dispatch(self: Any, component_type: int, custom_id: str, interaction: Any) -> None:
        probe.arrived[interaction.user.id] = time.perf_counter()
        real_dispatch(self, component_type, custom_id, interaction)

    async def send_modal(self: Any, modal: Any) -> Any:
        result = await real_modal(self, modal)
        modals[self._parent.user.id] = time.perf_counter()
        return result

    discord.ui.view.ViewStore.dispatch_view = dispatch  # type: ignore[method-assign]
    discord.InteractionResponse.send_modal = send_modal  # type: ignore[method-assign]
    try:
        yield
    finally:
        discord.ui.view.ViewStore.dispatch_view = real_dispatch  # type: ignore[method-assign]
        discord.InteractionResponse.send_modal = real_modal  # type: ignore[method-assign]


async def presses(base_url: str, n: int) -> None:
    probe, modals = Probe(), dict[int, float]()
    with tempfile.TemporaryDirectory() as data_dir:
        settings = make_settings(
            base_url, Path(data_dir), openai_api_key="bench-key",
            user_rate_limit="1000/minute", log_level="WARNING",
        )  # fmt: skip
        bot = ImagineBot(settings)
        with instrumented(probe), press_times(probe, modals):
            async with simcord.run(bot, shard_count=RECOMMENDED_SHARDS, settle_timeout=60) as env:
                admission: Any = bot.admission
                guild = env.create_guild("bench")
                channel = guild.create_text_channel("imagine")
                members = [guild.add_member(env.create_user(f"user{i}")) for i in range(n)]
                posted = (await members[0].slash(channel, "imagine", prompt="a fox")).response
                assert posted is not None, "the images were not posted"
                stop = asyncio.Event()
                tick = asyncio.ensure_future(ticker(probe, lambda: admission.queue.in_flight, stop))
                for label in ("Reroll", "Edit prompt"):
                    probe.arrived.clear()
                    probe.acknowledged.clear()
                    done = probe.acknowledged if label == "Reroll" else modals
                    with unsettled(env):
                        for member in members:
                            await member.click(posted, label=label)
                        started = time.perf_counter()
                        while (  # noqa: ASYNC110
                            len(done) < n or admission.jobs
                        ) and time.perf_counter() - started < 300:
                            await asyncio.sleep(0.01)
                    times = [done[user] - probe.arrived[user] for user in done]
                    print(
                        f"  {label:<12} N = {n:<4} press -> acknowledged  {percentiles(times)}"
                        f"  ({len(times)} of {n} acknowledged)"
                    )
                stop.set()
                await tick
        print(f"  worst loop stall {probe.worst_stall * 1000:.1f} ms")


async def saved_alone(n: int) -> None:
    with tempfile.TemporaryDirectory() as data_dir:
        url = default_database_url(Path(data_dir))
        await migrate_database(url)
        ledger = Ledger(url)
        await ledger.open()
        store = SavedRequests(ledger)
        spec = load_catalog()["gpt-image-2.5-flare"]
        prepared = prepare_request(ImageRequest(prompt="a fox " * 500, model=spec.name), spec)

        async def timed(work: Any) -> float:
            started = time.perf_counter()
            await work
            return time.perf_counter() - started

        saves = await asyncio.gather(
            *(timed(store.save(prepared, member_id=i, guild_id=1, channel_id=1)) for i in range(n))
        )
        # Another process's store: what a restarted bot reads (this one remembers its own).
        fresh = SavedRequests(ledger)
        loads = await asyncio.gather(*(timed(fresh.load(key)) for key in range(1, n + 1)))
        await ledger.close()
    print(f"  saved requests alone, N = {n}: save {percentiles(saves)}")
    print(f"  saved requests alone, N = {n}: read {percentiles(loads)} (not remembered)")


async def main_async(args: argparse.Namespace) -> None:
    image = incompressible_png(256, 256)
    print(f"upstream latency L = {args.latency:.2f} s; {os.cpu_count()} cores")
    with images_api_process(args.latency, image, image) as base_url:
        await presses(base_url, 5)  # not reported: imports, caches, the fake's first answers
        for n in args.n:
            await presses(base_url, n)
            await saved_alone(n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[50, 200])
    parser.add_argument("--latency", type=float, default=1.0, help="upstream latency L, seconds")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
