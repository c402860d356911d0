"""Starting and stopping the real run_bot: signals, an unreachable Discord or rate-limit store,
a bad data file, and `python -m bot sync` against a stand-in for Discord's HTTP API."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import pytest
from aiohttp import web

from tests.conftest import API_KEY, DISCORD_TOKEN
from tests.databases import PostgresServer, ledger_rows
from tests.fakes.images_api import FakeImagesAPI

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


# The real run_bot, logged in to a stand-in for Discord's HTTP API (argv[1]) so that setup_hook
# makes the real ledger, with one settlement that the database did not take and that waits for
# the bot to stop: the ledger's retries are put off, so only the close can write it.
SETTLEMENT_AT_SHUTDOWN = """
import asyncio, sys
import discord.http
import bot.store.ledger
from bot.app import ImagineBot, run_bot
from bot.config import load_settings
from bot.images import ImageRequest
from bot.store.ledger import Outcome

discord.http.Route.BASE = sys.argv[1]
bot.store.ledger.SETTLE_RETRY_FIRST = 3600.0

async def told(what):
    print(what, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)

async def start(self, token, *, reconnect=True):
    await self.login(token)  # runs setup_hook: migrations, ledger, image client, extensions
    ledger = self.services.ledger
    prepared = self.images.prepare(ImageRequest(prompt="a cat", model="dall-e-2", user="u"))
    row = await ledger.admitted(prepared, member_id=1, guild_id=None, channel_id=None)
    await told("admitted")  # the test stops PostgreSQL
    try:
        await ledger.settle(row, Outcome.DELIVERED, prepared, images_returned=1, images_delivered=1)
    except Exception:
        pass
    assert ledger.unsettled == {row}
    await told("kept")  # the test starts PostgreSQL again
    print("started", flush=True)
    while not self.is_closed():
        await asyncio.sleep(0.01)

ImagineBot.start = start
sys.exit(run_bot(load_settings()))
"""


# A shared store nothing listens for, as if the redis extra were installed.
STORE_PASSWORD = "hunter2-SENTINEL"
STORE_URI = f"redis://:{STORE_PASSWORD}@127.0.0.1:9/0"
REFUSING_STORE = """
import sys
import discord.http
import bot.config, bot.store.ratelimit
from limits.aio.storage import MemoryStorage

class Refusing(MemoryStorage):
    async def check(self):
        raise ConnectionRefusedError(111, "Connection refused")

bot.config._installed = lambda module: True
bot.store.ratelimit.storage_from_string = lambda uri, **options: Refusing()
discord.http.Route.BASE = "http://127.0.0.1:9/api/v10"  # never the real Discord
"""
STORE_AT_START_UP = (
    REFUSING_STORE
    + """
from bot.app import run_bot
from bot.config import load_settings
sys.exit(run_bot(load_settings()))
"""
)
STORE_IN_CHECK = (
    REFUSING_STORE
    + """
from bot.__main__ import main
sys.exit(main(["check"]))
"""
)


# Discord's answer to a PUT of commands it finds invalid, raised where the bot would sync them.
REFUSED_COMMANDS = """
import sys
from types import SimpleNamespace
import discord
from bot.app import ImagineBot, run_bot
from bot.config import load_settings

STATUS, TOKEN = int(sys.argv[1]), sys.argv[2]
answer = SimpleNamespace(
    status=STATUS, reason="Refused",
    url="https://discord.com/api/v10/applications/1/commands",
)
body = {
    "code": 50035, "message": "Invalid Form Body",
    "errors": {"0": {"description": {"_errors": [
        {"code": "BASE_TYPE_MAX_LENGTH", "message": "Must be 100 or fewer in length."},
        {"code": "ODD", "message": "Discord would never echo " + TOKEN + ", but if it did. " * 20},
    ]}}},
} if STATUS == 400 else {"code": 0, "message": "Service Unavailable"}

async def start(self, token, *, reconnect=True):
    raise discord.HTTPException(answer, body)

ImagineBot.start = start
sys.exit(run_bot(load_settings()))
"""


# `python -m bot sync` as an operator runs it, with Discord's API at another address.
SYNC_AGAINST = """
import runpy, sys
import discord.http

discord.http.Route.BASE = sys.argv[1]
sys.argv = ["bot", "sync"]
runpy.run_module("bot", run_name="__main__")
"""

APPLICATION_ID = "1100000000000000001"


def discord_json(payload: object) -> web.Response:
    # discord.py parses a body as JSON only when the content type is exactly this.
    return web.Response(
        body=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )


class FakeDiscordAPI:
    """Just what logging in and syncing global commands ask of Discord's HTTP API."""

    def __init__(self) -> None:
        self.synced: list[list[dict[str, object]]] = []
        self.app = web.Application()
        self.app.router.add_get("/api/v10/users/@me", self.me)
        self.app.router.add_get("/api/v10/oauth2/applications/@me", self.application)
        self.app.router.add_put(f"/api/v10/applications/{APPLICATION_ID}/commands", self.sync)

    async def me(self, request: web.Request) -> web.Response:
        return discord_json(self._user())

    async def application(self, request: web.Request) -> web.Response:
        return discord_json(
            {
                "id": APPLICATION_ID, "name": "imagine", "description": "", "icon": None,
                "bot_public": True, "bot_require_code_grant": False, "verify_key": "0" * 64,
                "owner": self._user(),
            }
        )  # fmt: skip

    async def sync(self, request: web.Request) -> web.Response:
        commands = await request.json()
        self.synced.append(commands)
        answer = [
            # Discord answers a context menu's empty description as "".
            {
                "description": "",
                **command,
                "id": str(1200000000000000000 + n),
                "application_id": APPLICATION_ID,
            }
            for n, command in enumerate(commands)
        ]
        return discord_json(answer)

    @staticmethod
    def _user() -> dict[str, object]:
        return {
            "id": APPLICATION_ID, "username": "imagine", "discriminator": "0", "avatar": None,
            "bot": True,
        }  # fmt: skip


async def start_bot(
    tmp_path: Path, *args: str, settings: dict[str, str] | None = None, stdin: bool = False
) -> asyncio.subprocess.Process:
    """``python *args`` as an operator would run the bot: configured by the environment.
    ``stdin``: a pipe the test writes to (else none)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "DISCORD_"))}
    env |= {
        "PYTHONPATH": str(ROOT),
        "OPENAI_API_KEY": API_KEY,
        "DISCORD_TOKEN": DISCORD_TOKEN,
        "DATA_DIR": str(tmp_path / "data"),
    } | (settings or {})
    return await asyncio.create_subprocess_exec(
        sys.executable, *args, cwd=tmp_path, env=env,
        stdin=asyncio.subprocess.PIPE if stdin else None,
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


async def test_a_settlement_waiting_at_sigterm_is_written_before_the_process_exits(
    tmp_path: Path, images_api: FakeImagesAPI, postgres_server_of_its_own: PostgresServer
) -> None:
    server = postgres_server_of_its_own
    url = server.create_database()
    discord_api = FakeDiscordAPI()
    runner = web.AppRunner(discord_api.app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    process = None
    try:
        base = f"http://127.0.0.1:{runner.addresses[0][1]}/api/v10"
        settings = {"DATABASE_URL": url, "OPENAI_BASE_URL": images_api.base_url}
        process = await start_bot(
            tmp_path, "-c", SETTLEMENT_AT_SHUTDOWN, base, settings=settings, stdin=True
        )
        assert process.stdin is not None and process.stdout is not None
        for said, then in ((b"admitted", server.stop), (b"kept", server.start)):
            assert (await asyncio.wait_for(process.stdout.readline(), 60)).strip() == said
            then()
            process.stdin.write(b"go\n")
        assert await asyncio.wait_for(process.stdout.readline(), 30) == b"started\n"
        process.send_signal(signal.SIGTERM)
        log = await log_of(process)
    finally:
        if process is not None and process.returncode is None:
            process.kill()
            await process.wait()
        await runner.cleanup()

    assert process.returncode == 0
    assert "CancelledError" not in log and "Exception closing connection" not in log
    [row] = await ledger_rows(url)
    assert (row["outcome"], row["images_delivered"]) == ("delivered", 1)
    assert "could not settle" not in log


async def test_an_unreachable_discord_is_one_line_and_status_one(tmp_path: Path) -> None:
    log = await log_of(process := await start_bot(tmp_path, "-c", UNREACHABLE))
    assert process.returncode == 1
    assert "cannot reach Discord (ClientConnectorError): check the network" in log


async def test_an_unreadable_data_file_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "data" / "user_id_secret").mkdir(parents=True)  # a directory where a file goes
    log = await log_of(process := await start_bot(tmp_path, "-m", "bot"))
    assert process.returncode == 1
    assert f"cannot use {tmp_path / 'data' / 'user_id_secret'}: Is a directory" in log


async def test_a_store_that_does_not_answer_stops_the_start_up_in_one_line(
    tmp_path: Path,
) -> None:
    process = await start_bot(
        tmp_path, "-c", STORE_AT_START_UP, settings={"RATE_LIMIT_STORAGE_URI": STORE_URI}
    )
    log = await log_of(process)
    assert process.returncode == 1
    assert (
        "the rate-limit store at redis://:***@127.0.0.1:9/0 (RATE_LIMIT_STORAGE_URI) does not "
        "answer: check that it runs and that this host can reach it"
    ) in log
    assert STORE_PASSWORD not in log and "Discord" not in log


async def test_check_names_the_store_and_fails_when_it_does_not_answer(
    tmp_path: Path, images_api: FakeImagesAPI
) -> None:
    endpoint = {"OPENAI_BASE_URL": images_api.base_url}
    process = await start_bot(tmp_path, "-m", "bot", "check", settings=endpoint)
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    assert "rate-limit store: memory:// (in this process)" in out.decode()

    silent_store = endpoint | {"RATE_LIMIT_STORAGE_URI": STORE_URI}
    process = await start_bot(tmp_path, "-c", STORE_IN_CHECK, settings=silent_store)
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 1
    assert err.decode().strip() == (
        "error: the rate-limit store at redis://:***@127.0.0.1:9/0 (RATE_LIMIT_STORAGE_URI) "
        "does not answer"
    )
    assert "accepts the key" in out.decode()  # the endpoint is still checked
    assert STORE_PASSWORD not in out.decode() + err.decode()


async def test_refused_command_definitions_are_reported_as_such_with_status_two(
    tmp_path: Path,
) -> None:
    process = await start_bot(tmp_path, "-c", REFUSED_COMMANDS, "400", DISCORD_TOKEN)
    log = await log_of(process)
    assert process.returncode == 2
    [line] = [line for line in log.splitlines() if "Discord refused" in line]
    refusal = line[line.index("Discord refused") :]
    assert refusal.startswith(
        "Discord refused the slash-command definitions (HTTP 400, code 50035): Invalid Form Body "
        "In 0.description: Must be 100 or fewer in length. Discord would never echo [redacted]"
    )
    explanation = refusal.split("): ", 1)[1]
    assert len(explanation) == 300 and explanation.endswith("…")
    assert "try again later" not in log


async def test_a_busy_discord_at_start_up_is_worth_another_try(tmp_path: Path) -> None:
    process = await start_bot(tmp_path, "-c", REFUSED_COMMANDS, "503", DISCORD_TOKEN)
    log = await log_of(process)
    assert process.returncode == 1
    assert "Discord answered HTTP 503 at start-up; try again later" in log


async def test_sync_pushes_the_commands_and_exits_zero(tmp_path: Path) -> None:
    discord_api = FakeDiscordAPI()
    runner = web.AppRunner(discord_api.app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        base = f"http://127.0.0.1:{port}/api/v10"
        process = await start_bot(tmp_path, "-c", SYNC_AGAINST, base)
        log = await log_of(process)
    finally:
        await runner.cleanup()

    assert process.returncode == 0
    (commands,) = discord_api.synced  # forced, once, though nothing was synced before
    names = [command["name"] for command in commands]
    assert names == [
        "imagine", "edit", "describe", "usage", "imagine-settings", "history", "show",
        "Vary image", "Describe image", "Image info",
    ]  # fmt: skip
    assert "synced 10 global command(s)" in log
    assert (tmp_path / "data" / "command_sync.json").is_file()  # the next start will not resync
