"""Shards, metrics server and log-format settings; JSON log lines; `python -m bot health` when
nothing answers."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import aiohttp
import discord
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from bot.__main__ import _health
from bot.app import OPEN_FILES_WANTED, ImagineBot, MetricsUnavailable, shard_options
from bot.config import ConfigError, Settings, load_settings
from bot.images import ImageRequest, load_catalog, prepare_request
from bot.observability import context
from bot.observability.health import Health, Part, gateway_part
from bot.observability.logs import QUIET_LIBRARIES, configure_logging, json_handler
from bot.observability.metrics import Metrics
from bot.observability.server import MetricsServer
from bot.requests.saved_requests import SavedRequests
from bot.store.db import migrate_database
from bot.store.ledger import Ledger
from tests.cogs.conftest import make_settings
from tests.conftest import API_KEY, DISCORD_TOKEN, _record_text
from tests.fakes.images_api import FakeImagesAPI

EVERY_ADDRESS = "0.0.0.0"  # noqa: S104 - only read: `health` asks 127.0.0.1 then


@pytest.fixture(autouse=True)
def key_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)


def settings_with(**env: str) -> Settings:
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        return load_settings(require_discord=False, env_file=None)


def refusal(**env: str) -> str:
    with pytest.raises(ConfigError) as caught:
        settings_with(**env)
    return str(caught.value)


@pytest.mark.parametrize(
    ("env", "sentence"),
    [
        (
            {"SHARD_IDS": "0,1"},
            "SHARD_IDS is not valid without SHARD_COUNT: set SHARD_COUNT to the total number of "
            "shards across every process.",
        ),
        (
            {"SHARD_COUNT": "2", "SHARD_IDS": "1,2,3"},
            "SHARD_IDS is not valid: shard numbers go from 0 to 1 with SHARD_COUNT=2, so 2, 3 are "
            "out of range.",
        ),
        (
            {"SHARD_COUNT": "4", "SHARD_IDS": "1,3,1"},
            "SHARD_IDS is not valid: 1 is listed more than once.",
        ),
        (
            {"SHARD_COUNT": "4", "SHARD_IDS": "one,two"},
            "SHARD_IDS is not valid: it must be a comma-separated list of shard numbers, such as "
            "0,1.",
        ),
        (
            {"SHARD_COUNT": "0"},
            "SHARD_COUNT is not valid: it must be a whole number 1-65535 (unset: the number "
            "Discord recommends).",
        ),
        (
            {"METRICS_PORT": "http"},
            "METRICS_PORT is not valid: it must be a port number 1-65535 for /metrics and /healthz "
            "(0: any free port; unset: no metrics server).",
        ),
        (
            {"METRICS_HOST": "my host"},
            "METRICS_HOST is not valid: it must be the address the metrics server listens on, "
            "such as 127.0.0.1 or 0.0.0.0.",
        ),
        (
            {"LOG_FORMAT": "xml"},
            "LOG_FORMAT is not valid: it must be text or json (one JSON object a line).",
        ),
    ],
)
def test_each_bad_value_is_one_sentence_naming_its_variable(
    env: dict[str, str], sentence: str
) -> None:
    assert refusal(**env) == sentence


def test_defaults_run_every_shard_discord_recommends_without_a_metrics_server() -> None:
    settings = settings_with()
    assert (settings.shard_count, settings.shard_ids) == (None, ())
    assert (settings.metrics_port, settings.metrics_host) == (None, "127.0.0.1")
    assert settings.log_format == "text"
    assert shard_options(settings) == {"shard_count": None}


async def test_the_bot_runs_the_shards_it_is_given() -> None:
    settings = settings_with(
        SHARD_COUNT="4", SHARD_IDS=" 2, 3 ", METRICS_HOST="[::1]", LOG_FORMAT="JSON"
    )
    assert (settings.metrics_host, settings.log_format) == ("::1", "json")
    bot = ImagineBot(settings, sync_on_start=False)
    try:
        assert (bot.shard_count, bot.shard_ids) == (4, [2, 3])
    finally:
        await bot.close()
    everything = ImagineBot(settings_with(SHARD_COUNT="3"), sync_on_start=False)
    try:
        assert (everything.shard_count, everything.shard_ids) == (3, None)
    finally:
        await everything.close()


def record(message: str, *args: object) -> logging.LogRecord:
    """A record as a logger would make it; formatted directly, never emitted (the suite fails a
    test whose emitted records hold a secret)."""
    return logging.LogRecord("bot.test", logging.WARNING, __file__, 1, message, args, None)


def test_a_json_line_carries_the_request_ids_and_never_a_secret(tmp_path: Path) -> None:
    settings = Settings(
        _env_file=None,
        openai_api_key=API_KEY,
        discord_token=DISCORD_TOKEN,
        data_dir=tmp_path,
    )
    handler = json_handler(settings, open(tmp_path / "unused.log", "w"))  # noqa: SIM115
    try:
        correlation = context.new_correlation_id()
        context.request_id.set("req_42")
        line = record("the key %s and token %s in a library's message", API_KEY, DISCORD_TOKEN)
        assert handler.filter(line)
        parsed = json.loads(handler.format(line))
    finally:
        handler.close()
        context.correlation_id.set(None)
        context.request_id.set(None)
    assert parsed["message"] == "the key [redacted] and token [redacted] in a library's message"
    assert parsed["correlation_id"] == correlation
    assert parsed["request_id"] == "req_42"
    assert (parsed["level"], parsed["logger"]) == ("WARNING", "bot.test")
    assert parsed["time"].endswith("+00:00")


def test_lines_outside_a_request_carry_no_ids(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, openai_api_key=API_KEY, data_dir=tmp_path)
    handler = json_handler(settings, open(tmp_path / "unused.log", "w"))  # noqa: SIM115
    try:
        line = record("ready as %s", "the bot")
        handler.filter(line)
        parsed = json.loads(handler.format(line))
    finally:
        handler.close()
    assert "correlation_id" not in parsed and "request_id" not in parsed
    assert parsed["message"] == "ready as the bot"


def test_the_gateway_part_says_why_it_is_down() -> None:
    assert gateway_part(ready=True, closed=False).ok
    assert gateway_part(ready=False, closed=False).detail == "not connected to the Discord gateway"
    assert gateway_part(ready=True, closed=True).detail == "the bot is shutting down"


async def test_health_without_metrics_port_is_unhealthy_and_says_so(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert await _health(settings_with()) == 1
    assert capsys.readouterr().err == (
        "unhealthy: METRICS_PORT is not set (or 0): the bot serves /healthz only on a port "
        "given there\n"
    )


async def test_health_with_nothing_listening_is_unhealthy_in_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago, and nothing on it
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert await _health(settings_with(METRICS_PORT=str(port), METRICS_HOST=EVERY_ADDRESS)) == 1
    err = capsys.readouterr().err
    assert err == (
        f"unhealthy: no answer from http://127.0.0.1:{port}/healthz (ClientConnectorError)\n"
    )


async def test_a_metrics_port_in_use_stops_start_up_naming_both_variables(
    images_api: FakeImagesAPI, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        bot = ImagineBot(
            make_settings(images_api.base_url, tmp_path, metrics_port=port), sync_on_start=False
        )
        try:
            with pytest.raises(MetricsUnavailable) as caught:
                await bot.setup_hook()
        finally:
            await bot.close()
    assert str(caught.value) == (
        f"the metrics server cannot listen on 127.0.0.1:{port} (METRICS_HOST, METRICS_PORT): "
        "Address already in use"
    )


async def test_syncing_commands_never_opens_the_metrics_port(
    images_api: FakeImagesAPI, tmp_path: Path
) -> None:
    settings = make_settings(images_api.base_url, tmp_path, metrics_port=0)
    bot = ImagineBot(settings, sync_on_start=False, serve_metrics=False)
    try:
        await bot.setup_hook()
        assert bot.metrics_server is None
    finally:
        await bot.close()


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_the_bots_log_lines_lose_the_secrets_in_either_format(
    tmp_path: Path, log_format: str
) -> None:
    settings = Settings(
        _env_file=None,
        openai_api_key=API_KEY,
        discord_token=DISCORD_TOKEN,
        data_dir=tmp_path,
        log_format=log_format,
    )
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        configure_logging(settings)
        (installed,) = [handler for handler in root.handlers if handler not in handlers]
        line = installed.format(record("Authorization: Bearer %s", API_KEY))
    finally:
        for handler in root.handlers[:]:
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)
    assert API_KEY not in line
    assert "Authorization: Bearer [redacted]" in line
    if log_format == "json":
        assert json.loads(line)["message"] == "Authorization: Bearer [redacted]"


def test_a_text_line_ends_with_the_request_ids(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, openai_api_key=API_KEY, data_dir=tmp_path)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        configure_logging(settings)
        (installed,) = [handler for handler in root.handlers if handler not in handlers]
        outside = record("ready as %s", "the bot")
        installed.filter(outside)
        correlation = context.new_correlation_id()
        context.request_id.set("req_42")
        inside = record("the image service answered %d", 200)
        installed.filter(inside)
    finally:
        context.correlation_id.set(None)
        context.request_id.set(None)
        for handler in root.handlers[:]:
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)
    assert installed.format(outside).endswith("ready as the bot")
    assert installed.format(inside).endswith(
        f"the image service answered 200 [correlation_id={correlation} request_id=req_42]"
    )


# -- the metrics port under attack -------------------------------------------------------------

PROJECT = Path(__file__).resolve().parents[2]
OPEN_FILES = 256  # the metrics server's process: a quarter of a host's usual 1,024
IDLE_CONNECTIONS = 400


async def _connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
    try:
        return await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 2)
    except (OSError, TimeoutError):
        return None


def _sockets_held(pid: int) -> int:
    """How many sockets the process holds open (its listener and connections among them)."""
    held = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):  # closed between listing and reading
            held += os.readlink(fd).startswith("socket:")
    return held


async def _sockets_held_once_settled(pid: int, at_most: int, seconds: float) -> int:
    """The sockets the process holds, polled until they fall to ``at_most`` or time is up."""
    deadline = time.monotonic() + seconds
    while (held := _sockets_held(pid)) > at_most and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.1)  # another process: nothing here to wait on but time
    return held


async def test_idle_connections_cannot_take_the_metrics_servers_file_descriptors() -> None:
    idle_seconds = 1.0
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.bot.metrics_process", str(OPEN_FILES), str(idle_seconds),
        cwd=PROJECT, env={**os.environ, "PYTHONPATH": str(PROJECT)},
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None and process.stdin is not None
    assert process.stderr is not None
    errors = asyncio.create_task(process.stderr.read())  # a full pipe would stop the process
    connections: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        port = int(await asyncio.wait_for(process.stdout.readline(), 30))
        sockets_before = _sockets_held(process.pid)  # the listener and the loop's own
        # Connections that never send a byte, more than the process has file descriptors.
        opened = await asyncio.gather(*(_connect(port) for _ in range(IDLE_CONNECTIONS)))
        connections = [connection for connection in opened if connection is not None]

        started = time.monotonic()
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
            session.get(f"http://127.0.0.1:{port}/healthz") as response,
        ):
            assert response.status == 200
            assert (await response.json())["status"] == "ok"
        answered = time.monotonic() - started

        # Every idle connection the server took is closed within the idle time. (Counted in the
        # server: under a flood the kernel drops some handshakes' last packet, and the client then
        # holds a connection the server never had, which no server can close.)
        held = await _sockets_held_once_settled(process.pid, sockets_before, idle_seconds + 3)
        assert held <= sockets_before, f"{held - sockets_before} idle connection(s) still open"
    finally:
        for _, writer in connections:
            writer.close()
        process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), 10)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    err = (await errors).decode()
    assert "Too many open files" not in err and "Traceback" not in err, err[-2000:]
    assert answered < 2


def test_the_bot_raises_its_own_limit_of_open_files_where_the_host_leaves_it_low() -> None:
    """In a container nothing like systemd's LimitNOFILE sets it: the soft limit is often 1,024."""
    script = (
        "import resource; from bot.app import raise_open_files_limit; "
        "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE); "
        "resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, soft), hard)); "
        "print(raise_open_files_limit(), *resource.getrlimit(resource.RLIMIT_NOFILE))"
    )
    answer = subprocess.run(  # noqa: S603 - a fixed script
        [sys.executable, "-c", script], cwd=PROJECT, capture_output=True, text=True, check=True
    )
    said, soft, hard = (int(value) for value in answer.stdout.split())
    expected = OPEN_FILES_WANTED if hard == resource.RLIM_INFINITY else min(hard, OPEN_FILES_WANTED)
    assert said == soft == expected


async def _send_raw(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()


MALFORMED = [
    b"GET /metrics HTTP/1.1\r\nHost: x\r\nBroken header line\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\n" + b"X-Long: " + b"a" * 10_000 + b"\r\n\r\n",
    b"GET /metrics HTTP/9.9\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(32)),  # TLS to a plain port
    b"GET /\x00 HTTP/1.1\r\n\r\n",
]


async def test_malformed_requests_are_a_short_debug_line_each(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def healthy() -> Health:
        return Health({"gateway": Part(True, "connected")})

    server = MetricsServer(Metrics().registry, healthy, host="127.0.0.1", port=0)
    await server.start()
    assert server.port is not None
    try:
        caplog.clear()
        for n in range(100):
            answer = await _send_raw(server.port, MALFORMED[n % len(MALFORMED)])
            assert answer == b"" or answer.startswith((b"HTTP/1.0 4", b"HTTP/1.1 4"))
    finally:
        await server.stop()
    loud = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert loud == []
    assert all(record.exc_info is None for record in caplog.records)
    written = sum(len(record.getMessage()) for record in caplog.records)
    assert written < 100 * 200, f"{written} characters of log for 100 malformed requests"


# -- what the text lines look like, and what libraries may say -----------------------------------


@contextlib.contextmanager
def logging_configured(settings: Settings) -> Iterator[logging.Handler]:
    """configure_logging's handler; the root logger and the libraries' levels put back after."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    libraries = {name: logging.getLogger(name).level for name in QUIET_LIBRARIES}
    try:
        configure_logging(settings)
        (installed,) = [handler for handler in root.handlers if handler not in handlers]
        yield installed
    finally:
        for handler in root.handlers[:]:
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)
        for name, was in libraries.items():
            logging.getLogger(name).setLevel(was)


@pytest.mark.parametrize(
    ("terminal", "no_color", "coloured"),
    [(False, "", False), (True, "1", False), (True, "", True)],
    ids=["a-pipe-under-docker", "a-terminal-with-NO_COLOR", "a-terminal"],
)
def test_text_lines_are_coloured_only_for_a_terminal_and_never_with_no_color(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, terminal: bool, no_color: str, coloured: bool
) -> None:
    # discord.py colours whatever stderr is where it believes it runs under Docker.
    monkeypatch.setattr(discord.utils, "is_docker", lambda: True)
    monkeypatch.setenv("NO_COLOR", no_color)
    main = None
    if terminal:  # a pseudo-terminal: a terminal while its other end is open
        main, other = os.openpty()
        stream: TextIO = open(other, "w")  # noqa: SIM115 - closed below
    else:
        stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    settings = Settings(_env_file=None, openai_api_key=API_KEY, data_dir=tmp_path)
    try:
        with logging_configured(settings) as installed:
            line = installed.format(record("ready as %s", "the bot"))
    finally:
        stream.close()
        if main is not None:
            os.close(main)
    assert ("\x1b[" in line) is coloured
    assert line.endswith("ready as the bot")


async def test_at_debug_the_database_drivers_write_no_prompt_and_errors_no_values(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'imagine.db'}"
    settings = Settings(
        _env_file=None, openai_api_key=API_KEY, data_dir=tmp_path, log_level="DEBUG"
    )
    prompt = "a SENTINEL-PROMPT lighthouse at dusk"
    member = 1_300_000_000_000_000_042
    spec = load_catalog()["dall-e-2"]
    prepared = prepare_request(ImageRequest(prompt=prompt, model=spec.name), spec)
    with logging_configured(settings):
        caplog.set_level(logging.DEBUG)  # the root, as LOG_LEVEL=DEBUG has it
        await migrate_database(url)
        ledger = Ledger(url)
        await ledger.open()
        try:
            await SavedRequests(ledger).save(prepared, member_id=member, guild_id=7, channel_id=8)
            async with ledger.engine.begin() as connection:
                await connection.execute(text("DROP TABLE usage_ledger"))
            with pytest.raises(DBAPIError) as failed:
                await ledger.admitted(prepared, member_id=member, guild_id=7, channel_id=8)
        finally:
            await ledger.close()
        written = [_record_text(record) for record in caplog.records]
    assert written  # DEBUG lines were written: the bot's own
    assert not [line for line in written if prompt in line or str(member) in line]
    # The error (what a log line or a traceback would show) names the statement, not its values.
    assert "no such table: usage_ledger" in str(failed.value)
    assert str(member) not in str(failed.value)
