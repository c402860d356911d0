"""The /edit cog: adds /edit and the Vary image menu where an offered model edits images. (The
Vary buttons under posted images belong to the request road: ``bot.requests.buttons``.)"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from discord.ext import commands

from bot.requests.admission import Admission
from bot.services import Services

from ._command import build_edit_command, build_vary_menu

if TYPE_CHECKING:
    from bot.app import ImagineBot

log = logging.getLogger(__name__)


class EditCog(commands.Cog, name="Edit"):
    """/edit and Vary image; their requests are admitted and run by the bot's admission."""

    def __init__(self, bot: ImagineBot, services: Services, admission: Admission) -> None:
        self.bot = bot
        self.settings = services.settings
        self.admission = admission
        self.command = build_edit_command(services, admission)
        self.menu = build_vary_menu(services, admission)

    async def cog_load(self) -> None:
        if self.command is None or self.menu is None:
            log.info("no offered model edits images: /edit and Vary image are not offered")
            return
        self.bot.tree.add_command(self.command)
        self.bot.tree.add_command(self.menu)

    async def cog_unload(self) -> None:
        # The admission is shared with /imagine: whichever cog unloads first drains it all.
        await self.admission.drain(self.settings.shutdown_grace_seconds)
        if self.command is not None and self.menu is not None:
            self.bot.tree.remove_command(self.command.name)
            self.bot.tree.remove_command(self.menu.name, type=self.menu.type)
