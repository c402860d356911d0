"""/usage: what a member has spent on this server, and for its managers the server's usage."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._cog import UsageCog

if TYPE_CHECKING:
    from bot.app import ImagineBot


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(UsageCog(bot, bot.services))
