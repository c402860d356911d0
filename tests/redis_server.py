"""A real Redis server for the tests of the shared limit store, where Debian's redis-server is
installed (`.ci/run` installs it on CI).

Each server is a throwaway: a free loopback port, no persistence (no RDB snapshot, no append-only
file), its working directory a temporary one. It can be stopped and started again on the same
port, as a store that goes away and comes back on a bad day.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.databases import free_port

REDIS_MISSING = "Redis is not installed (no redis-server): Redis tests skipped"
START_SECONDS = 10.0


@dataclass
class RedisServer:
    binary: str
    port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        self.process = subprocess.Popen(  # noqa: S603 - fixed arguments
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.directory),
             "--protected-mode", "no", "--logfile", str(self.directory / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited: {self.directory / 'redis.log'}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port)):
                return
            time.sleep(0.02)
        raise RuntimeError("redis-server did not start in time")

    def pause(self) -> None:
        """Freeze the server: connections stay open and nothing answers, as on a hung host."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """Stop the server at once; everything it held is gone (nothing is persisted)."""
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)  # a paused server is stopped all the same
            self.process.kill()
            self.process.wait()
            self.process = None


def start_redis() -> Iterator[RedisServer | None]:
    """Yield a running server, or None where Redis is not installed."""
    binary = shutil.which("redis-server")
    if binary is None:
        yield None
        return
    directory = Path(tempfile.mkdtemp(prefix="imagine-redis-"))
    server = RedisServer(binary, free_port(), directory)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)
