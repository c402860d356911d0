"""The /imagine cog: its command, admitted through the bot's shared admission.

Admission (the server's settings, limits, ledger, budgets, acknowledgement, the jobs and their
drain) lives in :mod:`bot.requests.admission`, shared with /edit; what happens to a request
after that lives in ``bot.requests.generation`` (one object per request), and the buttons under
its images in ``bot.requests.buttons``. Unloading the cog (``bot.close()``) drains.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from discord.ext import commands

from bot.requests.admission import Admission
from bot.services import Services

from ._command import build_imagine_command

if TYPE_CHECKING:
    from bot.app import ImagineBot


class ImagineCog(commands.Cog, name="Imagine"):
    """The /imagine command; its requests are admitted and run by the bot's admission."""

    def __init__(self, bot: ImagineBot, services: Services, admission: Admission) -> None:
        self.bot = bot
        self.settings = services.settings
        self.admission = admission
        features = bot.text_features
        enhance = features.enhance if features is not None and features.spec else None
        self.command = build_imagine_command(services, admission.admit, enhance)

    async def cog_load(self) -> None:
        self.bot.tree.add_command(self.command)

    async def cog_unload(self) -> None:
        # The admission is shared with /edit: whichever cog unloads first drains it all.
        await self.admission.drain(self.settings.shutdown_grace_seconds)
        self.bot.tree.remove_command(self.command.name)
