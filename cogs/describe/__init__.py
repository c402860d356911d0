"""/describe and the Describe image menu: four prompt suggestions for an image, each with an
Imagine this button (``bot.requests.describe``, which the bot builds once). Added only where the
text model (TEXT_MODEL) is offered."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._cog import DescribeCog

if TYPE_CHECKING:
    from bot.app import ImagineBot


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(DescribeCog(bot))
