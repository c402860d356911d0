"""The /describe cog: the command and the Describe image menu, handed to the bot's
:class:`~bot.requests.describe.TextFeatures` (admission, the text model, the suggestions)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.discord_out.replies import RESTARTING
from bot.i18n.commands import command_text
from bot.requests.describe import NO_IMAGE, first_image, text_features_of

if TYPE_CHECKING:
    from bot.app import ImagineBot


@app_commands.command(
    name=command_text("describe"),
    description=command_text("Four prompts that would make an image like this"),
)
@app_commands.rename(image=command_text("image"))
@app_commands.describe(image=command_text("The image to describe (png, jpeg, webp or gif)"))
async def describe_command(interaction: discord.Interaction, image: discord.Attachment) -> None:
    features = text_features_of(interaction.client)
    if features is None:
        await interaction.response.send_message(
            RESTARTING.localized(interaction.locale), ephemeral=True
        )
        return
    await features.describe(interaction, image)


async def describe_image(interaction: discord.Interaction, message: discord.Message) -> None:
    features = text_features_of(interaction.client)
    if features is None:
        await interaction.response.send_message(
            RESTARTING.localized(interaction.locale), ephemeral=True
        )
        return
    image = first_image(message)
    if image is None:
        await interaction.response.send_message(
            NO_IMAGE.localized(interaction.locale), ephemeral=True
        )
        return
    await features.describe(interaction, image)


class DescribeCog(commands.Cog, name="Describe"):
    """/describe and Describe image, where the text model is offered (else neither is added:
    the bot logged why at start)."""

    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot
        self.menu: app_commands.ContextMenu = app_commands.ContextMenu(
            name=command_text("Describe image"), callback=describe_image
        )
        self.added: list[Any] = []

    async def cog_load(self) -> None:
        features = self.bot.text_features
        if features is None or features.spec is None or not features.spec.vision:
            return
        self.bot.tree.add_command(describe_command)
        self.bot.tree.add_command(self.menu)
        self.added = [describe_command, self.menu]

    async def cog_unload(self) -> None:
        # The admission is drained by the /imagine and /edit cogs, which share it.
        if self.added:
            self.bot.tree.remove_command(describe_command.name)
            self.bot.tree.remove_command(self.menu.name, type=self.menu.type)
            self.added = []
