"""The /edit cog: adds /edit, the Vary image menu and the Vary buttons under /imagine's images
where an offered model edits images."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, cast

from discord.ext import commands

from bot.requests.admission import Admission
from bot.services import Services

from ._command import build_edit_command, build_vary_menu
from ._vary import build_vary_button

if TYPE_CHECKING:
    from bot.app import ImagineBot
    from cogs.imagine._buttons import ImageButtons

log = logging.getLogger(__name__)


class EditCog(commands.Cog, name="Edit"):
    """/edit and Vary image; their requests are admitted and run by the bot's admission."""

    def __init__(self, bot: ImagineBot, services: Services, admission: Admission) -> None:
        self.bot = bot
        self.settings = services.settings
        self.admission = admission
        self.command = build_edit_command(services, admission)
        self.menu = build_vary_menu(services, admission)
        self.vary = build_vary_button(services, admission)

    def _image_buttons(self) -> ImageButtons | None:
        # The buttons belong to the /imagine cog (loaded before this one), when it is loaded.
        imagine = self.bot.get_cog("Imagine")
        return cast("ImageButtons | None", getattr(imagine, "buttons", None))

    async def cog_load(self) -> None:
        if self.command is None or self.menu is None or self.vary is None:
            log.info("no offered model edits images: /edit and Vary image are not offered")
            return
        self.bot.tree.add_command(self.command)
        self.bot.tree.add_command(self.menu)
        buttons = self._image_buttons()
        if buttons is not None:
            buttons.vary = self.vary  # from now on, posted images get Vary buttons

    async def cog_unload(self) -> None:
        # The admission is shared with /imagine: whichever cog unloads first drains it all.
        await self.admission.drain(self.settings.shutdown_grace_seconds)
        buttons = self._image_buttons()
        if buttons is not None and buttons.vary is self.vary:
            buttons.vary = None
        if self.command is not None and self.menu is not None:
            self.bot.tree.remove_command(self.command.name)
            self.bot.tree.remove_command(self.menu.name, type=self.menu.type)
