"""Benchmark: N concurrent /imagine requests through the real bot. Prints figures; asserts none.

    python -m tests.benchmarks.bench_imagine [--n 50 200] [--latency 1.0] [--cap 4] [--slots 2]

The bot runs unmodified in simcord's in-memory Discord, N distinct members each send one
/imagine, and a fake Images API in a separate process answers every request after a fixed
latency L with incompressible 1.5 MB PNGs (one request in ten asks gpt-image-2 for 3840x2160,
served as a photo-like PNG over the upload limit, so it is re-encoded).

Phases per N:
- defaults: the bot as configured out of the box (256 requests may wait on the service,
  one processing slot per core); reports time to acknowledge (defer), overhead (delivery -
  dispatch - L), the event loop's worst stall, RSS, and each stage: how many requests waited in
  the bot's own line for the service, how many waited for a processing slot;
- capped (--cap N, off unless given): the upstream limit forced down, as a rate-limited
  service would force it; requests/s then follows the cap;
- engine alone: the same requests through the image engine with no Discord in the process;
- streaming (N = 50 unless --stream-n): the same requests with previews on (PARTIAL_IMAGES=2):
  each answer is a stream of two partial images (as large as the image) and the image, spread
  over --stream-latency (4 s: both previews can be shown, 1.5 s apart), and every preview is
  made into a 512-pixel JPEG off the loop and edited into the reply, within the edit budget.
  The other phases run with previews off, as before streaming existed.
- zoom out (N = 50 unless --zoom-n): N members each press Zoom out 2x under one posted image:
  each press downloads the image, puts it on a 1024x1024 canvas with its mask (Pillow, in a
  worker thread, within the processing room), and sends both to /images/edits; acknowledgement
  and overhead are measured from the press's arrival, as for /imagine.

simcord's fake CDN keeps a digest of each upload instead of its bytes, so the process's memory
is the bot's, not the fake Discord's archive of every image posted.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import multiprocessing
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import discord
import simcord
import simcord._dpy_internals as simcord_internals
from aiohttp import web
from discord.ui.view import ViewStore
from PIL import Image
from simcord.backend.cdn import CdnStore

from bot.app import ImagineBot
from bot.images import ImageRequest, ProcessingSlots
from bot.services import make_client
from tests.cogs.conftest import RECOMMENDED_SHARDS, make_settings
from tests.cogs.support import upload_limit
from tests.fakes.images_api import FakeImagesAPI, incompressible_png

UPLOAD_LIMIT = 10 * 1024 * 1024  # a server without boosts
FOUR_K = (3840, 2160)


# -- images ----------------------------------------------------------------------------------------


def photo_like_png(width: int, height: int) -> bytes:
    """Smooth gradients with a little grain: compresses like a rendered image, not like noise."""
    gradient = Image.linear_gradient("L").resize((width, height))
    grain = Image.frombytes("L", (width, height), os.urandom(width * height)).point(
        lambda v: v // 3
    )
    red = Image.blend(gradient, grain, 0.5)
    image = Image.merge(
        "RGB", (red, gradient.transpose(Image.Transpose.ROTATE_90).resize((width, height)), grain)
    )
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


# -- the fake Images API, in its own process -------------------------------------------------


class BenchImagesAPI(FakeImagesAPI):
    def __init__(self, latency: float, standard: bytes, large: bytes) -> None:
        super().__init__(api_key="bench-key", latency=latency)
        self._standard = standard
        self._large = large
        self._answers: dict[str, tuple[bytes, str]] = {}

    def _image(self, width: int, height: int, fmt: str, shade: int) -> bytes:
        return self._large if (width, height) == FOUR_K else self._standard

    def _generate(self, body: Any) -> Any:
        # Encode each kind of answer once: the upstream's cost is L, not this process's base64.
        # The fields that differ per member are not part of the answer's kind.
        per_member = ("prompt", "user", "safety_identifier")
        key = json.dumps({k: v for k, v in body.items() if k not in per_member})
        cached = self._answers.get(key)
        if cached is None:
            response = super()._generate(body)
            self.served.clear()  # a long run must not keep every image it served
            self.served_partials.clear()
            if response.status != 200:
                return response
            assert isinstance(response.body, bytes)
            cached = self._answers[key] = (response.body, response.content_type)
        data, content_type = cached
        return web.Response(status=200, body=data, content_type=content_type)


def _serve(latency: float, standard: bytes, large: bytes, port_out: Any) -> None:
    async def main() -> None:
        api = BenchImagesAPI(latency, standard, large)
        await api.start()
        port_out.send(api.base_url)
        await asyncio.Event().wait()

    asyncio.run(main())


@contextmanager
def images_api_process(latency: float, standard: bytes, large: bytes) -> Iterator[str]:
    receive, send = multiprocessing.Pipe(duplex=False)
    process = multiprocessing.get_context("spawn").Process(
        target=_serve, args=(latency, standard, large, send), daemon=True
    )
    process.start()
    try:
        yield receive.recv()
    finally:
        process.terminate()
        process.join(5)


# -- measurement -----------------------------------------------------------------------------


def rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@dataclass
class Probe:
    """Times taken inside the bot, keyed by the requesting member's id."""

    dispatched: dict[int, float] = field(default_factory=dict)  # the harness sent it
    arrived: dict[int, float] = field(default_factory=dict)  # discord.py handed it to the tree
    acknowledged: dict[int, float] = field(default_factory=dict)
    delivered: dict[int, float] = field(default_factory=dict)
    uploaded_digests: dict[int, list[str]] = field(default_factory=dict)
    previews: int = 0  # preview edits made
    worst_stall: float = 0.0
    peak_rss: int = 0
    peak_in_flight: int = 0
    peak_processing: int = 0
    fingerprints: bool = True  # False: uploads are kept whole (an image a zoom run downloads)


@contextmanager
def instrumented(probe: Probe) -> Iterator[None]:
    real_arrival = discord.app_commands.CommandTree._from_interaction
    real_defer = discord.InteractionResponse.defer
    real_edit = discord.Interaction.edit_original_response
    real_store = CdnStore.store_attachment
    real_pressed = ViewStore.dispatch_dynamic_items

    def arrival(self: Any, interaction: Any) -> None:
        probe.arrived[interaction.user.id] = time.perf_counter()
        real_arrival(self, interaction)

    def pressed(self: Any, component_type: int, custom_id: str, interaction: Any) -> None:
        probe.arrived[interaction.user.id] = time.perf_counter()
        real_pressed(self, component_type, custom_id, interaction)

    async def defer(self: Any, **kwargs: Any) -> Any:
        result = await real_defer(self, **kwargs)
        probe.acknowledged[self._parent.user.id] = time.perf_counter()
        return result

    async def edit(self: Any, **kwargs: Any) -> Any:
        message = await real_edit(self, **kwargs)
        attachments = kwargs.get("attachments")
        if attachments and attachments[0].filename.startswith("preview."):
            probe.previews += 1
        elif attachments:
            probe.delivered[self.user.id] = time.perf_counter()
        return message

    def store(
        self: Any, attachment_id: int, channel_id: int, filename: str, data: bytes, *rest: Any
    ) -> Any:
        # A fingerprint, not a hash: hashing every upload would cost the loop more than the bot.
        if probe.fingerprints:
            data = b"%d:" % len(data) + data[:32] + data[-32:]
        return real_store(self, attachment_id, channel_id, filename, data, *rest)

    discord.app_commands.CommandTree._from_interaction = arrival  # type: ignore[method-assign]
    discord.InteractionResponse.defer = defer  # type: ignore[method-assign]
    discord.Interaction.edit_original_response = edit  # type: ignore[method-assign]
    CdnStore.store_attachment = store  # type: ignore[method-assign,assignment]
    ViewStore.dispatch_dynamic_items = pressed  # type: ignore[method-assign]
    try:
        yield
    finally:
        discord.app_commands.CommandTree._from_interaction = real_arrival  # type: ignore[method-assign]
        discord.InteractionResponse.defer = real_defer  # type: ignore[method-assign]
        discord.Interaction.edit_original_response = real_edit  # type: ignore[method-assign]
        CdnStore.store_attachment = real_store  # type: ignore[method-assign]
        ViewStore.dispatch_dynamic_items = real_pressed  # type: ignore[method-assign]


async def ticker(
    probe: Probe,
    in_flight: Callable[[], int],
    stop: asyncio.Event,
    processing: Callable[[], int] = lambda: 0,
) -> None:
    """Measures the loop's lateness every 5 ms, and samples memory every 50 ms."""
    interval = 0.005
    ticks = 0
    while not stop.is_set():
        started = time.perf_counter()
        await asyncio.sleep(interval)
        probe.worst_stall = max(probe.worst_stall, time.perf_counter() - started - interval)
        probe.peak_in_flight = max(probe.peak_in_flight, in_flight())
        probe.peak_processing = max(probe.peak_processing, processing())
        ticks += 1
        if ticks % 10 == 0:
            probe.peak_rss = max(probe.peak_rss, rss_bytes())


# The loop methods simcord wraps on the bot's loop to follow its work and run its timers on a
# virtual clock.
SIMCORD_LOOP_HOOKS = (
    "create_task",
    "call_soon",
    "call_later",
    "call_at",
    "call_soon_threadsafe",
    "run_in_executor",
)


@contextmanager
def unsettled(env: Any) -> Iterator[None]:
    """Let the bot run on the plain event loop, as it does against Discord.

    simcord normally settles after every dispatch (waits until the bot is idle), which is what
    makes tests deterministic and what would serialise a load test. It also wraps the loop's
    scheduling methods: every callback is recorded, and a timer that comes due is run by
    advancing a virtual clock, one advance at a time. Under hundreds of concurrent requests that
    queue of advances held timers back by seconds (a 1 s fallback fired after 45 s), which the
    bot never sees against Discord. Here the dispatch returns at once and the loop's own methods
    are used, so timers fire on the real clock and callbacks cost what they cost.
    """
    real = env._settle_internal
    loop = asyncio.get_running_loop()
    hooks = {name: loop.__dict__[name] for name in SIMCORD_LOOP_HOOKS if name in loop.__dict__}

    async def dispatched_only(*args: Any, **kwargs: Any) -> None:
        await asyncio.sleep(0)

    # simcord's time.monotonic, which the loop's clock reads, answers its virtual time inside
    # the bot: back to the real one. (discord.py's datetime stays simcord's: interactions carry
    # its virtual time, and the bot measures their tokens' lifetime against it.)
    virtual_monotonic = time.monotonic
    real_monotonic = (simcord_internals._clock_originals or (virtual_monotonic,))[0]

    env._settle_internal = dispatched_only
    for name in hooks:
        delattr(loop, name)
    time.monotonic = real_monotonic
    try:
        yield
    finally:
        time.monotonic = virtual_monotonic
        env._settle_internal = real
        for name, hook in hooks.items():
            setattr(loop, name, hook)


def percentiles(values: list[float]) -> str:
    if not values:
        return "n/a"
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return (
        f"p50 {statistics.median(ordered) * 1000:7.1f} ms  p99 {p99 * 1000:7.1f} ms  "
        f"max {ordered[-1] * 1000:7.1f} ms"
    )


async def run_phase(
    base_url: str,
    n: int,
    latency: float,
    cap: int | None = None,
    slots: int | None = None,
    partial_images: int = 0,
    zoom: bool = False,
) -> dict[str, Any]:
    """N members each send one /imagine; with ``zoom``, each presses Zoom out 2x under one image
    posted before the measurement instead."""
    probe = Probe()
    overrides: dict[str, Any] = {"partial_images": partial_images}
    if cap:
        overrides["max_concurrent_generations"] = cap
    if slots:
        overrides["processing_slots"] = slots
    with tempfile.TemporaryDirectory() as data_dir:
        settings = make_settings(
            base_url,
            Path(data_dir),
            openai_api_key="bench-key",
            user_rate_limit="1000/minute",
            max_images_per_request=1,
            log_level="WARNING",
            **overrides,
        )
        bot = ImagineBot(settings)
        with instrumented(probe), upload_limit(UPLOAD_LIMIT):
            # 60 s of simcord's time: a zoom run's first image is posted settled.
            async with simcord.run(bot, shard_count=RECOMMENDED_SHARDS, settle_timeout=60) as env:
                # Loaded as an extension, so not the class this module could import: go by name.
                admission: Any = bot.admission
                guild = env.create_guild("bench")
                channel = guild.create_text_channel("imagine")
                posted: Any = None
                if zoom:  # the image pressed, posted first (settled, as a test would) unmeasured
                    asker = guild.add_member(env.create_user("asker"))
                    probe.fingerprints = False  # its image is downloaded by every press
                    posted = (await asker.slash(channel, "imagine", prompt="a harbour")).response
                    probe.fingerprints = True
                    for times in (probe.arrived, probe.acknowledged, probe.delivered):
                        times.clear()
                members = [guild.add_member(env.create_user(f"user{i}")) for i in range(n)]
                baseline = rss_bytes()
                stop = asyncio.Event()
                tick = asyncio.ensure_future(
                    ticker(
                        probe,
                        lambda: admission.queue.in_flight,
                        stop,
                        lambda: admission.processing.busy,
                    )
                )
                started = time.perf_counter()
                with unsettled(env):
                    for index, member in enumerate(members):
                        probe.dispatched[member.id] = time.perf_counter()
                        if zoom:
                            await member.click(posted, label="Zoom out 2\u00d7")
                            continue
                        options: dict[str, Any] = {"prompt": f"request {index}"}
                        if index % 10 == 9:
                            options |= {"model": "gpt-image-2", "size": "3840x2160"}
                        await member.slash(channel, "imagine", **options)
                    dispatch_loop = time.perf_counter() - started
                    await asyncio.sleep(0.05)
                    while admission.jobs and time.perf_counter() - started < 600:  # noqa: ASYNC110
                        await asyncio.sleep(0.01)
                elapsed = time.perf_counter() - started
                stop.set()
                await tick
                failures = [m for m in members if m.id not in probe.delivered]
    acks = [probe.acknowledged[u] - probe.arrived[u] for u in probe.acknowledged]
    large = set() if zoom else {m.id for i, m in enumerate(members) if i % 10 == 9}
    overheads = [
        probe.delivered[u] - probe.arrived[u] - latency for u in probe.delivered if u not in large
    ]
    overheads_4k = [
        probe.delivered[u] - probe.arrived[u] - latency for u in probe.delivered if u in large
    ]
    harness = [probe.arrived[u] - probe.dispatched[u] for u in probe.arrived]
    budget = bot.services.edits
    return {
        "n": n,
        "previews": probe.previews,
        "edits_spent": budget.spent,
        "edits_refused": budget.refused,
        "partial_images": partial_images,
        "cap": settings.max_concurrent_generations,
        "slots": settings.processing_slot_count,
        "waited_upstream": admission.queue.waited,
        "waited_processing": admission.processing.waited,
        "peak_processing": probe.peak_processing,
        "acks": acks,
        "harness": harness,
        "dispatch_loop": dispatch_loop,
        "overheads": overheads,
        "overheads_4k": overheads_4k,
        "stall": probe.worst_stall,
        "peak_rss": probe.peak_rss,
        "baseline_rss": baseline,
        "peak_in_flight": probe.peak_in_flight,
        "elapsed": elapsed,
        "delivered": len(probe.delivered),
        "failures": len(failures),
    }


def report(phase: str, figures: dict[str, Any]) -> None:
    mib = 1024 * 1024
    held = (figures["peak_rss"] - figures["baseline_rss"]) / max(figures["peak_in_flight"], 1)
    print(
        f"\n[{phase}] N={figures['n']} upstream limit={figures['cap']} "
        f"processing slots={figures['slots']}"
    )
    print(
        f"  delivered            {figures['delivered']}/{figures['n']} "
        f"({figures['failures']} failed)"
    )
    print(
        f"  harness              dispatching all took {figures['dispatch_loop'] * 1000:.0f} ms; "
        f"simcord to bot {percentiles(figures['harness'])}"
    )
    print(f"  acknowledge (defer)  {percentiles(figures['acks'])}")
    if figures["partial_images"]:
        print(
            f"  progress             {figures['previews']} previews shown of "
            f"{figures['partial_images'] * figures['n']} partial images streamed; "
            f"{figures['edits_spent']} progress edits paid for, "
            f"{figures['edits_refused']} skipped for want of budget"
        )
    print(
        f"  stages               {figures['waited_upstream']} waited in the bot's line for the "
        f"service (peak {figures['peak_in_flight']} in flight upstream); "
        f"{figures['waited_processing']} waited for a processing slot "
        f"(peak {figures['peak_processing']} busy)"
    )
    print(f"  overhead, 1.5 MB     {percentiles(figures['overheads'])}")
    if figures["overheads_4k"]:
        print(f"  overhead, 3840x2160  {percentiles(figures['overheads_4k'])}")
    print(f"  worst loop stall     {figures['stall'] * 1000:.1f} ms")
    print(
        f"  RSS                  baseline {figures['baseline_rss'] / mib:.0f} MiB, "
        f"peak {figures['peak_rss'] / mib:.0f} MiB, "
        f"{held / mib:.1f} MiB per request in flight (peak {figures['peak_in_flight']} in flight)"
    )
    print(
        f"  throughput           {figures['delivered'] / figures['elapsed']:.1f} requests/s "
        f"({figures['elapsed']:.1f} s in all)"
    )


async def run_engine_phase(base_url: str, n: int, latency: float, quiet: bool = False) -> None:
    """The same requests through the image engine alone, with no Discord in the process.

    Separates the bot's own cost from the harness's: simcord runs in the bot's process and on
    its event loop, wrapping every callback and handling every upload there.
    """
    probe = Probe()
    settings = make_settings(base_url, Path(tempfile.gettempdir()), openai_api_key="bench-key")
    async with aiohttp.ClientSession() as session:
        client = make_client(session, settings)
        slots = ProcessingSlots(settings.processing_slot_count)

        async def one(index: int) -> tuple[bool, float]:
            large = index % 10 == 9
            request = ImageRequest(
                prompt=f"request {index}",
                model="gpt-image-2" if large else "gpt-image-1",
                size="3840x2160" if large else None,
            )
            started = time.perf_counter()
            lease = slots.lease()
            try:
                result = await client.generate(request, lease=lease)
            finally:
                lease.release()
            assert result.images
            return large, time.perf_counter() - started - latency

        stop = asyncio.Event()
        tick = asyncio.ensure_future(ticker(probe, lambda: 0, stop))
        outcomes = await asyncio.gather(*(one(i) for i in range(n)))
        stop.set()
        await tick
    if quiet:
        return
    print(f"\n[engine alone] N={n}, no Discord: overhead = request time - L")
    print(f"  overhead, 1.5 MB     {percentiles([o for large, o in outcomes if not large])}")
    print(f"  overhead, 3840x2160  {percentiles([o for large, o in outcomes if large])}")
    print(f"  worst loop stall     {probe.worst_stall * 1000:.1f} ms")


async def main_async(args: argparse.Namespace) -> None:
    standard = incompressible_png(724, 724)
    large = photo_like_png(*FOUR_K)
    print(
        f"images: {len(standard) / 1e6:.2f} MB PNG (incompressible), "
        f"{len(large) / 1e6:.2f} MB 3840x2160 PNG; upstream latency L = {args.latency:.2f} s; "
        f"upload limit {UPLOAD_LIMIT // (1024 * 1024)} MiB; {os.cpu_count()} cores"
    )
    with images_api_process(args.latency, standard, large) as base_url:
        # Not measured: the first requests pay for imports, caches and the fake's first answers.
        await run_phase(base_url, 10, args.latency, slots=args.slots)
        await run_engine_phase(base_url, 10, args.latency, quiet=True)
        for n in args.n:
            report("defaults", await run_phase(base_url, n, args.latency, slots=args.slots))
            if args.cap:
                report(
                    "capped",
                    await run_phase(base_url, n, args.latency, cap=args.cap, slots=args.slots),
                )
            await run_engine_phase(base_url, n, args.latency)
        if args.zoom_n:
            await run_phase(base_url, 10, args.latency, zoom=True)  # not measured: warming up
            figures = await run_phase(base_url, args.zoom_n, args.latency, zoom=True)
            report("zoom out 2x, 724x724 PNG onto 1024x1024", figures)
    if args.stream_n:
        with images_api_process(args.stream_latency, standard, large) as base_url:
            await run_phase(base_url, 10, args.stream_latency, slots=args.slots, partial_images=2)
            figures = await run_phase(
                base_url, args.stream_n, args.stream_latency, slots=args.slots, partial_images=2
            )
            report("streaming, two previews each", figures)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, nargs="*", default=[50, 200])
    parser.add_argument("--latency", type=float, default=1.0, help="upstream latency L, seconds")
    parser.add_argument(
        "--cap", type=int, default=0, help="also run with MAX_CONCURRENT_GENERATIONS forced to this"
    )
    parser.add_argument("--slots", type=int, default=0, help="PROCESSING_SLOTS (0: the default)")
    parser.add_argument(
        "--stream-n", type=int, default=50, help="requests of the streaming run (0: none)"
    )
    parser.add_argument(
        "--zoom-n", type=int, default=50, help="presses of Zoom out 2x in the zoom run (0: none)"
    )
    parser.add_argument(
        "--stream-latency", type=float, default=4.0, help="upstream latency of the streaming run"
    )
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
