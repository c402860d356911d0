"""/imagine-settings through simcord: a manager's changes apply to the next /imagine, are
recorded with who and when, bad values are refused with what is accepted, and only managers
may use it."""

from __future__ import annotations

import re
from typing import Any

import pytest
from simcord import SetupError
from sqlalchemy import select

from bot.store.budgets import BUDGET_ACCEPTS
from bot.store.db import open_engine
from bot.store.db.schema import server_settings, settings_changes
from cogs.settings._cog import MANAGERS_ONLY
from tests.cogs.support import fields, setting
from tests.fakes.images_api import FakeImagesAPI, make_image


@pytest.fixture
def bot_overrides(database_url: str) -> dict[str, Any]:
    return {"database_url": database_url, "member_budget": "$5/day"}


async def table_rows(url: str, table: Any) -> list[dict[str, Any]]:
    engine = open_engine(url)
    try:
        async with engine.connect() as connection:
            return [dict(row._mapping) for row in await connection.execute(select(table))]
    finally:
        await engine.dispose()


async def test_changes_apply_to_the_next_imagine_and_are_recorded_with_who_and_when(
    simcord_env: Any,
    guild: Any,
    channel: Any,
    alice: Any,
    manager: Any,
    images_api: FakeImagesAPI,
    database_url: str,
) -> None:
    answer = await setting(manager, channel, "models", value="dall-e-2, gpt-image-1")
    assert answer == "models is now dall-e-2, gpt-image-1 (it was the default)."
    assert await setting(manager, channel, "default-model", value="gpt-image-1") == (
        "default-model is now gpt-image-1 (it was the default)."
    )
    await setting(manager, channel, "default-quality", value="low")
    await setting(manager, channel, "max-images", value=1)

    drawn = await alice.slash(channel, "imagine", prompt="a lighthouse")
    assert len(drawn.response.attachments) == 1
    sent = images_api.generation_requests[-1].body
    assert (sent["model"], sent["quality"]) == ("gpt-image-1", "low")

    too_many = await alice.slash(channel, "imagine", prompt="two", count=2)
    assert too_many.response.content == "This server allows at most 1 image per request."
    elsewhere = await alice.slash(channel, "imagine", prompt="a cat", model="dall-e-3")
    assert elsewhere.response.content == "This server allows these models: dall-e-2, gpt-image-1."
    assert len(images_api.generation_requests) == 1

    assert await setting(manager, channel, "reset", setting="max-images") == (
        "max-images is back to the default: 4 (it was 1)."
    )
    changes = await table_rows(database_url, settings_changes)
    assert [(c["name"], c["old_value"], c["new_value"]) for c in changes] == [
        ("models", None, "dall-e-2,gpt-image-1"),
        ("default-model", None, "gpt-image-1"),
        ("default-quality", None, "low"),
        ("max-images", None, "1"),
        ("max-images", "1", None),
    ]
    assert {c["changed_by"] for c in changes} == {manager.id}
    assert all(c["changed_at"] is not None for c in changes)
    stored = {row["name"]: row["value"] for row in await table_rows(database_url, server_settings)}
    assert "max-images" not in stored

    shown = await manager.slash(channel, "imagine-settings show")
    (embed,) = shown.response.embeds
    values = fields(embed)
    assert values["default-model"].startswith("gpt-image-1\nchanged by <@")
    assert values["max-images"].startswith("4 (default)\nchanged by <@")
    assert values["channels"] == "every channel (default)"


async def test_a_servers_own_budget_applies_beside_the_operators_and_none_removes_it(
    simcord_env: Any, channel: Any, alice: Any, manager: Any, images_api: FakeImagesAPI
) -> None:
    answer = await setting(manager, channel, "member-budget", value="1 image/day")
    assert answer.endswith("In force on this server: $5.00/day;1 image/day.")
    first = await alice.slash(channel, "imagine", prompt="a cat", model="dall-e-2")
    assert len(first.response.attachments) == 1
    refused = await alice.slash(channel, "imagine", prompt="a dog", model="dall-e-2")
    assert refused.response.ephemeral
    assert refused.response.content.startswith("Your budget on this server is 1 image per day")

    await setting(manager, channel, "member-budget", value="none")
    again = await alice.slash(channel, "imagine", prompt="a dog", model="dall-e-2")
    assert len(again.response.attachments) == 1


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_imagine_works_only_in_the_channels_chosen(
    simcord_env: Any, guild: Any, channel: Any, alice: Any, manager: Any, images_api: FakeImagesAPI
) -> None:
    art = guild.create_text_channel("art")
    assert await setting(manager, channel, "channels", value=f"<#{art.id}>") == (
        f"channels is now <#{art.id}> (it was the default)."
    )
    refused = await alice.slash(channel, "imagine", prompt="a cat", model="dall-e-2")
    assert refused.response.ephemeral
    assert refused.response.content == f"On this server, /imagine works in <#{art.id}>."
    allowed = await alice.slash(art, "imagine", prompt="a cat", model="dall-e-2")
    assert len(allowed.response.attachments) == 1
    assert len(images_api.generation_requests) == 1


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_long_list_of_channels_is_summarised_in_every_answer(
    simcord_env: Any, guild: Any, channel: Any, alice: Any, manager: Any, images_api: FakeImagesAPI
) -> None:
    """Past about 48 channels the lists no longer fit a message (2,000 characters): every
    answer names as many as fit and says how many more, and is shown."""
    first = [guild.create_text_channel(f"art-{n}") for n in range(90)]
    second = [guild.create_text_channel(f"more-art-{n}") for n in range(90)]

    answer = await setting(
        manager, channel, "channels", value=" ".join(f"<#{c.id}>" for c in first)
    )
    assert answer.startswith(f"channels is now <#{first[0].id}> <#{first[1].id}> ")
    assert re.search(r" and \d+ more \(it was the default\)\.$", answer)
    answer = await setting(
        manager, channel, "channels", value=" ".join(f"<#{c.id}>" for c in second)
    )
    assert re.fullmatch(
        rf"channels is now <#{second[0].id}> .* and \d+ more \(it was <#{first[0].id}> .* and "
        r"\d+ more\)\.",
        answer,
    )
    assert len(answer) <= 2000

    shown = await manager.slash(channel, "imagine-settings show")
    channels = fields(shown.response.embeds[0])["channels"]
    assert channels.startswith(f"<#{second[0].id}> ") and "more\nchanged by <@" in channels

    refused = await alice.slash(channel, "imagine", prompt="a cat", model="dall-e-2")
    assert refused.response.ephemeral
    sentence = refused.response.content
    assert sentence.startswith(f"On this server, /imagine works in <#{second[0].id}>, ")
    assert re.search(r", <#\d+> and \d+ more\.$", sentence)
    mentioned = len(re.findall(r"<#\d+>", sentence))
    assert sentence.endswith(f" and {90 - mentioned} more.")
    assert not images_api.generation_requests


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_refusal_names_the_channels_that_still_exist(
    simcord_env: Any, guild: Any, channel: Any, alice: Any, manager: Any, images_api: FakeImagesAPI
) -> None:
    """Channels deleted after they were chosen are not where /imagine works: a refusal that
    mentioned them showed "#unknown" dozens of times and hid the ones left behind "and N more"."""
    gone = [guild.create_text_channel(f"old-art-{n}") for n in range(60)]
    art = [guild.create_text_channel(f"art-{n}") for n in range(2)]
    chosen = " ".join(f"<#{c.id}>" for c in [*gone, *art])
    await setting(manager, channel, "channels", value=chosen)
    for old in gone:
        simcord_env.backend.delete_channel(old.id)

    refused = await alice.slash(channel, "imagine", prompt="a cat", model="dall-e-2")
    assert refused.response.ephemeral
    assert refused.response.content == (
        f"On this server, /imagine works in <#{art[0].id}>, <#{art[1].id}>."
    )
    for left in art:
        simcord_env.backend.delete_channel(left.id)
    refused = await alice.slash(channel, "imagine", prompt="a cat", model="dall-e-2")
    assert refused.response.content == (
        "On this server, /imagine works only in channels that no longer exist: a manager can "
        "choose others with /imagine-settings channels."
    )
    assert not images_api.generation_requests


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_refusal_of_a_long_value_is_shown_with_the_value_clipped(
    simcord_env: Any, channel: Any, manager: Any, database_url: str
) -> None:
    """The refusal repeats what the manager typed: 3,000 characters of it would make an answer
    Discord refuses, and the manager would see nothing."""
    typed = "lots" * 750
    answer = await setting(manager, channel, "member-budget", value=typed)
    assert answer.startswith(f"member-budget must be {BUDGET_ACCEPTS}, or none for no budget")
    assert len(answer) < 2000 and answer.endswith("…' is not a budget).")
    assert await table_rows(database_url, server_settings) == []


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    ("name", "options", "sentence"),
    [
        ("max-images", {"value": 9}, "max-images must be a whole number from 1 to 4 (the most "
         "this bot allows)."),
        ("member-budget", {"value": "lots"}, f"member-budget must be {BUDGET_ACCEPTS}, or none "
         "for no budget of this server's own ('lots' is not a budget)."),
        ("models", {"value": "dall-e-2, midjourney"}, "models must be one or more of the models "
         "this bot offers, separated by commas: "),
        ("default-quality", {"value": "ultra"}, "default-quality must be one of the qualities the "
         "allowed models take: "),
        ("channels", {"value": "#nowhere"}, "channels must be one or more channels of this server, "
         "mentioned with # (such as #general #art)."),
        ("channels", {"value": "<#42>"}, "channels must be one or more channels of this server, "
         "mentioned with # (such as #general #art)."),
    ],
)  # fmt: skip
async def test_a_bad_value_is_refused_naming_what_is_accepted_and_nothing_is_recorded(
    simcord_env: Any,
    channel: Any,
    manager: Any,
    database_url: str,
    name: str,
    options: dict[str, Any],
    sentence: str,
) -> None:
    answer = await setting(manager, channel, name, **options)
    assert answer.startswith(sentence)
    assert await table_rows(database_url, settings_changes) == []
    assert await table_rows(database_url, server_settings) == []


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_default_model_the_server_does_not_allow_is_refused(
    simcord_env: Any, channel: Any, manager: Any
) -> None:
    await setting(manager, channel, "models", value="dall-e-2")
    answer = await setting(manager, channel, "default-model", value="gpt-image-1")
    assert answer == "default-model must be one of the models this server allows: dall-e-2."


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_members_who_cannot_manage_the_server_cannot_change_its_settings(
    simcord_env: Any, guild: Any, channel: Any, alice: Any, database_url: str
) -> None:
    # Discord does not even show them the command (default_member_permissions) ...
    with pytest.raises(SetupError, match="default-member-permissions"):
        await alice.slash(channel, "imagine-settings max-images", value=1)
    # ... and where a server's own command permissions open it to them, the bot still refuses.
    command = next(c for c in await simcord_env.bot.tree.fetch_commands()
                   if c.name == "imagine-settings")  # fmt: skip
    guild.set_command_permissions(command, {alice: True})
    answer = await setting(alice, channel, "max-images", value=1)
    assert answer == MANAGERS_ONLY
    assert await table_rows(database_url, settings_changes) == []


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_server_that_turns_previews_off_gets_no_stream(
    simcord_env: Any, channel: Any, alice: Any, manager: Any, images_api: FakeImagesAPI
) -> None:
    await alice.slash(channel, "imagine", prompt="a fox", model="gpt-image-1")
    assert images_api.generation_requests[0].body["stream"] is True  # PARTIAL_IMAGES's default

    await setting(manager, channel, "previews", on=False)
    result = await alice.slash(channel, "imagine", prompt="a fox", model="gpt-image-1")

    body = images_api.generation_requests[1].body
    assert "stream" not in body and "partial_images" not in body
    assert len(result.response.attachments) == 1


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_edits_follow_the_servers_settings(
    simcord_env: Any, guild: Any, channel: Any, alice: Any, manager: Any, images_api: FakeImagesAPI
) -> None:
    await setting(manager, channel, "models", value="dall-e-3, gpt-image-1")
    await setting(manager, channel, "default-model", value="dall-e-3")  # it does not edit
    await setting(manager, channel, "default-quality", value="low")
    await setting(manager, channel, "previews", on=False)
    await setting(manager, channel, "member-budget", value="1 image/day")
    image = ("cat.png", make_image(64, 64))

    edited = await alice.slash(channel, "edit", image=image, prompt="a hat")
    assert len(edited.response.attachments) == 1
    (sent,) = images_api.edit_requests
    assert (sent.body["model"], sent.body["quality"]) == ("gpt-image-1", "low")
    assert "stream" not in sent.body  # previews are off here
    refused = await alice.slash(channel, "edit", image=image, prompt="a scarf")
    assert refused.response.ephemeral
    assert refused.response.content.startswith("Your budget on this server is 1 image per day")
    other = await alice.slash(channel, "edit", image=image, prompt="x", model="gpt-image-1.5")
    assert other.response.content == "This server allows these models: dall-e-3, gpt-image-1."

    art = guild.create_text_channel("art")
    await setting(manager, channel, "channels", value=f"<#{art.id}>")
    elsewhere = await alice.slash(channel, "edit", image=image, prompt="a scarf")
    assert elsewhere.response.content == f"On this server, /edit works in <#{art.id}>."
    assert len(images_api.edit_requests) == 1
