"""/imagine-settings: a server's managers choose how /imagine behaves on their server."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._cog import SettingsCog

if TYPE_CHECKING:
    from bot.app import ImagineBot


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(SettingsCog(bot, bot.services))
