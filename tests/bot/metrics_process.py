"""A metrics server alone in a process with few file descriptors, for the tests of what a client
holding many connections can do to it.

Run as ``python -m tests.bot.metrics_process OPEN_FILES IDLE_SECONDS``: it lowers its limit of
open files to OPEN_FILES (as a host's 1,024 would be for the whole bot), serves /metrics and a
/healthz that is always healthy on a free loopback port, prints the port, and runs until its
standard input closes.
"""

from __future__ import annotations

import asyncio
import resource
import sys

from bot.observability.health import Health, Part
from bot.observability.metrics import Metrics
from bot.observability.server import MetricsServer


async def healthy() -> Health:
    return Health({"gateway": Part(True, "connected")})


async def main(open_files: int, idle_seconds: float) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, hard))
    server = MetricsServer(Metrics().registry, healthy, host="127.0.0.1", port=0)
    server.idle_seconds = idle_seconds  # the default is longer than a test should wait
    await server.start()
    print(server.port, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await server.stop()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), float(sys.argv[2])))
