"""Uploads Discord refuses, command registration, and shutting down."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import simcord

from bot.app import ImagineBot
from tests.cogs.conftest import RECOMMENDED_SHARDS, make_settings
from tests.cogs.support import private_reply, upload_limit, uploaded
from tests.fakes.images_api import FakeImagesAPI, incompressible_png

ORIGINAL = "/webhooks/*/messages/@original"


def command_syncs(env: Any) -> list[str]:
    return [r.path for r in env.http_requests if r.method == "PUT" and r.path.endswith("/commands")]


async def test_an_upload_refused_as_too_large_is_retried_smaller(
    simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI
) -> None:
    image = incompressible_png(300, 300)  # about 270 kB: fits the limit, not half of it
    images_api.image_bytes = image
    limit = 2 * len(image) - 1000
    simcord_env.inject_error("PATCH", ORIGINAL, status=413, code=40005, times=1)
    with upload_limit(limit):
        result = await alice.slash(channel, "imagine", prompt="a cat", count=2)

    messages = [result.response, *result.followups]
    sent = [data for message in messages for data in await uploaded(message)]
    assert len(sent) == 2
    # The retry fitted each message to half the reported limit: re-encoded, then split.
    assert all(len(data) <= limit // 2 for data in sent)
    assert all(data != image for data in sent)
    assert "re-encoded" in result.response.content


async def test_an_upload_refused_as_too_large_twice_says_so(
    simcord_env: Any, channel: Any, alice: Any
) -> None:
    simcord_env.inject_error("PATCH", ORIGINAL, status=413, code=40005, times=2)
    result = await alice.slash(channel, "imagine", prompt="a cat")
    assert private_reply(result).content == "The images are too large to upload to this server."


async def test_an_upload_discord_fails_tells_the_user(
    simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI
) -> None:
    # The first edit carries the images; the ones after it (the private sentence) go through.
    simcord_env.inject_error("PATCH", ORIGINAL, status=500, code=0, times=1)
    result = await alice.slash(channel, "imagine", prompt="a cat")
    assert private_reply(result).content == "Discord did not accept the images. Please try again."


async def test_commands_are_synced_only_when_their_definitions_change(
    images_api: FakeImagesAPI, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    async with simcord.run(
        ImagineBot(make_settings(images_api.base_url, data)), shard_count=RECOMMENDED_SHARDS
    ) as env:
        assert len(command_syncs(env)) == 1
    async with simcord.run(
        ImagineBot(make_settings(images_api.base_url, data)), shard_count=RECOMMENDED_SHARDS
    ) as env:
        assert command_syncs(env) == []  # unchanged: Discord is not asked again
    changed = make_settings(images_api.base_url, data, offered_models="dall-e-3,dall-e-2")
    async with simcord.run(ImagineBot(changed), shard_count=RECOMMENDED_SHARDS) as env:
        assert len(command_syncs(env)) == 1


async def test_a_development_guild_is_synced_at_every_start(
    images_api: FakeImagesAPI, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    for _ in range(2):
        bot = ImagineBot(make_settings(images_api.base_url, data, dev_guild_id=4242))
        async with simcord.run(bot, shard_count=RECOMMENDED_SHARDS) as env:
            assert any("/guilds/4242/commands" in path for path in command_syncs(env))


async def test_shutdown_with_nothing_in_flight_closes_the_bot(
    images_api: FakeImagesAPI, tmp_path: Path
) -> None:
    bot = ImagineBot(make_settings(images_api.base_url, tmp_path / "data"))
    async with simcord.run(bot, shard_count=RECOMMENDED_SHARDS) as env:
        guild = env.create_guild("g")
        channel = guild.create_text_channel("c")
        alice = guild.add_member(env.create_user("alice"))
        done = await alice.slash(channel, "imagine", prompt="a cat")
        assert done.response is not None
        assert done.response.attachments
        await bot.shutdown()
        assert bot.is_closed()
        assert bot.images._session.closed


async def test_sync_only_mode_leaves_syncing_to_its_caller(
    images_api: FakeImagesAPI, tmp_path: Path
) -> None:
    bot = ImagineBot(make_settings(images_api.base_url, tmp_path / "data"), sync_on_start=False)
    async with simcord.run(bot, shard_count=RECOMMENDED_SHARDS, strict_sync=False) as env:
        assert command_syncs(env) == []
        await bot.sync_commands(force=True)
        assert len(command_syncs(env)) == 1
    await bot.close()


@pytest.mark.parametrize("bot_overrides", [{"max_images_per_request": 2}])
async def test_a_follow_up_discord_refuses_leaves_the_posted_images_and_says_so(
    simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI
) -> None:
    image = incompressible_png(300, 300)
    images_api.image_bytes = image
    simcord_env.inject_error("POST", "/webhooks/*", status=500, code=0, times=1)
    with upload_limit(len(image) + 1000):  # one image a message: the second is a follow-up
        result = await alice.slash(channel, "imagine", prompt="two", count=2)
    assert await uploaded(result.response) == [image]
    (note,) = [m for m in result.followups if m.ephemeral]
    assert note.content == (
        "Not all of your images could be posted. "
        "Discord did not accept the images. Please try again."
    )
