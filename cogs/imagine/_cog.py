"""The /imagine cog: its command and the buttons under posted images, admitted through the bot's
shared admission.

Admission (the server's settings, limits, ledger, budgets, acknowledgement, the jobs and their
drain) lives in :mod:`bot.requests.admission`, shared with /edit; what happens to a request after
that
lives in ``bot.requests.generation`` (one object per request) and ``bot.discord_out.posting``.
Unloading the cog
(``bot.close()``) drains.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import discord
from discord.ext import commands

from bot.images import ImageRequest
from bot.requests.admission import Admission
from bot.requests.saved_requests import SavedRequests
from bot.services import Services

from ._buttons import ImageButtons
from ._command import build_imagine_command

if TYPE_CHECKING:
    from bot.app import ImagineBot
    from bot.store.ratelimit import UserRateLimiter


class ImagineCog(commands.Cog, name="Imagine"):
    """The /imagine command and the buttons under its images; their requests are admitted and
    run by the bot's admission."""

    def __init__(self, bot: ImagineBot, services: Services, admission: Admission) -> None:
        self.bot = bot
        self.services = services
        self.settings = services.settings
        self.admission = admission
        self.queue = services.queue  # read by the benchmarks
        self.processing = services.processing
        self.command = build_imagine_command(services, self.admit)
        # The buttons under posted images; each press that makes images comes back to admit.
        self.buttons = ImageButtons(self, SavedRequests(services.ledger))
        # Edits (/edit, Vary) get buttons too: Delete, and Vary again (see ImageButtons.view).
        admission.edit_buttons = self.buttons.for_generation

    async def admit(self, interaction: discord.Interaction, request: ImageRequest) -> None:
        """An /imagine, or a button's new request: admitted, its images posted with buttons."""
        await self.admission.admit(interaction, request, buttons=self.buttons.for_generation)

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

    @commands.Cog.listener()
    async def on_interaction(self, interaction: discord.Interaction) -> None:
        await self.buttons.on_interaction(interaction)  # an Edit prompt modal submitted
