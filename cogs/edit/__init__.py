"""/edit and the Vary image message menu: images as input.

``_command``: the /edit definition (its model, size and quality options are /imagine's, narrowed
to the models that edit) and the Vary image menu. ``_cog``: the cog that adds them. Requests go
through the bot's shared admission (``bot.requests.admission``) and
``bot.requests.editing.run_edit``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._cog import EditCog

if TYPE_CHECKING:
    from bot.app import ImagineBot


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(EditCog(bot, bot.services, bot.admission))
