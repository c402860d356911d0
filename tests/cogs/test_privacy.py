"""What a member may learn of another's sets, whatever they forge (an adversarial review): the
Image info menu on a message that is not the bot's, forged ids, and sets shown again where they
were not made; in simcord against the fake Images API."""

from __future__ import annotations

from typing import Any

import discord
from simcord.builders import ChannelHandle
from simcord.results import to_discord_message

from bot.requests.history import AGE_RESTRICTED
from bot.requests.server_admission import BARRED, BLOCKED
from tests.cogs.support import setting
from tests.cogs.test_buttons import posted_in_three_messages
from tests.cogs.test_edit import png
from tests.cogs.test_history import NOT_FOUND, card, key_of, private_messages, said
from tests.cogs.test_safety_roles import age_restrict, declare_thumbnail_waits


def forged(env: Any, channel: Any, author: Any, custom_id: str) -> Any:
    """A message of someone else's (another app's, posted for ``author``) carrying a button
    whose id looks like one of the bot's: any member can have such a message posted, with a
    user-installed app of their own."""
    stored = env.backend.create_message(
        channel.id,
        author.id,
        "look",
        components=[
            {
                "type": 1,
                "components": [{"type": 2, "style": 2, "label": "Info", "custom_id": custom_id}],
            }
        ],
    )
    return to_discord_message(env, stored)


async def test_image_info_on_a_forged_message_names_no_private_set_of_another(
    simcord_env: Any, channel: Any, alice: Any, bob: Any
) -> None:
    private = await alice.slash(channel, "imagine", prompt="alice's secret fox", private=True)
    key = key_of(private.response)

    bait = forged(simcord_env, channel, bob, f"imagine:info:{key}")
    answer = await bob.context_menu(channel, "Image info", bait)

    shown = " ".join(
        f"{m.content} {[e.to_dict() for e in m.embeds]}" for m in private_messages(answer)
    )
    assert "secret fox" not in shown
    assert said(answer) == "This message is not a set of images the bot posted with its buttons."


async def test_a_forged_button_names_no_private_set_of_another(
    simcord_env: Any, channel: Any, alice: Any, bob: Any, images_api: Any
) -> None:
    private = await alice.slash(channel, "imagine", prompt="alice's secret fox", private=True)
    key = key_of(private.response)

    for action in ("info", "dm", "reroll"):
        bait = forged(simcord_env, channel, bob, f"imagine:{action}:{key}")
        answer = await bob.click(bait, custom_id=f"imagine:{action}:{key}")
        assert (
            said(answer)
            == "The bot no longer has the request behind these buttons. Please use /imagine."
        )
    assert bob.user.dm_channel is None or bob.user.dm_channel.history() == []
    assert len(images_api.generation_requests) == 1  # alice's only


async def test_show_posts_no_set_made_with_low_moderation_outside_age_restricted_channels(
    simcord_env: Any, guild: Any, channel: Any, alice: Any, manager: Any, images_api: Any
) -> None:
    adults = guild.create_text_channel("adults")
    age_restrict(simcord_env, adults)
    await setting(manager, channel, "age-restricted", on=True)
    made = await alice.slash(adults, "imagine", prompt="a lake", model="gpt-image-1", quality="low")
    assert images_api.generation_requests[0].body.get("moderation") == "low"
    key = key_of(made.response)

    shown = await alice.slash(channel, "show", id=key)

    public = [m for m in channel.history(viewer=alice) if not m.flags.ephemeral]
    assert public == []  # nothing posted where it is not age-restricted
    assert said(shown) == AGE_RESTRICTED.format(key=key)
    again = await alice.slash(adults, "show", id=key)  # where it was made, as before
    assert len(again.response.attachments) == 1


async def test_show_posts_no_set_of_a_private_thread_for_a_member_not_in_it(
    simcord_env: Any, guild: Any, channel: Any, alice: Any, bob: Any
) -> None:
    private_thread = simcord_env.backend.create_thread(
        channel.id, "alice and the mods", alice.id, type=discord.ChannelType.private_thread.value
    )
    thread = ChannelHandle(simcord_env, guild, private_thread)
    made = await alice.slash(thread, "imagine", prompt="a fox for the mods only")
    key = key_of(made.response)

    shown = await bob.slash(channel, "show", id=key)  # bob reads the channel, not the thread

    assert said(shown) == NOT_FOUND.format(key=key)
    assert [m for m in channel.history(viewer=bob) if m.attachments] == []


async def test_a_blocked_word_in_small_capitals_or_letter_symbols_is_refused(
    simcord_env: Any, channel: Any, alice: Any, manager: Any, images_api: Any
) -> None:
    await setting(manager, channel, "blocked-words", add="fire")
    disguised = [
        "\ua730\u026a\u0280\u1d07 and ice",  # small capitals: ꜰɪʀᴇ
        "\U0001f175\U0001f178\U0001f181\U0001f174 and ice",  # negative squared letters
        "\U0001f155\U0001f158\U0001f161\U0001f154 and ice",  # negative circled letters
        "\U0001f1eb\U0001f1ee\U0001f1f7\U0001f1ea and ice",  # regional indicator letters
    ]
    for prompt in disguised:
        refused = await alice.slash(channel, "imagine", prompt=prompt)
        assert refused.response.content == BLOCKED, prompt
    assert images_api.generation_requests == []


async def test_show_posts_a_set_as_spoilers_where_the_server_wants_spoilers(
    simcord_env: Any, guild: Any, channel: Any, alice: Any, manager: Any
) -> None:
    hidden = guild.create_text_channel("hidden")
    await setting(manager, channel, "spoilers", value=hidden.mention)
    made = await alice.slash(channel, "imagine", prompt="a lake")  # not a spoiler here
    assert [a.filename for a in made.response.attachments] == ["imagine-1.png"]

    shown = await alice.slash(hidden, "show", id=key_of(made.response))

    assert [a.filename for a in shown.response.attachments] == ["SPOILER_imagine-1.png"]


async def test_the_moderation_log_shows_a_prompt_as_written_not_as_markdown(
    simcord_env: Any, guild: Any, channel: Any, alice: Any, manager: Any
) -> None:
    declare_thumbnail_waits(simcord_env)
    mod_log = guild.create_text_channel("mod-log")
    await setting(manager, channel, "log-channel", value=mod_log.mention)
    # A masked link moderators might follow, and a heading hiding what follows it.
    prompt = "[review this flag](https://example.com/phish)\n# all fine\n||a fox||"

    await alice.slash(channel, "imagine", prompt=prompt, model="dall-e-2")

    (entry,) = [message for message in mod_log.history() if message.embeds]
    shown = entry.embeds[0].description
    assert "\\[review this flag](https://example.com/phish)" in shown
    assert "\\# all fine" in shown and "\\|\\|a fox\\|\\|" in shown


async def test_a_forged_delete_removes_nothing_of_another_members_set(
    simcord_env: Any, channel: Any, alice: Any, bob: Any, images_api: Any
) -> None:
    posted = await posted_in_three_messages(channel, alice, images_api)
    key = key_of(posted.response)

    # bob's id as the asker's, alice's key: the follow-ups named are hers.
    custom_id = f"imagine:delete:{key}:{bob.id}"
    await bob.click(forged(simcord_env, channel, bob, custom_id), custom_id=custom_id)

    assert posted.response is not None
    assert [len(m.attachments) for m in posted.followups if not m.ephemeral] == [1, 1]
    again = await alice.click(posted.response, label="Delete")  # hers still goes whole
    assert posted.response is None and posted.followups == [] and again.followups == []


async def test_show_keeps_to_the_servers_bars_channels_and_blocked_words(
    simcord_env: Any, guild: Any, channel: Any, alice: Any, bob: Any, manager: Any
) -> None:
    made = await alice.slash(channel, "imagine", prompt="a red fox")
    key = key_of(made.response)
    general = guild.create_text_channel("general")
    await setting(manager, channel, "channels", value=channel.mention)
    await setting(manager, channel, "bar-member", member=bob, barred=True)

    barred = await bob.slash(channel, "show", id=key)
    elsewhere = await alice.slash(general, "show", id=key)
    await setting(manager, channel, "blocked-words", add="fox")
    blocked = await alice.slash(channel, "show", id=key)

    assert said(barred) == BARRED
    assert said(elsewhere) == f"On this server, /show works in {channel.mention}."
    assert said(blocked) == BLOCKED
    reposts = [m for c in (channel, general) for m in c.history(viewer=manager) if m.attachments]
    assert reposts == [made.response.message]  # the original only


async def test_vary_image_on_another_apps_message_names_no_parent_set(
    simcord_env: Any, channel: Any, alice: Any, bob: Any, images_api: Any
) -> None:
    made = await alice.slash(channel, "imagine", prompt="a fox", model="dall-e-2")
    key = key_of(made.response)
    backend = simcord_env.backend
    stored = backend.create_message(
        channel.id,
        bob.id,
        "look",
        attachments=backend.store_attachments(channel.id, [("cat.png", png())]),
        components=[
            {
                "type": 1,
                "components": [
                    {"type": 2, "style": 2, "label": "x", "custom_id": f"imagine:info:{key}"}
                ],
            }
        ],
    )
    varied = await bob.context_menu(channel, "Vary image", to_discord_message(simcord_env, stored))
    assert len(varied.response.attachments) == 1

    theirs = card(await alice.click(made.response, label="Info"))
    assert "Made from it" not in theirs  # bob's variation of another image is not hers


async def test_a_card_names_no_set_in_a_channel_the_reader_cannot_see(
    simcord_env: Any, guild: Any, channel: Any, alice: Any, manager: Any
) -> None:
    closed = discord.PermissionOverwrite(view_channel=False)
    opened = discord.PermissionOverwrite(view_channel=True)
    mods = guild.create_text_channel(
        "mods", overwrites={guild.default_role: closed, manager: opened}
    )
    made = await alice.slash(channel, "imagine", prompt="a fox", model="dall-e-2")
    shown = await manager.slash(mods, "show", id=key_of(made.response))
    await manager.click(shown.response, label="Reroll")  # in the moderators' channel

    hers = card(await alice.click(made.response, label="Info"))
    theirs = card(await manager.click(made.response, label="Info"))

    assert "Made from it" not in hers  # not named, not counted, no link to #mods
    assert f"/channels/{guild.id}/{mods.id}/" in theirs["Made from it"]
