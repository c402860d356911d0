"""The /imagine cog: its command, admitted through the bot's shared admission.

Admission (limits, ledger, budgets, acknowledgement, the jobs and their drain) lives in
:mod:`bot.admission`, shared with /edit; what happens to a request after that lives in
``bot.generation`` (one object per request) and ``bot.posting``. Unloading the cog
(``bot.close()``) drains.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from discord.ext import commands

from bot.admission import Admission
from bot.services import Services

from ._command import build_imagine_command

if TYPE_CHECKING:
    from bot.app import ImagineBot
    from bot.ratelimit import UserRateLimiter


class ImagineCog(commands.Cog, name="Imagine"):
    """The /imagine command; its requests are admitted and run by the bot's admission."""

    def __init__(self, bot: ImagineBot, services: Services, admission: Admission) -> None:
        self.bot = bot
        self.settings = services.settings
        self.admission = admission
        self.queue = services.queue  # read by the benchmark
        self.processing = services.processing
        self.command = build_imagine_command(services, admission.admit)

    @property
    def jobs(self) -> set[asyncio.Task[None]]:
        """Every request in flight, whichever command started it."""
        return self.admission.jobs

    @property
    def limiter(self) -> UserRateLimiter:
        return self.admission.limiter

    async def drain(self, grace: float) -> None:
        await self.admission.drain(grace)

    async def cog_load(self) -> None:
        self.bot.tree.add_command(self.command)

    async def cog_unload(self) -> None:
        await self.drain(self.settings.shutdown_grace_seconds)
        self.bot.tree.remove_command(self.command.name)
