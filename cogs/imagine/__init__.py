"""/imagine: generate images from a prompt and post them in the channel.

``_command``: the command's definition, choices and autocomplete. ``_cog``: the cog, which hands
requests to the bot's admission (``bot.requests.admission``: the server's settings, limits,
acknowledgement) and drains it when it is unloaded. The buttons under posted images belong to
the request road (``bot.requests.buttons``), which the bot builds once for every command.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._cog import ImagineCog

if TYPE_CHECKING:
    from bot.app import ImagineBot


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(ImagineCog(bot, bot.services, bot.admission))
