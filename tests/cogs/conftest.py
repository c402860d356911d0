from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import discord
import pytest

from bot.app import ImagineBot
from bot.config import Settings
from bot.discord_out.progress import EditBudget
from bot.images import ProcessingSlots
from bot.requests.queue import GenerationQueue
from bot.store import ledger
from tests.conftest import API_KEY, DISCORD_TOKEN
from tests.fakes.images_api import FakeImagesAPI

# What Discord recommends at login when SHARD_COUNT is unset, for a bot in few servers; simcord
# serves no recommendation and needs the count before it connects the bot.
RECOMMENDED_SHARDS = 1


def make_settings(base_url: str, data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "discord_token": DISCORD_TOKEN,
        "openai_api_key": API_KEY,
        "openai_base_url": base_url,
        "data_dir": data_dir,
        "user_id_secret": "test-secret-0123456789abcdef",
        "user_rate_limit": "50/minute",
        "max_retries": 0,
        "request_timeout": 30,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


@pytest.fixture
def long_ledger_lease(monkeypatch: pytest.MonkeyPatch) -> None:
    """The ledger's keeper renews its lease every quarter of it, a database round trip each time;
    simcord's advance_time runs every timer it passes, so a 15-minute advance would make sixty of
    them, each a chance to overrun a test's short settle timeout on a busy machine. The lease is
    tested where its timing is real (tests/bot/test_ledger.py, tests/cogs/test_shared_state.py)."""
    monkeypatch.setattr(ledger, "LEASE_SECONDS", 3600.0)


@pytest.fixture
def bot_overrides() -> dict[str, Any]:
    """Settings a test module or test wants different (override this fixture)."""
    return {}


@pytest.fixture
def settings(images_api: FakeImagesAPI, tmp_path: Path, bot_overrides: dict[str, Any]) -> Settings:
    return make_settings(images_api.base_url, tmp_path / "data", **bot_overrides)


class DeclaredQueueWaits:
    """How the bot's queue waits for a turn in tests: declared to simcord as intended, since
    simcord cannot see that a request waits on the requests ahead of it. The progress shown
    while an image is made waits for its next edit the same way: its timers then move only
    with ``env.advance_time``."""

    def __init__(self, reason: str = "waiting in the generation queue") -> None:
        self.env: Any = None  # the environment running the bot, once it runs
        self.reason = reason

    async def __call__(self, turn: Awaitable[object]) -> None:
        assert self.env is not None, "the bot queued a request before simcord ran it"
        await self.env.external_wait(turn, reason=self.reason)


@pytest.fixture
def queue_waits() -> DeclaredQueueWaits:
    return DeclaredQueueWaits()


@pytest.fixture
def progress_waits() -> DeclaredQueueWaits:
    return DeclaredQueueWaits("progress waiting for its next edit")


@pytest.fixture
async def simcord_bot(
    settings: Settings,
    queue_waits: DeclaredQueueWaits,
    progress_waits: DeclaredQueueWaits,
    long_ledger_lease: None,
) -> AsyncIterator[ImagineBot]:
    queue = GenerationQueue(settings.max_concurrent_generations, wait=queue_waits)
    processing = ProcessingSlots(settings.processing_slot_count, wait=queue_waits)
    # simcord's clock: the loop's, which moves with env.advance_time.
    edits = EditBudget(wait=progress_waits, clock=lambda: asyncio.get_running_loop().time())
    bot = ImagineBot(settings, queue=queue, processing=processing, edits=edits)
    if bot.shard_count is None:
        bot.shard_count = RECOMMENDED_SHARDS
    yield bot
    try:
        await bot.close()  # simcord detaches the bot without closing it; its HTTP session must go
    except asyncio.CancelledError:
        # A test that failed mid-request (simcord gave up waiting) can leave the close to be
        # cancelled: told as this test's error, since a CancelledError (a BaseException) escaping
        # a fixture leaves pytest's per-test state behind and fails every test after it.
        raise RuntimeError("closing the bot was cancelled after the test") from None


@pytest.fixture
def simcord_env(
    simcord_env: Any, queue_waits: DeclaredQueueWaits, progress_waits: DeclaredQueueWaits
) -> Any:
    """simcord's environment, with the queue's and the progress display's waits declared."""
    queue_waits.env = progress_waits.env = simcord_env
    return simcord_env


@pytest.fixture
def guild(simcord_env: Any) -> Any:
    return simcord_env.create_guild("Art Club")


@pytest.fixture
def channel(guild: Any) -> Any:
    return guild.create_text_channel("imagine")


@pytest.fixture
def alice(simcord_env: Any, guild: Any) -> Any:
    return guild.add_member(simcord_env.create_user("alice"))


@pytest.fixture
def bob(simcord_env: Any, guild: Any) -> Any:
    return guild.add_member(simcord_env.create_user("bob"))


@pytest.fixture
def manager(simcord_env: Any, guild: Any) -> Any:
    """carol, who may manage the server (and so use /imagine-settings)."""
    role = guild.create_role("Mods", permissions=discord.Permissions(manage_guild=True))
    return guild.add_member(simcord_env.create_user("carol"), roles=[role])
