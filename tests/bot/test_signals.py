"""Starting and stopping the real run_bot: signals, an unreachable Discord, a bad data file."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from tests.conftest import API_KEY, DISCORD_TOKEN

ROOT = Path(__file__).resolve().parents[2]

# The real run_bot, with only the connection to Discord replaced by a wait for close().
STUBBED_CONNECTION = """
import asyncio, sys
from bot.app import ImagineBot, run_bot
from bot.config import load_settings

async def start(self, token, *, reconnect=True):
    print("started", flush=True)
    while not self.is_closed():
        await asyncio.sleep(0.01)

ImagineBot.start = start
sys.exit(run_bot(load_settings()))
"""

UNREACHABLE = """
import sys
import discord.http
from bot.app import run_bot
from bot.config import load_settings

discord.http.Route.BASE = "http://127.0.0.1:9/api/v10"  # nothing listens on port 9
sys.exit(run_bot(load_settings()))
"""


async def start_bot(tmp_path: Path, *args: str) -> asyncio.subprocess.Process:
    """``python *args`` as an operator would run the bot: configured by the environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "DISCORD_"))}
    env |= {
        "PYTHONPATH": str(ROOT),
        "OPENAI_API_KEY": API_KEY,
        "DISCORD_TOKEN": DISCORD_TOKEN,
        "DATA_DIR": str(tmp_path / "data"),
    }
    return await asyncio.create_subprocess_exec(
        sys.executable, *args, cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def log_of(process: asyncio.subprocess.Process) -> str:
    _, err = await asyncio.wait_for(process.communicate(), 60)
    log = err.decode()
    assert "Traceback" not in log
    assert DISCORD_TOKEN not in log and API_KEY not in log
    return log


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_a_signal_stops_the_bot_with_status_zero(signum: int, tmp_path: Path) -> None:
    process = await start_bot(tmp_path, "-c", STUBBED_CONNECTION)
    assert process.stdout is not None
    assert await asyncio.wait_for(process.stdout.readline(), 30) == b"started\n"
    process.send_signal(signum)
    log = await log_of(process)
    assert process.returncode == 0
    assert "shutting down" in log


async def test_an_unreachable_discord_is_one_line_and_status_one(tmp_path: Path) -> None:
    log = await log_of(process := await start_bot(tmp_path, "-c", UNREACHABLE))
    assert process.returncode == 1
    assert "cannot reach Discord (ClientConnectorError): check the network" in log


async def test_an_unreadable_data_file_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "data" / "user_id_secret").mkdir(parents=True)  # a directory where a file goes
    log = await log_of(process := await start_bot(tmp_path, "-m", "bot"))
    assert process.returncode == 1
    assert f"cannot use {tmp_path / 'data' / 'user_id_secret'}: Is a directory" in log
