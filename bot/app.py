"""The Discord bot: one aiohttp session and one image client for the whole process."""

from __future__ import annotations

import logging

import aiohttp
import discord
from discord.ext import commands

from bot.config import Settings
from bot.engine import make_client
from bot.images import ImageClient

log = logging.getLogger(__name__)

EXTENSIONS = ("cogs.imagine",)


class ImagineBot(commands.Bot):
    def __init__(self, settings: Settings) -> None:
        super().__init__(command_prefix=commands.when_mentioned, intents=discord.Intents.default())
        self.settings = settings
        self._session: aiohttp.ClientSession | None = None
        self._images: ImageClient | None = None

    @property
    def images(self) -> ImageClient:
        assert self._images is not None, "used before setup_hook"
        return self._images

    async def setup_hook(self) -> None:
        self._session = aiohttp.ClientSession()
        self._images = make_client(self._session, self.settings)
        for extension in EXTENSIONS:
            await self.load_extension(extension)

    async def close(self) -> None:
        await super().close()
        if self._session is not None:
            await self._session.close()


def run_bot(settings: Settings, *, sync_only: bool = False) -> int:
    bot = ImagineBot(settings)
    assert settings.discord_token is not None
    bot.run(settings.discord_token.get_secret_value(), log_handler=None)
    return 0
