"""The commands of :mod:`cogs.history`; each hands its interaction to the bot's
:class:`bot.requests.history.History` (or its Info cards), found at the time of use: while the
bot shuts down they are gone, and the member is told it is restarting."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.discord_out.replies import RESTARTING, Replies
from bot.i18n.commands import command_text
from bot.requests.history import history_of

if TYPE_CHECKING:
    from bot.app import ImagineBot

REQUEST_ID_MAX = 2**63 - 1  # the database's largest key


class HistoryCog(commands.Cog, name="History"):
    """/history, /show and Image info."""

    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot
        self.menu = app_commands.ContextMenu(
            name=command_text("Image info"), callback=self.image_info
        )

    async def cog_load(self) -> None:
        self.bot.tree.add_command(self.menu)

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.menu.name, type=self.menu.type)

    @app_commands.command(
        name=command_text("history"),
        description=command_text("Your latest images here, with links"),
    )
    async def history(self, interaction: discord.Interaction) -> None:
        found = history_of(interaction.client)
        if found is None:
            await Replies(interaction).answer(RESTARTING)
            return
        await found.page(interaction)

    @app_commands.command(
        name=command_text("show"),
        description=command_text("Post a set of images again, with its buttons"),
    )
    @app_commands.rename(id=command_text("id"), private=command_text("private"))
    @app_commands.describe(
        id=command_text("The request's id (its Info card and /history show it)"),
        private=command_text("Show it to you only"),
    )
    async def show(
        self,
        interaction: discord.Interaction,
        id: app_commands.Range[int, 1, REQUEST_ID_MAX],
        private: bool = False,
    ) -> None:
        found = history_of(interaction.client)
        if found is None:
            await Replies(interaction).answer(RESTARTING)
            return
        await found.show(interaction, id, private=private)

    async def image_info(self, interaction: discord.Interaction, message: discord.Message) -> None:
        found = history_of(interaction.client)
        if found is None:
            await Replies(interaction).answer(RESTARTING)
            return
        await found.cards.info_of_message(interaction, message)
