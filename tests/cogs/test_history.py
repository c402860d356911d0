"""Know what you made, keep it to yourself, find it again (issue 20, item 3): the Info card,
private results, Send to DM, /history and /show, in simcord against the fake Images API."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
import simcord.http.routes.messages as simcord_messages
from simcord.backend import errors as simcord_errors

from bot.requests import history, info
from bot.requests.server_admission import BARRED
from tests.cogs.support import fields, setting, uploaded
from tests.cogs.test_buttons import labels, posted_in_three_messages, restarted  # noqa: F401 - the restart fixture
from tests.fakes.images_api import FakeImagesAPI

NOT_FOUND = "You have no request {key} that you can see here."


@pytest.fixture
def bot_overrides(database_url: str) -> dict[str, Any]:
    """Every test here on SQLite and on PostgreSQL: costs and pages are read from the ledger's
    database."""
    return {"database_url": database_url}


def key_of(message: Any) -> int:
    """The key of the request behind a posted set, read from its buttons."""
    for row in message.components:
        for button in row["components"]:
            match = re.fullmatch(r"imagine:[a-z]+:([0-9]+)(:.*)?", button.get("custom_id", ""))
            if match:
                return int(match[1])
    raise AssertionError("no buttons")


def jump(channel: Any, message: Any) -> str:
    return f"https://discord.com/channels/{channel.guild.id}/{channel.id}/{message.id}"


def private_messages(result: Any) -> list[Any]:
    """What the interaction answered that only its member sees."""
    found = [result.response] if result.response is not None else []
    return [m for m in found + list(result.followups) if m.ephemeral]


def card(result: Any) -> dict[str, str]:
    (message,) = private_messages(result)
    (embed,) = message.embeds
    return {"title": embed.title, **fields(embed)}


def said(result: Any) -> str:
    return " ".join(str(m.content) for m in private_messages(result))


# -- Info ----------------------------------------------------------------------------------------


async def test_info_shows_the_request_and_links_both_ways_after_a_reroll(
    simcord_env: Any, channel: Any, alice: Any, bob: Any, images_api: FakeImagesAPI
) -> None:
    first = await alice.slash(
        channel, "imagine", prompt="a red fox", model="gpt-image-1", size="1024x1536",
        quality="low", format="webp",
    )  # fmt: skip
    again = await bob.click(first.response, label="Reroll")
    key, rerolled = key_of(first.response), key_of(again.response)

    shown = card(await alice.click(first.response, label="Info"))

    assert shown["title"] == f"Request {key}"
    assert (shown["Model"], shown["Size"], shown["Quality"]) == ("gpt-image-1", "1024x1536", "low")
    assert "output_format webp" in shown["Options"]
    assert shown["Cost"].startswith("$")
    assert f"`{key}`" in shown["Request id"]
    assert shown["Asked by"] == alice.mention
    assert re.fullmatch(r"<t:[0-9]+:f> \(<t:[0-9]+:R>\)", shown["When"])
    assert jump(channel, first.response) in shown["Posted"]
    assert shown["Made from it"] == f"Reroll: [request {rerolled}]({jump(channel, again.response)})"

    # The reroll's card links back, and the message menu shows the same card.
    child = card(await bob.click(again.response, label="Info"))
    assert child["Made from"] == f"Reroll of [request {key}]({jump(channel, first.response)})"
    menu = card(await bob.context_menu(channel, "Image info", again.response.message))
    assert menu == child
    assert len(images_api.generation_requests) == 2  # Info asks the image service nothing


async def test_another_members_private_set_is_never_named_on_a_card(
    simcord_env: Any, channel: Any, alice: Any, bob: Any
) -> None:
    public = await bob.slash(channel, "imagine", prompt="a public fox")
    # alice shows bob's set to herself only and rerolls it there: her reroll is private.
    shown = await alice.slash(channel, "show", id=key_of(public.response), private=True)
    assert shown.response.ephemeral
    rerolled = await alice.click(shown.response, label="Reroll")
    assert rerolled.response.ephemeral
    assert channel.history(viewer=bob) == [public.response.message]

    theirs = card(await bob.click(public.response, label="Info"))
    assert "Made from it" not in theirs  # not named, not counted
    hers = card(await alice.click(public.response, label="Info"))
    assert hers["Made from it"] == (
        f"Reroll: request {key_of(rerolled.response)}, private (only its member saw it)"
    )


async def test_info_after_a_restart_and_the_lineage_of_the_vary_image_menu(
    simcord_env: Any,
    channel: Any,
    alice: Any,
    bob: Any,
    restarted: Any,  # noqa: F811
    database_url: str,
) -> None:
    first = await alice.slash(channel, "imagine", prompt="a fox", model="dall-e-2")
    varied = await bob.context_menu(channel, "Vary image", first.response.message)
    before = card(await alice.click(first.response, label="Info"))

    await restarted(database_url=database_url)  # the new bot reads it all from the database
    after = card(await alice.click(first.response, label="Info"))

    assert after == before
    assert after["Cost"] == "$0.02"
    link = f"[request {key_of(varied.response)}]({jump(channel, varied.response)})"
    assert after["Made from it"] == f"Vary image: {link}"
    child = card(await bob.click(varied.response, label="Info"))
    made_from = f"[request {key_of(first.response)}]({jump(channel, first.response)})"
    assert child["Made from"] == f"Vary image of {made_from}"


# -- private results -----------------------------------------------------------------------------


async def test_private_imagine_answers_only_the_member_and_its_reroll_stays_private(
    simcord_env: Any, channel: Any, alice: Any, bob: Any, images_api: FakeImagesAPI
) -> None:
    result = await alice.slash(channel, "imagine", prompt="a secret fox", private=True)

    reply = result.response
    assert reply.ephemeral and len(reply.attachments) == 1
    assert labels(reply) == ["Reroll", "Edit prompt", "Larger (2048x2048)"]  # no Delete
    assert [b["label"] for b in reply.components[-2]["components"]][-2:] == ["Info", "Send to DM"]
    assert channel.history(viewer=bob) == []

    again = await alice.click(reply, label="Reroll")
    assert again.response.ephemeral and len(again.response.attachments) == 1
    assert channel.history(viewer=bob) == []
    assert len(images_api.generation_requests) == 2


# -- Send to DM ----------------------------------------------------------------------------------


async def test_send_to_dm_sends_a_copy_of_the_set(
    simcord_env: Any, channel: Any, alice: Any, bob: Any, images_api: FakeImagesAPI
) -> None:
    posted = await alice.slash(channel, "imagine", prompt="two foxes", count=2)

    sent = await bob.click(posted.response, label="Send to DM")

    assert said(sent).startswith("A copy is in your direct messages")
    (copy,) = bob.user.dm_channel.history()
    assert await uploaded(copy) == images_api.served[:2]
    assert copy.embeds[0].description == "two foxes"
    assert jump(channel, posted.response) in fields(copy.embeds[0])["From"]
    assert alice.user.dm_channel.history() == []
    assert len(images_api.generation_requests) == 1


async def test_a_set_in_several_messages_is_sent_and_shown_whole(
    simcord_env: Any, channel: Any, alice: Any, bob: Any, images_api: FakeImagesAPI
) -> None:
    posted = await posted_in_three_messages(channel, alice, images_api)
    images = [await a.read() for m in [posted.response, *posted.followups] for a in m.attachments]

    await bob.click(posted.response, label="Send to DM")
    copies = bob.user.dm_channel.history()
    assert [await a.read() for m in copies for a in m.attachments] == images

    shown = await alice.slash(channel, "show", id=key_of(posted.response))
    reposted = [shown.response, *(m for m in shown.followups if not m.ephemeral)]
    assert [await a.read() for m in reposted for a in m.attachments] == images
    assert len(images_api.generation_requests) == 1


async def test_send_to_dm_says_so_privately_when_the_dms_are_closed(
    simcord_env: Any, channel: Any, alice: Any, bob: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    posted = await alice.slash(channel, "imagine", prompt="a fox")
    real = simcord_messages._send_permissions
    closed = bob.user.dm_channel.id

    def dms_closed(ctx: Any, channel_id: int) -> None:
        if channel_id == closed:  # bob allows no direct messages: Discord answers 50007
            raise simcord_errors.BackendError(403, 50007, "Cannot send messages to this user")
        real(ctx, channel_id)

    monkeypatch.setattr(simcord_messages, "_send_permissions", dms_closed)
    sent = await bob.click(posted.response, label="Send to DM")

    assert said(sent).startswith("The bot cannot send you direct messages")
    assert bob.user.dm_channel.history() == []


async def test_send_to_dm_copies_a_private_set(
    simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI
) -> None:
    private = await alice.slash(channel, "imagine", prompt="a secret fox", private=True)

    sent = await alice.click(private.response, label="Send to DM")

    assert said(sent).startswith("A copy is in your direct messages")
    (copy,) = alice.user.dm_channel.history()
    assert await uploaded(copy) == images_api.served[:1]
    assert "From" not in fields(copy.embeds[0])  # no link to a message only she saw


async def test_send_to_dm_says_when_the_images_are_too_large_for_a_dm(
    simcord_env: Any, channel: Any, alice: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    posted = await alice.slash(channel, "imagine", prompt="a fox")
    monkeypatch.setattr(info, "DM_UPLOAD_LIMIT", 10)  # as a 10 MiB DM limit is to a large image

    sent = await alice.click(posted.response, label="Send to DM")

    assert said(sent) == "These images are too large for a direct message (10 MiB each at most)."
    assert alice.user.dm_channel.history() == []


# -- /history ------------------------------------------------------------------------------------


async def test_history_pages_through_the_members_sets_even_after_a_restart(
    simcord_env: Any,
    channel: Any,
    alice: Any,
    bob: Any,
    restarted: Any,  # noqa: F811
    database_url: str,
) -> None:
    keys = []
    for number in range(7):
        posted = await alice.slash(
            channel, "imagine", prompt=f"fox number {number}", model="dall-e-2"
        )
        keys.append(key_of(posted.response))
    await bob.slash(channel, "imagine", prompt="bob's own cat")

    listed = await alice.slash(channel, "history")

    page = listed.response
    assert page.ephemeral
    shown = [int(k) for k in re.findall(r"\*\*([0-9]+)\*\*", page.content)]
    assert shown == keys[::-1][:5]
    assert "fox number 6" in page.content and "bob's own cat" not in page.content
    assert "$" in page.content and "/channels/" in page.content
    assert [b["label"] for b in page.components[0]["components"]] == ["Next"]

    await alice.click(page, label="Next")
    older = [int(k) for k in re.findall(r"\*\*([0-9]+)\*\*", page.content)]
    assert older == keys[1::-1]
    assert [b["label"] for b in page.components[0]["components"]] == ["Previous"]

    await restarted(database_url=database_url)
    await alice.click(page, label="Previous")
    again = [int(k) for k in re.findall(r"\*\*([0-9]+)\*\*", page.content)]
    assert again == keys[::-1][:5]

    nothing = await bob.slash(channel, "history")
    assert "fox" not in nothing.response.content


async def test_history_in_dms_lists_the_sets_made_in_dms_only(
    simcord_env: Any, channel: Any, alice: Any
) -> None:
    await alice.slash(channel, "imagine", prompt="a fox in the server", model="dall-e-2")
    in_dms = await alice.user.slash("imagine", prompt="a fox in my DMs", model="dall-e-2")

    listed = await alice.user.slash("history")

    page = listed.response.content
    assert "a fox in my DMs" in page and "in the server" not in page
    assert f"/channels/@me/{alice.user.dm_channel.id}/{in_dms.response.id}" in page


# -- /show ---------------------------------------------------------------------------------------


async def test_show_posts_the_members_set_again_without_asking_the_image_service(
    simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI
) -> None:
    posted = await alice.slash(channel, "imagine", prompt="two foxes", count=2)
    key = key_of(posted.response)

    shown = await alice.slash(channel, "show", id=key)

    reply = shown.response
    assert not reply.ephemeral and reply.id != posted.response.id
    assert await uploaded(reply) == images_api.served[:2]
    assert reply.embeds[0].description == "two foxes"
    assert labels(reply) == ["Reroll", "Edit prompt", "Larger (2048x2048)", "Delete"]
    assert len(images_api.generation_requests) == 1

    await alice.click(reply, label="Delete")  # removes the repost, not the original
    assert shown.response is None
    assert posted.response is not None


async def test_show_refuses_what_the_member_may_not_see_and_says_when_it_is_gone(
    simcord_env: Any, channel: Any, guild: Any, alice: Any, bob: Any
) -> None:
    private = await alice.slash(channel, "imagine", prompt="secret", private=True)
    public = await alice.slash(channel, "imagine", prompt="public")
    other_guild = simcord_env.create_guild("Elsewhere")
    elsewhere = other_guild.create_text_channel("art")
    bob_there = other_guild.add_member(bob.user)
    theirs = await bob_there.slash(elsewhere, "imagine", prompt="elsewhere")

    for key in (key_of(private.response), key_of(theirs.response), 999_999):
        refused = await bob.slash(channel, "show", id=key)
        assert said(refused) == NOT_FOUND.format(key=key)
    own_private = await alice.slash(channel, "show", id=key_of(private.response))
    assert "was private" in said(own_private)

    allowed = await bob.slash(channel, "show", id=key_of(public.response))  # a public set here
    assert len(allowed.response.attachments) == 1

    await alice.click(public.response, label="Delete")
    gone = await alice.slash(channel, "show", id=key_of(allowed.response))
    assert "is gone" in said(gone)


# -- a barred member ----------------------------------------------------------------------------


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_barred_member_cannot_show_or_copy_sets_again(
    simcord_env: Any, channel: Any, alice: Any, bob: Any, manager: Any,
    images_api: FakeImagesAPI,
) -> None:  # fmt: skip
    posted = await alice.slash(channel, "imagine", prompt="two foxes", count=2)
    own = await bob.slash(channel, "imagine", prompt="a hen")
    await setting(manager, channel, "bar-member", member=bob, barred=True)
    messages_before = len(channel.history())

    for refused in (
        await bob.slash(channel, "show", id=key_of(own.response)),  # his own set
        await bob.slash(channel, "show", id=key_of(posted.response)),  # a public set here
        await bob.click(posted.response, label="Send to DM"),
    ):
        assert said(refused) == BARRED
    assert len(channel.history()) == messages_before  # nothing posted again
    assert bob.user.dm_channel is None or bob.user.dm_channel.history() == []


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_member_has_one_copy_on_its_way_at_a_time(
    simcord_env: Any, channel: Any, alice: Any, bob: Any, images_api: FakeImagesAPI,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    # Send to DM and /show download and upload a whole set without a request: one member
    # pressing again and again must not queue copy after copy ahead of everyone else's.
    posted = await alice.slash(channel, "imagine", prompt="two foxes", count=2)
    key = key_of(posted.response)
    release = asyncio.Event()
    real = info.read_attachments

    async def held(attachments: Any) -> Any:
        await simcord_env.external_wait(release.wait(), reason="a slow download from the CDN")
        return await real(attachments)

    monkeypatch.setattr(info, "read_attachments", held)
    monkeypatch.setattr(history, "read_attachments", held)
    first = await bob.click(posted.response, label="Send to DM")  # its download held
    again = await bob.click(posted.response, label="Send to DM")
    shown = await bob.slash(channel, "show", id=key)
    others = await alice.click(posted.response, label="Send to DM")  # another member's: waits

    assert said(again) == info.ONE_AT_A_TIME
    assert said(shown) == info.ONE_AT_A_TIME
    release.set()
    await simcord_env.settle()
    assert said(first).startswith("A copy is in your direct messages")
    assert said(others).startswith("A copy is in your direct messages")
    assert len(bob.user.dm_channel.history()) == 1
    assert said(await bob.click(posted.response, label="Send to DM")).startswith("A copy is")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_show_posts_again_only_in_the_channels_the_server_chose(
    simcord_env: Any, guild: Any, channel: Any, alice: Any, manager: Any,
    images_api: FakeImagesAPI,
) -> None:  # fmt: skip
    posted = await alice.slash(channel, "imagine", prompt="a fox")
    art = guild.create_text_channel("art")
    await setting(manager, channel, "channels", value=f"<#{art.id}>")
    messages_before = len(channel.history())

    refused = await alice.slash(channel, "show", id=key_of(posted.response))

    assert said(refused) == f"On this server, /show works in <#{art.id}>."
    assert len(channel.history()) == messages_before
    shown = await alice.slash(art, "show", id=key_of(posted.response))
    assert len(shown.response.attachments) == 1
