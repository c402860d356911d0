"""What the log says about members: no raw Discord id above DEBUG, whatever fails. Typical failing
flows run one after another in one bot, and every record above DEBUG is read for a snowflake (a
member's, a server's, a channel's, a message's or an attachment's id)."""

from __future__ import annotations

import logging
import re
from typing import Any

import discord
import pytest
from sqlalchemy import text

from tests.cogs.support import declare_generation_waits, finish
from tests.conftest import _record_text
from tests.fakes.images_api import FakeImagesAPI, api_error

pytestmark = pytest.mark.simcord(settle_timeout=3.0)

# A Discord id in a line: 17 to 20 digits, not a run of digits inside a pseudonym's hex.
SNOWFLAKE = re.compile(r"(?<![0-9a-fA-F])\d{17,20}(?![0-9a-fA-F])")


async def test_no_raw_discord_id_reaches_the_log_above_debug_when_things_fail(
    simcord_env: Any,
    guild: Any,
    channel: Any,
    alice: Any,
    images_api: FakeImagesAPI,
    caplog: pytest.LogCaptureFixture,
) -> None:
    services = simcord_env.bot.services
    declare_generation_waits(simcord_env)
    role = guild.create_role("Mods", permissions=discord.Permissions(manage_guild=True))
    manager = guild.add_member(simcord_env.create_user("carol"), roles=[role])
    caplog.clear()

    # A manager changes a setting (a line worth keeping: who changed what).
    await manager.slash(channel, "imagine-settings max-images", value=2)

    # The image service fails.
    images_api.push(api_error(500, "server_error", None))
    await alice.slash(channel, "imagine", prompt="a cat")
    await finish(simcord_env)

    # Discord refuses to post the images and the private sentence after them.
    simcord_env.inject_error("POST", "/webhooks/*", status=500, code=0, times=10)
    simcord_env.inject_error("PATCH", "/webhooks/*", status=500, code=0, times=10)
    await alice.slash(channel, "imagine", prompt="a dog")
    await finish(simcord_env)
    simcord_env.backend.faults.clear()

    # The limit store fails.
    real_acquire = services.limiter.acquire

    async def store_down(user_key: str) -> Any:
        raise ConnectionError("connection refused")

    services.limiter.acquire = store_down
    await alice.slash(channel, "imagine", prompt="a bird")
    services.limiter.acquire = real_acquire

    # The server's settings cannot be read.
    real_get = services.server_settings.get

    async def settings_down(guild_id: int | None) -> Any:
        raise ConnectionError("the database went away")

    services.server_settings.get = settings_down
    await alice.slash(channel, "imagine", prompt="a fish")
    await manager.slash(channel, "imagine-settings show")
    await manager.slash(channel, "imagine-settings max-images", value=3)
    services.server_settings.get = real_get

    # The ledger cannot record a request (its table is gone: the statement and its values fail).
    async with services.ledger.engine.begin() as connection:
        await connection.execute(text("DROP TABLE usage_ledger"))
    await alice.slash(channel, "imagine", prompt="a horse")
    await alice.slash(channel, "usage")
    await manager.slash(channel, "usage", scope="server")
    await finish(simcord_env)

    loud = [record for record in caplog.records if record.levelno > logging.DEBUG]
    assert any(record.levelno >= logging.WARNING for record in loud)  # the flows did fail
    # Who changed what is still said, by pseudonym.
    assert any(
        re.search(r"discord-\w+ changed max-images of server-\w+", _record_text(r)) for r in loud
    )
    leaks = [
        f"{record.levelname} {record.name}: {' | '.join(_record_text(record)[:600].splitlines())}"
        for record in loud
        if SNOWFLAKE.search(_record_text(record))
    ]
    assert not leaks, "\n".join(leaks)
