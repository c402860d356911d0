"""Installed by a member, used anywhere: /imagine, /usage, /imagine-settings and the buttons in the
bot's DM, a group DM and a server that never installed the bot (a user install), through simcord.

simcord sends every interaction as from a guild install (``authorizing_integration_owners``
empty, context 0 in a server, 1 in a DM) and always has the bot in a server it creates. The
fixture here rewrites the payloads as Discord sends them for a user install: the member's id under
``1``, the context asked for, the app's permissions limited to what a response may use, and the
member's ``USE_EXTERNAL_APPS``. That the bot is not in the server is asserted from the other side:
every request it makes for such an interaction goes through the interaction (``/interactions`` and
``/webhooks``), none to the server's channels.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import discord
import pytest
import simcord
import simcord.interactions

from bot.app import ImagineBot
from bot.images.pricing import format_usd
from bot.requests.buttons import belongs_here
from bot.requests.saved_requests import SavedRequest
from bot.requests.server_admission import BARRED
from bot.requests.where import Context, Installation, Where
from tests.cogs import test_bot_budgets, test_buttons
from tests.cogs.conftest import RECOMMENDED_SHARDS, make_settings
from tests.cogs.support import fields, json_log_lines, setting, upload_limit
from tests.cogs.test_bot_budgets import IMAGE, dollars, resets_today
from tests.cogs.test_edit import png
from tests.cogs.test_lifecycle import command_syncs
from tests.cogs.test_log_privacy import SNOWFLAKE
from tests.databases import POSTGRES_MISSING, PostgresServer, ledger_rows
from tests.fakes.images_api import FakeImagesAPI, api_error, incompressible_png

BOT_DM, PRIVATE_CHANNEL = 1, 2
USE_EXTERNAL_APPS = discord.Permissions(use_external_apps=True).value
# What an app without a bot user in that server may use, as Discord computes app_permissions.
RESPONSE_PERMISSIONS = discord.Permissions(
    attach_files=True, embed_links=True, mention_everyone=True, external_emojis=True
).value
# What the member reads (quoted here, so that a test fails when the bot says otherwise).
NO_SERVER_SETTINGS = (
    "There are no server settings here: this is not a server that installed the bot, so your "
    "own limits and budget apply. A server's managers change its settings in that server."
)
PERSONAL_TITLE = "Your personal usage (DMs, group DMs, servers without the bot)"
PERSONAL_FIELD = "Personal (DMs and servers without the bot)"
PERSONAL_BUDGET = "Your personal budget (DMs and servers that have not installed this bot)"
FOLLOW_UPS_STAY = (
    "The message with the buttons is deleted, but not the {count} after it with the rest of "
    "these images: outside a server that installed the bot, Discord lets the bot delete those "
    "only within 15 minutes of the request, and that time has passed (or the bot restarted)."
)
ONLY_YOU = (
    "Only you can see these images: this server does not let members' own apps post in public."
)


@contextmanager
def user_install(
    *,
    context: int | None = None,
    external_apps: bool = True,
    attach_files: bool = True,
    server_too: bool = False,
    authorized_by: int | None = None,
    bot_in_server: bool | None = None,
) -> Iterator[None]:
    """Interactions as Discord sends them for the member's own install of the bot (not the
    server's): ``context`` in place of simcord's (None: 0 in a server, 1 in a DM);
    ``external_apps``: whether the member may use external apps in the server's channel;
    ``attach_files``: whether apps may attach files there; ``server_too``: the server installed
    the bot as well (both installs authorize the interaction); ``authorized_by``: whose install
    authorized it, where not the acting member's (a press under another member's images);
    ``bot_in_server``: whether the bot is a member of the server (by default only where the
    server installed it: simcord puts the bot in every server, so the fixture hides the server
    from the bot's cache otherwise)."""
    real = simcord.interactions.base_payload
    real_get_guild = discord.Client.get_guild
    hidden: set[int] = set()
    if bot_in_server is None:
        bot_in_server = server_too

    def get_guild(self: discord.Client, guild_id: int, /) -> discord.Guild | None:
        return None if guild_id in hidden else real_get_guild(self, guild_id)

    def as_user_install(*args: Any, **kwargs: Any) -> Any:
        record, payload = real(*args, **kwargs)
        owner = kwargs["user_id"] if authorized_by is None else authorized_by
        payload["authorizing_integration_owners"] = {"1": str(owner)}
        if context is not None:
            payload["context"] = context
        if kwargs["guild_id"] is not None and not bot_in_server:
            hidden.add(int(kwargs["guild_id"]))
        if server_too:
            payload["authorizing_integration_owners"]["0"] = str(kwargs["guild_id"])
        elif kwargs["guild_id"] is not None:
            member = payload["member"]
            allowed = int(member["permissions"])
            allowed = allowed | USE_EXTERNAL_APPS if external_apps else allowed & ~USE_EXTERNAL_APPS
            member["permissions"] = str(allowed)
            app = int(payload["app_permissions"]) & RESPONSE_PERMISSIONS
            if not attach_files:
                app &= ~discord.Permissions(attach_files=True).value
            payload["app_permissions"] = str(app)
        return record, payload

    simcord.interactions.base_payload = as_user_install
    discord.Client.get_guild = get_guild  # type: ignore[method-assign]
    try:
        yield
    finally:
        simcord.interactions.base_payload = real
        discord.Client.get_guild = real_get_guild  # type: ignore[method-assign]


def channel_requests(env: Any, since: int = 0) -> list[str]:
    """The bot's requests to channels' own routes (sends, fetches, deletes) after the first
    ``since``: a bot that is not in the server or the group DM may make none."""
    return [
        f"{r.method} {r.path}" for r in env.http_requests[since:] if r.path.startswith("/channels/")
    ]


def received(bot: ImagineBot, place: str, command: str = "imagine") -> float:
    value = bot.metrics.registry.get_sample_value(
        "imagine_requests_received_total", {"command": command, "place": place}
    )
    return value or 0.0


def spent(requests: int) -> str:
    """/usage's line for ``requests`` dall-e-2 images of one each."""
    images = "1 image" if requests == 1 else f"{requests} images"
    count = "1 request" if requests == 1 else f"{requests} requests"
    return f"{format_usd(IMAGE * requests)} · {images} · {count}"


@pytest.fixture
def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, postgres_server: PostgresServer | None
) -> str:
    """SQLite, or PostgreSQL where a test asks for both (the budget's)."""
    if getattr(request, "param", "sqlite") == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"
    if postgres_server is None:
        pytest.skip(POSTGRES_MISSING)
    return postgres_server.create_database()


# The bot's DATABASE_URL (this module's database_url) and budgets, as test_bot_budgets sets them.
budgets = test_bot_budgets.budgets
bot_overrides = test_bot_budgets.bot_overrides


@pytest.fixture
def alice_user(simcord_env: Any) -> Any:
    """alice herself, who also uses the bot in her DM with it."""
    return simcord_env.create_user("alice")


@pytest.fixture
def alice(guild: Any, alice_user: Any) -> Any:
    return guild.add_member(alice_user)


restarted = test_buttons.restarted  # a fixture: the bot restarted on the same database

# -- where the commands may be installed and used -----------------------------------------------


async def test_every_command_may_be_installed_by_a_member_and_used_anywhere(
    simcord_env: Any, simcord_bot: ImagineBot
) -> None:
    definitions = [command.to_dict(simcord_bot.tree) for command in simcord_bot.tree.get_commands()]
    names = {definition["name"] for definition in definitions}
    assert names >= {"imagine", "edit", "usage", "imagine-settings", "Vary image"}
    for definition in definitions:
        assert definition["integration_types"] == [0, 1], definition["name"]
        assert definition["contexts"] == [0, 1, 2], definition["name"]


async def test_allow_user_install_off_keeps_every_command_to_servers_and_syncs_the_change(
    images_api: FakeImagesAPI, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    for allowed, installs, contexts in ((True, [0, 1], [0, 1, 2]), (False, [0], [0])):
        bot = ImagineBot(make_settings(images_api.base_url, data, allow_user_install=allowed))
        async with simcord.run(bot, shard_count=RECOMMENDED_SHARDS) as env:
            # The second start syncs too: the definitions changed.
            assert len(command_syncs(env)) == 1
            for command in bot.tree.get_commands():
                assert command.to_dict(bot.tree)["integration_types"] == installs
                assert command.to_dict(bot.tree)["contexts"] == contexts
            in_dms = "imagine" in env.create_user("alice").available_commands()
            assert in_dms is allowed


# -- /imagine ------------------------------------------------------------------------------------


async def test_imagine_in_the_bots_dm_through_a_user_install_is_personal(
    simcord_env: Any, simcord_bot: ImagineBot, alice_user: Any, database_url: str
) -> None:
    before = len(simcord_env.http_requests)
    with user_install():
        result = await alice_user.slash("imagine", prompt="a lighthouse", model="dall-e-2")

    reply = result.response
    assert len(reply.attachments) == 1 and not reply.ephemeral
    assert not reply.content
    assert reply.embeds[0].author.name == "alice imagined"
    assert channel_requests(simcord_env, before) == []
    (row,) = await ledger_rows(database_url)
    assert (row["guild_id"], row["context"], row["installation"]) == (None, "bot_dm", "user")
    assert received(simcord_bot, "dm") == 1


async def test_imagine_in_a_server_without_the_bot_ignores_its_settings_and_sends_nothing_there(
    simcord_env: Any,
    simcord_bot: ImagineBot,
    channel: Any,
    alice: Any,
    manager: Any,
    database_url: str,
) -> None:
    # What the server chose applies to its own install, not to a member's.
    await setting(manager, channel, "max-images", value=1)
    before = len(simcord_env.http_requests)
    with user_install():
        result = await alice.slash(channel, "imagine", prompt="foxes", count=2, model="dall-e-2")

    assert len(result.response.attachments) == 2
    assert not result.response.content
    assert channel_requests(simcord_env, before) == []
    (row,) = await ledger_rows(database_url)
    assert (row["guild_id"], row["context"], row["installation"]) == (None, "guild", "user")
    assert received(simcord_bot, "user_install") == 1
    # The server's own usage does not count it.
    server = fields((await manager.slash(channel, "usage", scope="server")).response.embeds[0])
    assert server["This month (UTC)"] == "$0.00 · 0 images · 0 requests"


async def test_a_member_who_installed_the_bot_spends_in_a_server_that_installed_it_too(
    simcord_env: Any,
    simcord_bot: ImagineBot,
    guild: Any,
    channel: Any,
    alice: Any,
    database_url: str,
) -> None:
    with user_install(server_too=True):
        result = await alice.slash(channel, "imagine", prompt="a cat", model="dall-e-2")
    assert len(result.response.attachments) == 1
    (row,) = await ledger_rows(database_url)
    assert (row["guild_id"], row["context"], row["installation"]) == (guild.id, "guild", "guild")
    assert received(simcord_bot, "server") == 1


async def test_where_the_server_turned_off_external_apps_the_answer_says_only_the_member_sees_it(
    simcord_env: Any, channel: Any, alice: Any
) -> None:
    with user_install(external_apps=False):
        result = await alice.slash(channel, "imagine", prompt="a cat", model="dall-e-2")
    assert len(result.response.attachments) == 1
    assert result.response.content == ONLY_YOU


async def test_where_apps_may_not_attach_files_nothing_is_paid_for_and_the_member_is_told(
    simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI
) -> None:
    with user_install(attach_files=False):
        result = await alice.slash(channel, "imagine", prompt="a cat", model="dall-e-2")
    assert result.response.ephemeral
    assert result.response.content == (
        "This server does not let apps attach files in this channel, so the bot cannot post "
        "images here. Try another channel, or your DM with the bot."
    )
    assert images_api.generation_requests == []


@pytest.mark.parametrize("budgets", [{"allow_user_install": False}])
async def test_with_allow_user_install_off_a_lingering_user_install_is_refused(
    simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI
) -> None:
    with user_install():
        refused = await alice.slash(channel, "imagine", prompt="a cat", model="dall-e-2")
    assert refused.response.ephemeral
    assert refused.response.content == "This bot works only in servers that installed it."
    assert images_api.generation_requests == []
    served = await alice.slash(channel, "imagine", prompt="a cat", model="dall-e-2")
    assert len(served.response.attachments) == 1  # through the server's install


@pytest.mark.parametrize("budgets", [{"max_images_per_request": 10}])
async def test_ten_large_images_fit_within_five_follow_ups_for_a_user_install(
    simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI
) -> None:
    image = incompressible_png(300, 300)  # one fills a message at this limit
    images_api.image_bytes = image
    before = len(simcord_env.http_requests)
    with user_install(context=PRIVATE_CHANNEL), upload_limit(len(image) + 1000):
        result = await alice.slash(channel, "imagine", prompt="ten cats", count=10)

    messages = [result.response, *result.followups]
    assert sum(len(message.attachments) for message in messages) == 10
    # Discord takes at most 5 follow-ups; one is kept for a private sentence.
    assert 1 <= len(result.followups) <= 4
    record = simcord_env.backend.interactions[max(simcord_env.backend.interactions)]
    assert record.followup_ids == [message.id for message in result.followups]
    assert channel_requests(simcord_env, before) == []


async def test_in_a_server_with_the_bot_images_take_the_messages_they_need(
    simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI
) -> None:
    image = incompressible_png(300, 300)
    images_api.image_bytes = image
    with upload_limit(len(image) + 1000):
        result = await alice.slash(channel, "imagine", prompt="four cats", count=4)
    assert [len(m.attachments) for m in [result.response, *result.followups]] == [1] * 4
    for message in [result.response, *result.followups]:
        assert await message.attachments[0].read() == image  # not made smaller


# -- /imagine-settings and /usage ----------------------------------------------------------------


async def test_imagine_settings_is_refused_outside_servers_that_installed_the_bot(
    simcord_env: Any, channel: Any, manager: Any, alice_user: Any
) -> None:
    with user_install():
        elsewhere = await manager.slash(channel, "imagine-settings show")
        in_a_dm = await alice_user.slash("imagine-settings show")
    for refused in (elsewhere, in_a_dm):
        assert refused.response.ephemeral
        assert refused.response.content == NO_SERVER_SETTINGS


async def test_usage_in_a_server_adds_a_line_for_personal_spending(
    simcord_env: Any, channel: Any, alice: Any
) -> None:
    with user_install():
        await alice.slash(channel, "imagine", prompt="a cat", model="dall-e-2")

    shown = (await alice.slash(channel, "usage")).response.embeds[0]
    assert shown.title == "Your usage on this server"
    assert fields(shown)["Today (UTC)"] == "$0.00 · 0 images · 0 requests"
    assert fields(shown)[PERSONAL_FIELD] == f"This month: {spent(1)}"


async def test_usage_in_a_dm_is_the_personal_scope(simcord_env: Any, alice_user: Any) -> None:
    with user_install():
        await alice_user.slash("imagine", prompt="a cat", model="dall-e-2")
        shown = (await alice_user.slash("usage")).response
    assert shown.ephemeral
    embed = shown.embeds[0]
    assert embed.title == PERSONAL_TITLE
    assert fields(embed)["Today (UTC)"] == spent(1)
    assert fields(embed)["Budgets"] == "No personal budget."


# -- budgets ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
@pytest.mark.parametrize("budgets", [{"member_budget": dollars(1), "server_budget": dollars(1)}])
async def test_member_budget_is_a_personal_window_never_charged_to_a_server(
    simcord_env: Any,
    guild: Any,
    channel: Any,
    alice: Any,
    alice_user: Any,
    bob: Any,
    images_api: FakeImagesAPI,
    database_url: str,
) -> None:
    with user_install():
        first = await alice_user.slash("imagine", prompt="a cat", model="dall-e-2")  # her DM
        refused = await alice.slash(channel, "imagine", prompt="a cat", model="dall-e-2")
        personal = fields((await alice_user.slash("usage")).response.embeds[0])["Budgets"]
    one = format_usd(IMAGE)
    assert len(first.response.attachments) == 1
    assert refused.response.ephemeral
    assert refused.response.content == (
        f"{PERSONAL_BUDGET} is {one} per day (calendar days, UTC): {one} is already spent or "
        f"reserved for requests still running, and this request may cost up to {one}. "
        f"It resets {resets_today()}."
    )
    assert personal.startswith(f"Yours (personal): {one} per day: {one} used or reserved, $0.00")
    # The server's budgets are its own: alice there, through its install, then bob.
    in_server = await alice.slash(channel, "imagine", prompt="a dog", model="dall-e-2")
    assert len(in_server.response.attachments) == 1
    server_full = await bob.slash(channel, "imagine", prompt="a dog", model="dall-e-2")
    assert server_full.response.content.startswith("This server's budget is")
    assert len(images_api.generation_requests) == 2
    rows = await ledger_rows(database_url)
    assert [(row["guild_id"], row["installation"]) for row in rows] == [
        (None, "user"),
        (guild.id, "guild"),
    ]


# -- the buttons -----------------------------------------------------------------------------------


async def test_a_button_under_images_in_a_dm_works_after_a_restart(
    simcord_env: Any, alice_user: Any, images_api: FakeImagesAPI, restarted: Any, database_url: str
) -> None:
    with user_install():
        first = await alice_user.slash("imagine", prompt="a red fox", model="dall-e-2")
    await restarted(database_url=database_url)
    before = len(simcord_env.http_requests)
    with user_install():
        again = await alice_user.click(first.response, label="Reroll")

    assert len(again.response.attachments) == 1
    assert again.response.embeds[0].description == "a red fox"
    assert channel_requests(simcord_env, before) == []
    rows = await ledger_rows(database_url)
    assert [(row["guild_id"], row["context"], row["installation"]) for row in rows] == [
        (None, "bot_dm", "user")
    ] * 2


async def posted_in_three_messages(channel: Any, alice: Any, images_api: FakeImagesAPI) -> Any:
    """Alice's three images through her own install in a server without the bot, one a
    message: the first, with the buttons, and two follow-ups."""
    image = incompressible_png(300, 300)
    images_api.image_bytes = image
    with user_install(), upload_limit(len(image) + 1000):
        result = await alice.slash(channel, "imagine", prompt="three cats", count=3)
    assert [len(m.attachments) for m in [result.response, *result.followups]] == [1, 1, 1]
    return result


async def test_delete_in_a_server_without_the_bot_deletes_every_message_through_the_interaction(
    simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI
) -> None:
    posted = await posted_in_three_messages(channel, alice, images_api)
    before = len(simcord_env.http_requests)
    with user_install():
        pressed = await alice.click(posted.response, label="Delete")

    assert posted.response is None
    assert posted.followups == []
    assert pressed.followups == []  # nothing said: it is done
    assert channel_requests(simcord_env, before) == []


async def test_delete_after_the_token_expired_deletes_what_it_can_and_says_what_stays(
    simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI
) -> None:
    posted = await posted_in_three_messages(channel, alice, images_api)
    await simcord_env.advance_time(16 * 60)  # the posting interaction's token is gone
    before = len(simcord_env.http_requests)
    with user_install():
        pressed = await alice.click(posted.response, label="Delete")

    assert posted.response is None  # the pressed message: this press's own to delete
    assert len(posted.followups) == 2
    (told,) = pressed.followups
    assert told.ephemeral
    assert told.content == FOLLOW_UPS_STAY.format(count="2 messages")
    assert channel_requests(simcord_env, before) == []


# -- what the log says ---------------------------------------------------------------------------


async def test_json_log_lines_tell_the_places_apart_without_raw_ids(
    simcord_env: Any, channel: Any, alice: Any, alice_user: Any, images_api: FakeImagesAPI
) -> None:
    for _ in range(3):  # each request fails, which logs a line of its own
        images_api.push(api_error(400, "invalid_request_error", None))
    with json_log_lines(simcord_env.bot.settings) as stream:
        await alice.slash(channel, "imagine", prompt="a cat", model="dall-e-2")
        with user_install():
            await alice_user.slash("imagine", prompt="a cat", model="dall-e-2")
            await alice.slash(channel, "imagine", prompt="a cat", model="dall-e-2")

    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    failed = [line for line in lines if "/imagine for" in line["message"]]
    assert [line.get("place") for line in failed] == ["server", "dm", "user_install"]
    above_debug = [line for line in lines if line["level"] != "DEBUG"]
    assert not SNOWFLAKE.search(json.dumps(above_debug))


def test_a_press_outside_servers_finds_only_a_request_made_in_its_own_dm_or_group() -> None:
    """Outside servers every DM has guild None: a forged button id naming another member's DM
    request (whose Edit prompt would show its prompt) is no request here."""
    saved = SavedRequest(
        key=1, member_id=1, guild_id=None, channel_id=10, prompt="private", model="dall-e-2",
        size="1024x1024", quality="standard", count=1, options={},
    )  # fmt: skip
    here: Any = SimpleNamespace(guild_id=None, channel_id=10)
    elsewhere: Any = SimpleNamespace(guild_id=None, channel_id=11)
    assert belongs_here(saved, here)
    assert not belongs_here(saved, elsewhere)


async def test_vary_finds_an_image_in_a_follow_up_through_the_interaction_while_it_can(
    simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI
) -> None:
    posted = await posted_in_three_messages(channel, alice, images_api)
    third = await posted.followups[-1].attachments[0].read()
    before = len(simcord_env.http_requests)
    with user_install():
        await alice.click(posted.response, label="Vary 3")
    (sent,) = images_api.edit_requests
    assert [part.data for part in sent.body["image"]] == [third]
    assert channel_requests(simcord_env, before) == []

    await simcord_env.advance_time(16 * 60)
    with user_install():
        refused = await alice.click(posted.response, label="Vary 3")
    assert refused.response.ephemeral
    assert refused.response.content == (
        "That image is in a later message the bot can no longer read here: outside a server that "
        "installed the bot, Discord allows it only within 15 minutes of the request. Use Vary "
        "image on that message instead."
    )
    assert len(images_api.edit_requests) == 1


async def test_edit_in_a_group_dm_through_a_user_install_is_personal(
    simcord_env: Any, alice_user: Any, images_api: FakeImagesAPI, database_url: str
) -> None:
    before = len(simcord_env.http_requests)
    with user_install(context=PRIVATE_CHANNEL):
        result = await alice_user.slash("edit", image=("cat.png", png()), prompt="a hat")
    assert result.response.embeds[0].author.name == "alice edited"
    assert len(images_api.edit_requests) == 1
    assert channel_requests(simcord_env, before) == []
    (row,) = await ledger_rows(database_url)
    assert (row["guild_id"], row["context"], row["installation"], row["kind"]) == (
        None,
        "private_channel",
        "user",
        "edit",
    )


@pytest.mark.parametrize("budgets", [{"max_images_per_request": 10}])
async def test_a_follow_up_refused_as_too_large_is_retried_within_the_five(
    simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI
) -> None:
    image = incompressible_png(300, 300)
    images_api.image_bytes = image
    simcord_env.inject_error("POST", "/webhooks/*", status=413, code=40005, times=1)
    with user_install(), upload_limit(len(image) + 1000):
        result = await alice.slash(channel, "imagine", prompt="ten cats", count=10)

    messages = [result.response, *result.followups]
    assert sum(len(message.attachments) for message in messages) == 10
    assert 1 <= len(result.followups) <= 4


async def test_a_press_under_a_user_installs_images_by_another_member_is_their_personal_request(
    simcord_env: Any, channel: Any, alice: Any, bob: Any, database_url: str
) -> None:
    with user_install():
        first = await alice.slash(channel, "imagine", prompt="a cat", model="dall-e-2")
    before = len(simcord_env.http_requests)
    with user_install(authorized_by=alice.id):  # alice's install authorizes bob's press
        again = await bob.click(first.response, label="Reroll")

    assert len(again.response.attachments) == 1
    assert channel_requests(simcord_env, before) == []
    rows = await ledger_rows(database_url)
    assert [(row["member_id"], row["guild_id"], row["installation"]) for row in rows] == [
        (alice.id, None, "user"),
        (bob.id, None, "user"),
    ]


async def test_a_user_install_in_a_server_that_has_the_bot_is_that_servers_request(
    simcord_env: Any, guild: Any, channel: Any, alice: Any, bob: Any, manager: Any,
    database_url: str,
) -> None:  # fmt: skip
    # Discord names only the member's install where the server's install cannot authorize the
    # command (its integration permissions keep it from them, or a press under images their
    # install posted before the server added the bot): the server's bar still applies.
    await setting(manager, channel, "bar-member", member=bob, barred=True)
    with user_install(bot_in_server=True):
        barred = await bob.slash(channel, "imagine", prompt="a cat", model="dall-e-2")
        made = await alice.slash(channel, "imagine", prompt="a cat", model="dall-e-2")

    assert barred.response.ephemeral and barred.response.content == BARRED
    assert len(made.response.attachments) == 1
    (row,) = await ledger_rows(database_url)  # alice's, counted in the server's budgets
    assert (row["member_id"], row["guild_id"], row["installation"]) == (alice.id, guild.id, "user")


def test_only_the_members_install_keeps_discords_follow_up_limit_in_a_server_with_the_bot() -> None:
    assert Where(Context.GUILD, Installation.USER, 1).follow_up_limit == 5
    assert Where(Context.GUILD, Installation.GUILD, 1).follow_up_limit is None
    assert Where(Context.BOT_DM, Installation.USER, None).follow_up_limit == 5
