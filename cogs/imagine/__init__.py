"""/imagine: generate images from a prompt and post them in the channel.

``_command``: the command's definition, choices and autocomplete. ``_cog``: the cog, which hands
requests to the bot's admission (``bot.requests.admission``: the server's settings, limits,
acknowledgement) and drains it when it is unloaded. ``_buttons``: the
buttons under posted images (Reroll, Edit prompt, Larger, Delete), which survive restarts. What
happens to a request after that lives in ``bot.requests.generation`` (one object per request) and
``bot.discord_out.posting``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._buttons import ImageButton
from ._cog import ImagineCog

if TYPE_CHECKING:
    from bot.app import ImagineBot


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(ImagineCog(bot, bot.services, bot.admission))
    # At start, not when images are posted: the buttons of messages posted before a restart
    # must be answered too (their state is in the custom_id and the database).
    bot.add_dynamic_items(ImageButton)


async def teardown(bot: ImagineBot) -> None:
    bot.remove_dynamic_items(ImageButton)
