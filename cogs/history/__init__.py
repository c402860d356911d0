"""/history, /show and the Image info message menu: a member's sets, found again.

``_cog``: the commands; what they do belongs to the request road (``bot.requests.history``,
``bot.requests.info``), which the bot builds once at start, with the Info and Send to DM buttons
under every set.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._cog import HistoryCog

if TYPE_CHECKING:
    from bot.app import ImagineBot


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(HistoryCog(bot))
