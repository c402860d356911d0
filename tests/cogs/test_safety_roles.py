"""Keeping a server safe, through simcord and the fake Images API: the image service's low
moderation only in age-restricted channels where the server allows it; results as spoilers;
role tiers (the most generous applies, exemption from the rate limit, bars, the operator's
ceiling over every tier, on SQLite and PostgreSQL) and what /usage says of them; the moderation
log (an entry with a thumbnail and never the full image, a deleted channel told once)."""

from __future__ import annotations

import io
import logging
from typing import Any

import discord
import pytest
from PIL import Image
from simcord.builders import ChannelHandle

from bot.requests.admission import MODERATION_REFUSED
from bot.requests.moderation_log import RETRY_SECONDS
from bot.requests.server_admission import BARRED
from tests.cogs.support import fields, finish, setting
from tests.cogs.test_safety_words import checks_sent, declare_moderation_waits, private_or_answer
from tests.fakes.images_api import FakeImagesAPI


def age_restrict(env: Any, channel: Any) -> None:
    """Mark ``channel`` age-restricted in the bot's cache, as Discord's CHANNEL_UPDATE would
    (simcord's channels carry no ``nsfw``)."""
    env.bot.get_channel(channel.id).nsfw = True


def thread_of(env: Any, channel: Any, owner: Any) -> Any:
    thread = env.backend.create_thread(channel.id, "a thread", owner.id)
    return ChannelHandle(env, channel.guild, thread)


def dms(env: Any, member: Any) -> list[Any]:
    """The direct messages between the bot and ``member``."""
    channel = env.backend.get_dm_channel(member.id)
    return list(ChannelHandle(env, None, channel).history())


def declare_thumbnail_waits(env: Any) -> None:
    """The log's thumbnails are made in a thread: tell simcord the wait is intended."""
    env.bot.admission.moderation_log.wait = lambda made: env.external_wait(
        made, reason="a moderation log's thumbnail"
    )


OPERATOR_CEILING = {"member_budget": "$0.10/day"}
SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture
def extra() -> dict[str, Any]:
    """Settings a test wants beside the operator's ceiling."""
    return {}


@pytest.fixture
def bot_overrides(database_url: str, extra: dict[str, Any]) -> dict[str, Any]:
    return {"database_url": database_url, **OPERATOR_CEILING, **extra}


def previews(requests: list[Any]) -> list[str]:
    """The previews' filenames shown in deferred replies by these requests to Discord."""
    return [
        attachment["filename"]
        for r in requests
        if r.method == "PATCH" and r.path.endswith("/messages/@original")
        for attachment in (r.json or {}).get("attachments") or ()
        if "preview" in attachment["filename"]
    ]


def refusal(result: Any) -> Any:
    """The private answer refusing a request, before anything was acknowledged publicly."""
    assert result.response.ephemeral and not result.response.attachments
    return result.response


async def image(member: Any, channel: Any, model: str = "gpt-image-1", **options: Any) -> Any:
    """One /imagine; a GPT image at low quality (about a cent: within the operator's ceiling)."""
    if model.startswith("gpt-image"):
        options.setdefault("quality", "low")
    return await member.slash(channel, "imagine", prompt="a quiet lake", model=model, **options)


# -- age-restricted channels ------------------------------------------------------------------


@SQLITE
async def test_low_moderation_only_in_an_age_restricted_channel_where_the_server_allows_it(
    simcord_env: Any, guild: Any, channel: Any, alice: Any, manager: Any, images_api: FakeImagesAPI
) -> None:
    adults = guild.create_text_channel("adults")
    age_restrict(simcord_env, adults)

    await image(alice, adults)  # the server has not allowed it: the service's default
    assert await setting(manager, channel, "age-restricted", on=True) == (
        "age-restricted is now on (it was the default)."
    )
    await image(alice, channel)  # not age-restricted
    await image(alice, adults)
    await image(alice, thread_of(simcord_env, adults, alice))  # a thread: its parent's
    await image(alice, adults, model="dall-e-2")  # a model that does not take it

    sent = [request.body.get("moderation") for request in images_api.generation_requests]
    assert sent == [None, None, "low", "low", None]


# -- spoilers ---------------------------------------------------------------------------------


@SQLITE
async def test_results_and_previews_are_spoilers_where_the_server_says(
    simcord_env: Any, guild: Any, channel: Any, alice: Any, manager: Any, images_api: FakeImagesAPI
) -> None:
    other = guild.create_text_channel("other")
    await setting(manager, channel, "spoilers", value=channel.mention)
    images_api.stream_pause = 0.2  # a preview before the image

    shown = await image(alice, channel)
    sent = len(simcord_env.http_requests)
    plain = await image(alice, other)

    assert [a.filename for a in shown.response.attachments] == ["SPOILER_imagine-1.png"]
    assert previews(simcord_env.http_requests[:sent]) == ["SPOILER_preview.jpg"]
    assert [a.filename for a in plain.response.attachments] == ["imagine-1.png"]
    assert previews(simcord_env.http_requests[sent:]) == ["preview.jpg"]

    await setting(manager, channel, "spoilers", value="always")
    always = await image(alice, other)
    assert [a.filename for a in always.response.attachments] == ["SPOILER_imagine-1.png"]


# -- role tiers -------------------------------------------------------------------------------


async def test_the_most_generous_tier_applies_and_usage_shows_it(
    simcord_env: Any, guild: Any, channel: Any, manager: Any, images_api: FakeImagesAPI
) -> None:
    supporter, fan = guild.create_role("Supporter"), guild.create_role("Fan")
    alice = guild.add_member(simcord_env.create_user("alice"), roles=[supporter, fan])
    bob = guild.add_member(simcord_env.create_user("bob"))
    await setting(manager, channel, "member-budget", value="1 image/day")
    answer = await setting(manager, channel, "role-tier", role=supporter, value="3 images/day")
    assert answer == (
        f"{supporter.mention}'s tier is now 3 images/day (it was no tier). This bot's ceiling of "
        "$0.10/day per member, set by its operator, still applies."
    )
    await setting(manager, channel, "role-tier", role=fan, value="2 images/day;$0.05/day")

    # alice: images per day, the higher of 3 and 2; dollars per day, the Supporter tier says
    # none and the server none of its own, so the operator's $0.10 (not the Fan's $0.05).
    for _ in range(3):
        assert len((await image(alice, channel, model="dall-e-2")).response.attachments) == 1
    refused = refusal(await image(alice, channel, model="dall-e-2"))
    assert refused.content.startswith("Your budget on this server is 3 images per day")
    assert len((await image(bob, channel, model="dall-e-2")).response.attachments) == 1
    refused = refusal(await image(bob, channel, model="dall-e-2"))
    assert refused.content.startswith("Your budget on this server is 1 image per day")

    usage = fields((await alice.slash(channel, "usage")).response.embeds[0])
    roles, _, why = usage["Your tier"].partition(" (")
    assert set(roles.split()) == {supporter.mention, fan.mention}  # in the roles' order
    assert why == "the most generous of your roles' tiers applies)"
    assert [line.partition(" used")[0] for line in usage["Budgets"].splitlines()][:2] == [
        "Yours: $0.10 per day: $0.06",
        "Yours: 3 images per day: 3 images",
    ]
    usage = fields((await bob.slash(channel, "usage")).response.embeds[0])
    assert usage["Your tier"] == "None: this server's budget for each member applies."


async def test_a_tier_never_lifts_a_member_past_the_operators_ceiling(
    simcord_env: Any, guild: Any, channel: Any, manager: Any, images_api: FakeImagesAPI
) -> None:
    whale = guild.create_role("Whale")
    alice = guild.add_member(simcord_env.create_user("alice"), roles=[whale])
    await setting(manager, channel, "role-tier", role=whale, value="$5/day")

    hd = {"model": "dall-e-3", "quality": "hd"}  # $0.08 reserved each
    assert len((await image(alice, channel, **hd)).response.attachments) == 1
    refused = refusal(await image(alice, channel, **hd))
    assert refused.content.startswith("Your budget on this server is $0.10 per day")
    assert len(images_api.generation_requests) == 1


@SQLITE
@pytest.mark.parametrize(
    ("extra", "exempted"),
    [
        ({"user_rate_limit": "1/minute", "servers_may_exempt_roles": True}, True),
        ({"user_rate_limit": "1/minute"}, False),  # the operator's consent is needed
    ],
)
async def test_an_exempt_role_is_not_rate_limited_where_the_operator_allows_it(
    simcord_env: Any,
    guild: Any,
    channel: Any,
    manager: Any,
    images_api: FakeImagesAPI,
    exempted: bool,
) -> None:
    vip = guild.create_role("VIP")
    alice = guild.add_member(simcord_env.create_user("alice"), roles=[vip])
    bob = guild.add_member(simcord_env.create_user("bob"))
    answer = await setting(manager, channel, "role-tier", role=vip, value="exempt")
    said = "does not let servers exempt roles from its rate limit" in answer
    assert said is not exempted

    assert len((await image(alice, channel)).response.attachments) == 1
    again = await image(alice, channel)
    if exempted:
        assert len(again.response.attachments) == 1
    else:
        assert refusal(again).content.startswith(
            "You have reached your limit of 1 image request per minute"
        )
    assert len((await image(bob, channel)).response.attachments) == 1
    assert refusal(await image(bob, channel)).content.startswith("You have reached")
    usage = fields((await alice.slash(channel, "usage")).response.embeds[0])
    assert usage["Your tier"].endswith(", exempt from the rate limit") is exempted


@SQLITE
@pytest.mark.parametrize(
    "extra", [{"user_rate_limit": "1/minute", "servers_may_exempt_roles": True}]
)
async def test_an_exempt_role_is_counted_for_what_the_moderation_check_refuses(
    simcord_env: Any, guild: Any, channel: Any, manager: Any, images_api: FakeImagesAPI
) -> None:
    # Refusals cost nothing, so no budget bounds them: without the rate limit an exempt member
    # could make moderation checks (and moderation log entries) without end, and the checks
    # share the operator's account with every server.
    declare_moderation_waits(simcord_env)
    vip = guild.create_role("VIP")
    alice = guild.add_member(simcord_env.create_user("alice"), roles=[vip])
    await setting(manager, channel, "role-tier", role=vip, value="exempt")
    await setting(manager, channel, "moderation", value="on")

    for _ in range(2):  # passed: exempt, as without the check
        assert len((await image(alice, channel)).response.attachments) == 1
    flagged = await alice.slash(channel, "imagine", prompt="a gore scene", model="dall-e-2")
    await finish(simcord_env)
    assert private_or_answer(flagged) == MODERATION_REFUSED
    again = await alice.slash(channel, "imagine", prompt="a gore scene", model="dall-e-2")
    assert refusal(again).content.startswith("You have reached your limit")
    assert len(checks_sent(images_api)) == 3


@SQLITE
@pytest.mark.parametrize("extra", [{"user_rate_limit": "1/minute"}])
async def test_a_barred_role_or_member_is_refused_privately_before_anything_is_paid(
    simcord_env: Any, guild: Any, channel: Any, manager: Any, images_api: FakeImagesAPI
) -> None:
    muted = guild.create_role("Muted")
    alice = guild.add_member(simcord_env.create_user("alice"), roles=[muted])
    bob = guild.add_member(simcord_env.create_user("bob"))
    await setting(manager, channel, "role-tier", role=muted, value="barred")
    assert await setting(manager, channel, "bar-member", member=bob, barred=True) == (
        f"{bob.mention} is barred from this bot on this server."
    )

    for member in (alice, bob):
        refused = await image(member, channel)
        assert refused.response.ephemeral and refused.response.content == BARRED
    assert images_api.generation_requests == []
    usage = fields((await alice.slash(channel, "usage")).response.embeds[0])
    assert usage["Your tier"] == "Barred from this bot on this server by its managers."

    # Lifted: bob's refused requests never counted against his rate limit (1 a minute).
    await setting(manager, channel, "bar-member", member=bob, barred=False)
    assert len((await image(bob, channel)).response.attachments) == 1
    shown = fields((await manager.slash(channel, "imagine-settings show")).response.embeds[0])
    assert shown["role tiers"] == f"{muted.mention}: barred"


# -- the moderation log -----------------------------------------------------------------------


@SQLITE
async def test_the_log_gets_each_request_with_a_thumbnail_never_the_image(
    simcord_env: Any, guild: Any, channel: Any, alice: Any, manager: Any, images_api: FakeImagesAPI
) -> None:
    declare_thumbnail_waits(simcord_env)
    mod_log = guild.create_text_channel("mod-log")
    assert await setting(manager, channel, "log-channel", value=mod_log.mention) == (
        f"log-channel is now {mod_log.mention} (it was the default)."
    )

    await image(alice, channel, size="1024x1024")
    await image(alice, channel, model="dall-e-3", quality="hd")  # $0.08
    await image(alice, channel, model="dall-e-3", quality="hd")  # over the $0.10 ceiling

    delivered, _, refused = [message for message in mod_log.history() if message.embeds]
    entry = fields(delivered.embeds[0])
    assert entry["Who"] == alice.mention
    assert entry["Where"] == f"https://discord.com/channels/{guild.id}/{channel.id}"
    assert (entry["Model"], entry["Outcome"]) == ("gpt-image-1", "delivered")
    assert entry["Cost"].startswith("$")
    assert delivered.embeds[0].description == "a quiet lake"
    (thumbnail,) = delivered.attachments
    data = await thumbnail.read()
    with Image.open(io.BytesIO(data)) as opened:
        assert opened.format == "JPEG" and max(opened.size) <= 160
    assert data not in images_api.served and len(data) < len(images_api.served[0])
    assert fields(refused.embeds[0])["Outcome"] == "refused: over a budget"
    assert not refused.attachments


@SQLITE
async def test_a_deleted_log_channel_is_told_to_the_manager_once(
    simcord_env: Any,
    guild: Any,
    channel: Any,
    alice: Any,
    manager: Any,
    images_api: FakeImagesAPI,
    caplog: pytest.LogCaptureFixture,
) -> None:
    declare_thumbnail_waits(simcord_env)
    mod_log = guild.create_text_channel("mod-log")
    await setting(manager, channel, "log-channel", value=mod_log.mention)
    simcord_env.backend.delete_channel(mod_log.id)

    moderation_log = simcord_env.bot.admission.moderation_log
    now = [0.0]
    moderation_log.clock = lambda: now[0]
    with caplog.at_level(logging.WARNING, logger="bot.requests.moderation_log"):
        for _ in range(2):
            assert len((await image(alice, channel)).response.attachments) == 1
        now[0] += RETRY_SECONDS + 1  # tried again, still gone: not told again
        assert len((await image(alice, channel)).response.attachments) == 1

    told = [m.content for m in dms(simcord_env, manager) if "moderation log" in m.content]
    assert told == [
        f"The /imagine moderation log of {guild.name} cannot be written to <#{mod_log.id}>: "
        "the channel no longer exists. Pick another channel or fix its permissions with "
        "/imagine-settings log-channel."
    ]
    assert not [m for m in dms(simcord_env, alice) if m.content]  # members hear nothing
    assert len([r for r in caplog.records if "moderation log" in r.getMessage()]) == 1
    shown = fields((await manager.slash(channel, "imagine-settings show")).response.embeds[0])
    assert "⚠️ cannot be written to" in shown["log-channel"]


@SQLITE
async def test_a_log_channel_the_bot_may_not_post_in_is_told_once_and_shown(
    simcord_env: Any, guild: Any, channel: Any, alice: Any, manager: Any, images_api: FakeImagesAPI
) -> None:
    declare_thumbnail_waits(simcord_env)
    closed = discord.PermissionOverwrite(send_messages=False)
    mod_log = guild.create_text_channel("mod-log", overwrites={guild.me: closed})
    await setting(manager, channel, "log-channel", value=mod_log.mention)

    for _ in range(2):
        assert len((await image(alice, channel)).response.attachments) == 1

    told = [m.content for m in dms(simcord_env, manager) if "moderation log" in m.content]
    assert len(told) == 1 and "the bot is not allowed to post there" in told[0]
    assert not mod_log.history()
    shown = fields((await manager.slash(channel, "imagine-settings show")).response.embeds[0])
    assert (
        f"⚠️ cannot be written to {mod_log.mention}: the bot is not allowed"
        in (shown["log-channel"])
    )
