"""The databases the ledger is tested against: SQLite always, a real PostgreSQL server where its
binaries are installed (Debian's postgresql package; `.ci/run` installs it on CI).

The server is a throwaway cluster in a temporary directory, on a free loopback port, with its
socket in that directory; as root it runs as the postgres user, which PostgreSQL requires.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from bot.store.db import open_engine
from bot.store.db.schema import usage_ledger

POSTGRES_MISSING = "PostgreSQL is not installed (no initdb and pg_ctl): PostgreSQL tests skipped"


def _server_binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class PostgresServer:
    port: int
    run_as: list[str]
    psql: str
    socket_dir: Path
    pg_ctl: str = "pg_ctl"
    _names: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def data_dir(self) -> Path:
        return self.socket_dir / "data"

    def _pg_ctl(self, *arguments: str) -> None:
        subprocess.run(  # noqa: S603 - fixed arguments
            [*self.run_as, self.pg_ctl, "-D", str(self.data_dir), *arguments],
            check=True, capture_output=True,
        )  # fmt: skip

    def start(self) -> None:
        """Start the server on its data directory and port, and wait until it accepts."""
        options = f"-p {self.port} -k {self.socket_dir} -h 127.0.0.1 -F"
        log = str(self.socket_dir / "server.log")
        self._pg_ctl("-l", log, "-o", options, "-w", "start")

    def stop(self) -> None:
        """Stop the server at once, as a crash would (committed work survives)."""
        self._pg_ctl("-m", "immediate", "-w", "stop")

    def create_database(self) -> str:
        """A new, empty database; its postgresql+asyncpg:// URL."""
        name = f"ledger_{next(self._names)}"
        subprocess.run(  # noqa: S603 - fixed arguments
            [*self.run_as, self.psql, "-h", str(self.socket_dir), "-p", str(self.port),
             "-U", "postgres", "-d", "postgres", "-q", "-c", f"CREATE DATABASE {name}"],
            check=True, capture_output=True,
        )  # fmt: skip
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{name}"


def start_postgres() -> Iterator[PostgresServer | None]:
    """Yield a running server, or None where PostgreSQL is not installed."""
    initdb, pg_ctl, psql = (_server_binary(name) for name in ("initdb", "pg_ctl", "psql"))
    if not (initdb and pg_ctl and psql):
        yield None
        return
    root = Path(tempfile.mkdtemp(prefix="imagine-pg-"))
    run_as: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        postgres = pwd.getpwnam("postgres")
        os.chown(root, postgres.pw_uid, postgres.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", free_port()

    def run(*command: Any) -> None:
        subprocess.run([*run_as, *map(str, command)], check=True, capture_output=True)  # noqa: S603

    try:
        run(initdb, "-D", data, "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8")
        server = PostgresServer(port, run_as, psql, root, pg_ctl)
        server.start()
        try:
            yield server
        finally:
            with contextlib.suppress(subprocess.CalledProcessError):  # a test may have stopped it
                server.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


async def ledger_rows(url: str) -> list[dict[str, Any]]:
    """Every row of the ledger, oldest first."""
    engine = open_engine(url)
    try:
        async with engine.connect() as connection:
            result = await connection.execute(select(usage_ledger).order_by(usage_ledger.c.id))
            return [dict(row._mapping) for row in result]
    finally:
        await engine.dispose()
