"""Find it again: /history, a member's latest sets, and /show, a set posted again.

Decisions:

- /history lists the member's own sets in the server it is used in (in DMs: those made in DMs),
  newest first, :data:`PAGE_SIZE` a page: each with its request id, time, model, cost (from the
  usage ledger), a jump link and the start of its prompt. It is private. Only sets that got
  buttons are kept (:mod:`bot.requests.saved_requests`), so only those are listed.
- Its Previous and Next buttons keep working after a restart: each is a ``DynamicItem`` whose
  ``custom_id`` holds the page's cursor (the key past which the next page starts: keyset
  paging, no offset, so a page never repeats or skips a set made meanwhile). The list is always
  the presser's own, whoever's message the button is on, so a forged cursor shows nothing of
  another member.
- /show posts a set again, with its buttons, where the member may see it:

  * their own set, in the server (or DMs) it was made in;
  * another member's set in this server, when it was posted publicly and the member can read
    the channel it was posted in (view it and read its history; a channel the bot does not see
    counts as not readable; a private thread, only for those who may manage threads: its
    permissions are its parent's and say nothing of who was added to it);
  * never another server's, never a DM's of another member, never a private set of another.

  A set made with the image service's lower moderation (``moderation: low``, which the bot asks
  for only in an age-restricted channel) is shown again publicly only in an age-restricted
  channel: elsewhere it would carry what the server allows only there.

  Whatever is refused gets the same sentence as an id that does not exist, so /show reveals
  nothing of what it refuses. A private set (ephemeral) cannot be shown again, even to its
  member: Discord keeps no copy the bot can read (Send to DM keeps one).
- Reposting does not call the image service: the images are read back from the original
  message's attachments on Discord's CDN (and its follow-ups'), as Send to DM does, and posted
  again. If the original message is gone, the member is told. The repost carries the set's
  buttons, except that its Delete removes the repost (its first message) and belongs to the
  member who used /show. ``private:true`` shows it to the member only. A repost keeps to the
  server's rules as a new set would: a barred member, a channel outside the server's chosen
  ones, a prompt with a word blocked since are refused with the admission's sentences; where
  the server posts results as spoilers, the images are spoilers (one that was stays one).
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any, cast

import discord

from bot.discord_out.replies import (
    DISCORD_FAILURES,
    RESTARTING,
    Replies,
    as_written,
    clip,
    fit_embed,
    step_timeout,
)
from bot.i18n import _, joined, ngettext
from bot.requests.buttons import BUTTON_ID, LOAD_TIMEOUT, Action, ImageButton
from bot.requests.info import (
    DownloadFailed,
    InfoCards,
    Unreadable,
    cost_text,
    groups,
    jump_url,
    load_in_time,
    may_see,
    read_attachments,
)
from bot.requests.saved_requests import SavedRequest, member_page, spent
from bot.requests.server_admission import Admissible, age_restricted, apply_server_settings
from bot.store.server_settings import Rules, SettingsStore

log = logging.getLogger(__name__)

PAGE_SIZE = 5
EXCERPT = 80  # characters of each prompt
# imagine:history:<older|newer>:<cursor>, at most 16 + 5 + 1 + 19 characters.
PAGE_ID = re.compile(r"imagine:history:(?P<way>older|newer):(?P<cursor>[0-9]{1,19})")
# The Delete of a repost: no saved request has key 0, so it removes the pressed message only.
REPOST_KEY = 0

# The sentences members read (one place, for translation).
EMPTY = _("You have no images here yet. Use /imagine to make some.")
NO_MORE = _("There are no more images that way.")
HEADER = _("Your latest images here (newest first):")
NOT_FOUND = _("You have no request {key} that you can see here.")
PRIVATE_SET = _(
    "Request {key} was private: only you saw its images, and the bot cannot read them back. "
    "(Send to DM keeps a copy of a set.)"
)
ORIGINAL_GONE = _("The message of request {key} is gone, so its images cannot be shown again.")
UNREADABLE = _("The bot cannot read your requests right now. Please try again soon.")
NOT_READ = _("The bot could not read the images of request {key} from Discord. Please try again.")
NOT_POSTED = _("Discord did not take the images. Please try again.")
SHOWN = _("Request {key}, shown again by {member}.")
TOO_LARGE = _("The images of request {key} are too large for this server's upload limit.")
TOO_LARGE_LEFT = ngettext(
    "({n} image too large for this server's upload limit was left out.)",
    "({n} images too large for this server's upload limit were left out.)",
)
AGE_RESTRICTED = _(
    "Request {key} was made with the image service's lower moderation in an age-restricted "
    "channel, so it can be shown again only in one (or privately)."
)
PREVIOUS = _("Previous")
NEXT = _("Next")
JUMP = _("jump")
PRIVATE = _("private")


class PageButton(discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]], template=PAGE_ID):
    """Previous (newer sets) or Next (older sets) under a /history list."""

    def __init__(self, way: str, cursor: int, locale: object = None) -> None:
        super().__init__(
            discord.ui.Button(
                style=discord.ButtonStyle.secondary,
                emoji="◀️" if way == "newer" else "▶️",
                label=(PREVIOUS if way == "newer" else NEXT).localized(locale),
                custom_id=f"imagine:history:{way}:{cursor}",
            )
        )
        self.way = way
        self.cursor = cursor

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> PageButton:
        return cls(match["way"], int(match["cursor"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        history = history_of(interaction.client)
        if history is None:
            await Replies(interaction).answer(RESTARTING)
            return
        try:
            if self.way == "older":
                await history.page(interaction, before=self.cursor)
            else:
                await history.page(interaction, after=self.cursor)
        except Exception:
            log.exception("a /history page failed")
            await Replies(interaction).answer(UNREADABLE)


def history_of(client: discord.Client) -> History | None:
    """The bot's :class:`History` (its ``history``); None while it shuts down."""
    return cast("History | None", getattr(client, "history", None))


class History:
    """/history, its pages, and /show."""

    def __init__(
        self, cards: InfoCards, settings: SettingsStore | None = None, rules: Rules | None = None
    ) -> None:
        """``settings`` and ``rules``: the servers' settings, which a repost keeps to as a new
        set would (None: none are applied)."""
        self.cards = cards
        self.saved = cards.saved
        self.settings = settings
        self.rules = rules

    # -- /history --------------------------------------------------------------------------------

    async def page(
        self,
        interaction: discord.Interaction,
        *,
        before: int | None = None,
        after: int | None = None,
    ) -> None:
        """The presser's page of sets (the newest; older than ``before``; newer than
        ``after``): a new private message for /history, the pressed one edited for a button."""
        replies = Replies(interaction)
        pressed = interaction.type is discord.InteractionType.component
        try:
            async with asyncio.timeout(step_timeout(interaction, LOAD_TIMEOUT * 2)):
                rows = await member_page(
                    self.saved,
                    interaction.user.id,
                    interaction.guild_id,
                    before=before,
                    after=after,
                    limit=PAGE_SIZE + 1,
                )
                costs = await spent(self.saved, [r.ledger_id for r in rows if r.ledger_id])
        except Exception as exc:
            log.error("could not read a member's history (%s)", type(exc).__name__)
            await replies.answer(UNREADABLE)
            return
        more = len(rows) > PAGE_SIZE
        if after is not None:
            rows = rows[-PAGE_SIZE:]  # the newest first: the extra one is the first
            newer, older = more, True
        else:
            rows = rows[:PAGE_SIZE]
            newer, older = before is not None, more
        if not rows:
            await replies.answer(NO_MORE if pressed else EMPTY)
            return
        locale = interaction.locale
        lines = [HEADER.localized(locale)]
        for saved in rows:
            found = costs.get(saved.ledger_id) if saved.ledger_id is not None else None
            when = f"<t:{int(saved.created_at.timestamp())}:R>" if saved.created_at else ""
            where = jump_url(saved)
            if where:
                shown = f"[{JUMP.localized(locale)}]({where})"
            else:
                shown = PRIVATE.localized(locale) if saved.private else ""
            excerpt = as_written(clip(" ".join(saved.prompt.split()), EXCERPT))
            cost = cost_text(found).localized(locale)
            lines.append(
                f"**{saved.key}** · {when} · {saved.model} · {cost} · {shown}\n> {excerpt}"
            )
        view = discord.ui.View(timeout=None)
        if newer:
            view.add_item(PageButton("newer", rows[0].key, locale))
        if older:
            view.add_item(PageButton("older", rows[-1].key, locale))
        content = clip("\n".join(lines), 2000)
        if pressed:
            await interaction.response.edit_message(content=content, view=view)
        else:
            await interaction.response.send_message(content, view=view, ephemeral=True)

    # -- /show -----------------------------------------------------------------------------------

    async def show(self, interaction: discord.Interaction, key: int, *, private: bool) -> None:
        """Post the set saved under ``key`` again, with its buttons, if the member may see it."""
        if await self.cards.refused(interaction, "/show"):  # barred, or another channel
            return
        replies = Replies(interaction, private=private)
        try:
            saved = await load_in_time(interaction, self.saved, key)
        except Unreadable:
            await replies.answer(UNREADABLE)
            return
        if saved is None or not may_see(saved, interaction):
            await replies.answer(NOT_FOUND.format(key=str(key)))
            return
        if saved.private:  # the member's own (may_see refuses another's)
            await replies.answer(PRIVATE_SET.format(key=str(key)))
            return
        if saved.options.get("moderation") == "low" and not (
            private or age_restricted(interaction.channel)
        ):  # what only an age-restricted channel may hold is not posted elsewhere
            await replies.answer(AGE_RESTRICTED.format(key=str(key)))
            return
        here = await self._server_rules(interaction, saved)
        if isinstance(here, str):  # barred, a channel the server keeps it out of, a blocked word
            await replies.answer(here)
            return
        if not await self.cards.may_copy(interaction):
            return
        with self.cards.copy_for(interaction.user.id):
            await replies.defer()
            await self._repost(replies, saved, spoiler=here is not None and here.spoiler)

    async def _server_rules(
        self, interaction: discord.Interaction, saved: SavedRequest
    ) -> Admissible | str | None:
        """The server's rules for a new set here, applied to the repost (its bars, channels and
        blocked words; whether it is a spoiler); the sentence refusing it; None: no rules."""
        if self.settings is None or self.rules is None:
            return None
        request = saved.request(user="")  # never sent: only its prompt and model are read
        return await apply_server_settings(
            interaction, request, self.rules, self.settings, picked=None, command="/show"
        )

    async def _repost(self, replies: Replies, saved: SavedRequest, *, spoiler: bool) -> None:
        interaction = replies.interaction
        key = saved.key
        original = await self._original(replies, saved)
        if original is None:
            return
        attachments = list(original.attachments)
        channel = interaction.client.get_partial_messageable(
            saved.channel_id or 0, guild_id=saved.guild_id
        )
        for message_id in saved.follow_up_ids:
            try:
                attachments += (await channel.fetch_message(message_id)).attachments
            except DISCORD_FAILURES as exc:
                log.warning("could not read a follow-up of saved request %s: %r", key, exc)
        limit = interaction.filesize_limit
        fitting = [a for a in attachments if a.size <= limit]
        if not fitting:
            await replies.tell_privately(
                (TOO_LARGE if attachments else ORIGINAL_GONE).format(key=str(key))
            )
            return
        async with self.cards.copies:
            try:
                files = await read_attachments(fitting)
            except DownloadFailed:
                await replies.tell_privately(NOT_READ.format(key=str(key)))
                return
            for file in files:  # one a spoiler already stays one
                file.spoiler = file.spoiler or spoiler
            note = SHOWN.format(key=str(key), member=interaction.user.mention)
            if len(fitting) < len(attachments):
                left_out = TOO_LARGE_LEFT.format(n=len(attachments) - len(fitting))
                note = joined([note, left_out])
            embed = original.embeds[0] if original.embeds else None
            first, *rest = groups(files, limit)
            try:
                await interaction.edit_original_response(
                    content=note.localized(interaction.locale),
                    embed=fit_embed(embed) if embed is not None else None,
                    attachments=first,
                    view=repost_view(original, interaction.user.id, private=replies.private),
                    allowed_mentions=discord.AllowedMentions.none(),
                )
                replies.posted = True
                for part in rest:
                    await interaction.followup.send(files=part, ephemeral=replies.private)
            except DISCORD_FAILURES as exc:
                log.warning("could not post request %s again: %r", key, exc)
                await replies.tell_privately(NOT_POSTED)

    @staticmethod
    async def _original(replies: Replies, saved: SavedRequest) -> discord.Message | None:
        """The first message of ``saved``; None, after telling the member, where it is gone."""
        interaction = replies.interaction
        if saved.message_id is None or saved.channel_id is None:
            await replies.tell_privately(ORIGINAL_GONE.format(key=str(saved.key)))
            return None
        channel = interaction.client.get_partial_messageable(
            saved.channel_id, guild_id=saved.guild_id
        )
        try:
            return await channel.fetch_message(saved.message_id)
        except discord.NotFound:
            await replies.tell_privately(ORIGINAL_GONE.format(key=str(saved.key)))
        except DISCORD_FAILURES as exc:
            log.warning("could not read the message of saved request %s: %r", saved.key, exc)
            await replies.tell_privately(NOT_READ.format(key=str(saved.key)))
        return None


def repost_view(original: discord.Message, member_id: int, *, private: bool) -> discord.ui.View:
    """The buttons of ``original`` for its repost: the same, except Delete, which removes the
    repost and belongs to ``member_id`` (none on a private repost: Discord's Dismiss does)."""
    view = discord.ui.View(timeout=None)
    for row_index, row in enumerate(original.components):
        for child in getattr(row, "children", ()):
            match = BUTTON_ID.fullmatch(getattr(child, "custom_id", None) or "")
            if match is None:
                continue
            action = Action(match["action"])
            if action is Action.DELETE:
                if private:
                    continue
                button = ImageButton(Action.DELETE, REPOST_KEY, member_id)
            else:
                argument = match["argument"]
                button = ImageButton(
                    action,
                    int(match["key"]),
                    int(argument) if argument is not None else None,
                    label=getattr(child, "label", None),
                )
            button.item.row = row_index
            view.add_item(button)
    return view
