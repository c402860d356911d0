"""Benchmark: the bot against a floor, with Discord out of the bot's process. Asserts nothing.

    python -m tests.benchmarks.bench_scale [--n 50 200 500 1000] [--latency 1.0]
                                           [--plot docs/img/scale.png] [--bot-env NAME=VALUE ...]

For each N, twice (the bot, then the floor): a fake Discord (tests/benchmarks/scale_discord.py:
simcord's backend behind HTTP and a gateway on loopback) and the fake Images API (bench_imagine's:
an incompressible 1.5 MB PNG after a latency L, previews streamed when asked) each start in a
process of their own; then the subject starts in its own: the bot as ``python -m bot`` with
default settings (previews on) and a temporary DATA_DIR, or the floor (floor_bot.py: defers,
asks, decodes, uploads). Both reach Discord through discord.py's base URL, set by a three-line
launcher: the code path is otherwise the one that runs against Discord. Five requests warm the
subject up, then N members send /imagine at once over the gateway.

Per request (times taken by the fake Discord): acknowledgement = callback received - interaction
sent; overhead = first message with a non-preview attachment received - sent - L. Per run:
throughput = N / (last delivery - first send). Per process (/proc): peak RSS (VmHWM, since
start), CPU seconds (utime + stime) of the N requests / N, and the worst loop stall during the
N requests (the bot's from its /metrics histogram, so a bucket's upper bound; the floor's from
its 5 ms ticker). The machine's cores are shared by the fakes, the harness and the subject:
the fake Images API's, the fake Discord's and the harness's CPU per request are printed too, to
tell their share from the subject's, and with them what the machine needs at least for the N
requests: every process's CPU seconds for them over the cores (``machine work``), the time no
subject can deliver the last image before on these cores, however little its own share.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from tests.benchmarks.bench_imagine import images_api_process
from tests.fakes.images_api import incompressible_png

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "bench.discord.token"
API_KEY = "bench-key"
WARM_UP = 5
# The launcher: discord.py's REST base URL and default gateway (where a plain Client connects)
# pointed at the fake, then the module run as __main__.
LAUNCHER = (
    "import os, runpy, sys, yarl, discord.gateway, discord.http; "
    "from tests.benchmarks import trace_memory; "
    "os.environ.get('BENCH_TRACEMALLOC') and trace_memory.start(os.environ['BENCH_TRACEMALLOC']); "
    "discord.http.Route.BASE = os.environ['BENCH_DISCORD_API']; "
    "discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(os.environ['BENCH_GATEWAY']); "
    "module = sys.argv.pop(1); runpy.run_module(module, run_name='__main__', alter_sys=True)"
)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
FIGURES = (
    ("ack_p50", "acknowledgement p50", "ms"),
    ("ack_p99", "acknowledgement p99", "ms"),
    ("over_p50", "overhead p50", "ms"),
    ("over_p99", "overhead p99", "ms"),
    ("throughput", "throughput", "req/s"),
    ("rss", "peak RSS", "MiB"),
    ("stall", "worst loop stall", "ms"),
    ("cpu", "CPU per request", "ms"),
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def rss_mib(pid: int, field: str = "VmHWM") -> float:
    """The process's peak RSS (VmHWM, since start), or its RSS now (``field`` "VmRSS")."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return 0.0


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@contextmanager
def process(
    command: list[str], env: dict[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        child = subprocess.Popen(command, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)  # noqa: S603
        try:
            yield child
        finally:
            child.terminate()
            try:
                child.wait(70)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def lag_buckets(text: str) -> dict[float, float]:
    buckets: dict[float, float] = {}
    for line in text.splitlines():
        if line.startswith("imagine_event_loop_lag_seconds_bucket"):
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            buckets[float("inf") if bound == "+Inf" else float(bound)] = float(line.split()[-1])
    return buckets


def worst_bucket(before: dict[float, float], after: dict[float, float]) -> float:
    """The smallest bucket bound holding every lag measured between the two readings."""
    total = after.get(float("inf"), 0) - before.get(float("inf"), 0)
    for bound in sorted(after):
        if after[bound] - before.get(bound, 0) >= total:
            return bound
    return float("nan")


@dataclass
class Run:
    subject: str
    n: int
    figures: dict[str, float]
    delivered: int
    previews: int


async def results(session: aiohttp.ClientSession, control: str) -> dict[str, Any]:
    async with session.get(f"{control}/_bench/results") as response:
        answer: dict[str, Any] = await response.json()
        return answer


async def fire_and_wait(
    session: aiohttp.ClientSession, control: str, n: int, deadline: float
) -> tuple[list[str], dict[str, Any]]:
    known = set((await results(session, control))["dispatched"])
    async with session.post(f"{control}/_bench/fire", params={"n": str(n)}) as response:
        response.raise_for_status()
    while True:
        state = await results(session, control)
        tokens = [token for token in state["dispatched"] if token not in known]
        if len([t for t in tokens if t in state["delivered"]]) >= n or time.monotonic() > deadline:
            return tokens, state
        await asyncio.sleep(0.5)


@contextmanager
def sampled(pid: int, profile: Path | None, name: Path) -> Iterator[None]:
    """py-spy (a path to its binary in ``profile``'s name, None: not sampled) samples ``pid``
    meanwhile, into ``profile``'s directory as folded stacks (one file per subject and N)."""
    if profile is None:
        yield
        return
    out = profile.parent / f"{name.name}.folded"
    command = [str(profile), "record", "--pid", str(pid), "--rate", "200", "--nonblocking"]
    if seconds := float(os.environ.get("BENCH_PY_SPY_SECONDS", "0")):  # the first seconds only
        command += ["--duration", str(max(1, round(seconds)))]
    sampler = subprocess.Popen([*command, "--format", "raw", "--output", str(out)])  # noqa: S603
    try:
        yield
    finally:
        sampler.send_signal(signal.SIGINT)  # py-spy writes its samples on Ctrl-C
        sampler.wait(30)


async def run_subject(
    subject: str,
    n: int,
    latency: float,
    image: bytes,
    work: Path,
    extra: dict[str, str],
    profile: Path | None = None,
    tracing: bool = False,
) -> Run:
    discord_port, metrics_port = free_port(), free_port()
    control = f"http://127.0.0.1:{discord_port}"
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("DISCORD", "OPENAI"))}
    fake = [sys.executable, "-m", "tests.benchmarks.scale_discord"]
    stall_file = work / f"{subject}-{n}-stalls.txt"
    with (
        process(
            [*fake, "--port", str(discord_port), "--token", TOKEN],
            base_env,
            work / f"{subject}-{n}-discord.log",
        ) as discord_fake,
        images_api_process(latency, image, image) as base_url,
    ):
        await asyncio.sleep(1.5)  # the fake Discord's imports
        env = base_env | {
            "DISCORD_TOKEN": TOKEN,
            "OPENAI_API_KEY": API_KEY,
            "OPENAI_BASE_URL": base_url,
            "BENCH_DISCORD_API": f"{control}/api/v10",
            "BENCH_GATEWAY": f"ws://127.0.0.1:{discord_port}/",
            "DATA_DIR": str(work / f"data-{subject}-{n}"),
            "LOG_LEVEL": "WARNING",
            "METRICS_PORT": str(metrics_port),
            "FLOOR_STALL_FILE": str(stall_file),
        }
        if subject == "bot":
            env |= extra
        if tracing:
            env["BENCH_TRACEMALLOC"] = str(work / f"{subject}-{n}-memory.txt")
        module = "bot" if subject == "bot" else "tests.benchmarks.floor_bot"
        command = [sys.executable, "-c", LAUNCHER, module]
        async with aiohttp.ClientSession() as session:
            with process(command, env, work / f"{subject}-{n}.log") as child:
                started = time.monotonic()
                while time.monotonic() - started < 120:
                    try:
                        state = await results(session, control)
                    except aiohttp.ClientError:
                        state = {}
                    if state.get("identified") and state.get("commands"):
                        break
                    if child.poll() is not None:
                        log = (work / f"{subject}-{n}.log").read_text(errors="replace")
                        raise SystemExit(f"{subject} exited:\n{log[-3000:]}")
                    await asyncio.sleep(0.5)
                await asyncio.sleep(3)  # discord.py waits for the server's GUILD_CREATE
                await fire_and_wait(session, control, WARM_UP, time.monotonic() + 120)
                lag_before: dict[float, float] = {}
                if subject == "bot":
                    async with session.get(f"http://127.0.0.1:{metrics_port}/metrics") as r:
                        lag_before = lag_buckets(await r.text())
                cpu_before = cpu_seconds(child.pid)
                baseline = rss_mib(child.pid, "VmRSS")  # warmed up, before the N requests
                # The fake Images API is this process's one multiprocessing child.
                images_pid = multiprocessing.active_children()[0].pid or 0
                images_before = cpu_seconds(images_pid)
                discord_before = cpu_seconds(discord_fake.pid)
                harness_before = time.process_time()
                window_start = time.monotonic()
                with sampled(child.pid, profile, work / f"{subject}-{n}"):
                    tokens, state = await fire_and_wait(
                        session, control, n, time.monotonic() + 120 + latency * 4 + n * 0.5
                    )
                window_end = time.monotonic()
                cpu = cpu_seconds(child.pid) - cpu_before
                images_cpu = cpu_seconds(images_pid) - images_before
                discord_cpu = cpu_seconds(discord_fake.pid) - discord_before
                harness_cpu = time.process_time() - harness_before
                rss = rss_mib(child.pid)
                if subject == "bot":
                    async with session.get(f"http://127.0.0.1:{metrics_port}/metrics") as r:
                        stall = worst_bucket(lag_before, lag_buckets(await r.text()))
                else:
                    stalls = [
                        float(late)
                        for at, late in (
                            line.split() for line in stall_file.read_text().splitlines()
                        )
                        if window_start <= float(at) <= window_end
                    ]
                    stall = max(stalls, default=0.0)
    traced = work / f"{subject}-{n}-memory.txt"
    if tracing and traced.exists():
        print(f"\n{subject}, N={n}, Python's memory at its peak:\n{traced.read_text()}")
    sent = state["dispatched"]
    acks = [state["acknowledged"][t] - sent[t] for t in tokens if t in state["acknowledged"]]
    done = [t for t in tokens if t in state["delivered"]]
    overheads = [state["delivered"][t] - sent[t] - latency for t in done]
    span = max((state["delivered"][t] for t in done), default=0) - min(sent[t] for t in tokens)
    figures = {
        "ack_p50": statistics.median(acks) * 1000 if acks else float("nan"),
        "ack_p99": p(acks, 0.99) * 1000,
        "over_p50": statistics.median(overheads) * 1000 if overheads else float("nan"),
        "over_p99": p(overheads, 0.99) * 1000,
        "throughput": len(done) / span if span > 0 else float("nan"),
        "rss": rss,
        "rss_base": baseline,  # printed, not plotted: what the N requests added is rss - this
        "stall": stall * 1000,
        "cpu": cpu / n * 1000,
        # Printed, not plotted: the fakes' and the harness's share of the cores.
        "images_cpu": images_cpu / n * 1000,
        "discord_cpu": discord_cpu / n * 1000,
        "harness_cpu": harness_cpu / n * 1000,
        "machine_work": (cpu + images_cpu + discord_cpu + harness_cpu) / (os.cpu_count() or 1),
    }
    return Run(subject, n, figures, len(done), state["previews"])


def report(bot: Run, floor: Run) -> None:
    print(
        f"\nN={bot.n}: delivered bot {bot.delivered}/{bot.n} ({bot.previews} previews), "
        f"floor {floor.delivered}/{floor.n}"
    )
    print(f"  {'figure':24} {'bot':>10} {'floor':>10} {'bot/floor':>10}")
    for key, name, unit in FIGURES:
        a, b = bot.figures[key], floor.figures[key]
        ratio = a / b if b else float("nan")
        print(f"  {name + ' (' + unit + ')':24} {a:10.1f} {b:10.1f} {ratio:10.2f}")
    a, b = bot.figures["rss_base"], floor.figures["rss_base"]
    print(f"  {'RSS before the N (MiB)':24} {a:10.1f} {b:10.1f}")
    for key, name in (
        ("images_cpu", "fake Images API CPU"),
        ("discord_cpu", "fake Discord CPU"),
        ("harness_cpu", "harness CPU"),
    ):
        a, b = bot.figures[key], floor.figures[key]
        print(f"  {name + ' (ms)':24} {a:10.1f} {b:10.1f}   (per request)")
    a, b = bot.figures["machine_work"], floor.figures["machine_work"]
    print(f"  {'machine work (s)':24} {a:10.1f} {b:10.1f}   (all CPU of the N / cores)")


def plot(runs: list[tuple[Run, Run]], path: Path, latency: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 4, figsize=(16, 7))
    ns = [bot.n for bot, _ in runs]
    for axis, (key, name, unit) in zip(axes.flat, FIGURES, strict=True):
        axis.plot(ns, [bot.figures[key] for bot, _ in runs], "o-", label="bot")
        axis.plot(ns, [floor.figures[key] for _, floor in runs], "s--", label="floor")
        axis.set_title(f"{name} ({unit})")
        axis.set_xlabel("N members at once")
        axis.grid(alpha=0.3)
    axes.flat[0].legend()
    figure.suptitle(
        f"/imagine, bot vs floor, Discord out of process, L = {latency:g} s, "
        f"{os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}"
    )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)


async def main_async(args: argparse.Namespace) -> None:
    image = incompressible_png(724, 724)
    print(
        f"{len(image) / 1e6:.2f} MB PNG per image, L = {args.latency:g} s, "
        f"{os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}"
    )
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as directory:
        work = Path(directory)
        print(f"logs in {work} (kept with --keep-logs)", flush=True)
        for n in args.n:
            extra = dict(setting.split("=", 1) for setting in args.bot_env)
            profile = Path(args.py_spy) if args.py_spy else None
            bot = await run_subject(
                "bot", n, args.latency, image, work, extra, profile, args.tracemalloc
            )
            if args.bot_only:  # an experiment on the bot's settings: no floor, no ratios
                print(f"\nN={n}: {bot.delivered}/{n} delivered, {bot.previews} previews")
                print(json.dumps(bot.figures))
                continue
            floor = await run_subject(
                "floor", n, args.latency, image, work, {}, profile, args.tracemalloc
            )
            report(bot, floor)
            runs.append((bot, floor))
        if args.keep_logs:
            for log in work.glob("*.log"):  # noqa: ASYNC240 - the harness, after the runs
                print(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}")
    print(json.dumps([[b.__dict__, f.__dict__] for b, f in runs]))
    if args.plot:
        plot(runs, Path(args.plot), args.latency)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, nargs="*", default=[50, 200, 500, 1000])
    parser.add_argument("--latency", type=float, default=1.0, help="upstream latency L, seconds")
    parser.add_argument("--plot", default="", help="write the cost curve (PNG) here")
    parser.add_argument(
        "--bot-env", nargs="*", default=[], help="settings for the bot, as NAME=VALUE"
    )
    parser.add_argument(
        "--py-spy",
        default="",
        help="py-spy's binary: sample each subject during the N requests (the first "
        "BENCH_PY_SPY_SECONDS only, where set), folded stacks written beside it as "
        "<subject>-<N>.folded",
    )
    parser.add_argument("--bot-only", action="store_true", help="run the bot alone, no floor")
    parser.add_argument(
        "--tracemalloc",
        action="store_true",
        help="trace each subject's Python memory and print the largest sites at its peak "
        "(slows the subject: its timings are then not comparable)",
    )
    parser.add_argument("--keep-logs", action="store_true", help="print the processes' logs")
    # A SIGTERM (a `timeout`) unwinds like Ctrl-C, so the processes started here are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
