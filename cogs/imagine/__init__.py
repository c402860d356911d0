"""/imagine: generate images from a prompt and post them in the channel.

``_command``: the command's definition, choices and autocomplete. ``_cog``: the cog, which hands
requests to the bot's admission (``bot.admission``: limits, acknowledgement) and drains it when it
is unloaded. What happens to a request after that lives in ``bot.generation`` (one object per
request) and ``bot.posting``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._cog import ImagineCog

if TYPE_CHECKING:
    from bot.app import ImagineBot


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(ImagineCog(bot, bot.services, bot.admission))
