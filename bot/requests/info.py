"""Know what you made: the Info card of a set (its button, and the Image info message menu), and
Send to DM, a copy of a set in the presser's direct messages.

Decisions:

- The card is private (ephemeral) and read from what the bot keeps: the saved request (model,
  size, quality, options, when, the lineage), the usage ledger's row (cost; the image service's
  request id) and the messages the sets were posted in (jump links). The request's own number
  (its key, which ``/show id:`` takes) is the "Request" line.
- Lineage is generic: a saved request keeps the key of the set whose button or form made it
  (Reroll, Edit prompt, Larger, Vary, zoom, pan, and whatever is added under the same
  ``imagine:<action>:<key>`` pattern) or whose message menu was used. The card links to that set
  and to the sets made from this one, but only to those of this server that the presser may
  see (:func:`may_see`, the rule /show keeps too): another member's private set, or one posted
  in a channel the presser cannot read, is never named (not even counted).
- A private set (ephemeral) has no jump link: Discord cannot link to an ephemeral message.
- Send to DM re-reads the images from the message's attachments on Discord's CDN (the bot stores
  no image files), at most :data:`COPIES_AT_ONCE` copies at a time so that memory stays bounded,
  each download under the edit inputs' time limit. A DM takes smaller uploads than a boosted
  server: an image over :data:`DM_UPLOAD_LIMIT` is left out and the member is told. The copy
  carries no buttons (they belong to the server the set was made in) but links back to it.
  Closed DMs (Discord's error 50007) are said privately.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence

import aiohttp
import discord

from bot.discord_out.replies import (
    DISCORD_FAILURES,
    Replies,
    as_written,
    clip,
    fit_embed,
    step_timeout,
)
from bot.i18n import Text, _, joined, money, ngettext
from bot.requests.buttons import LOAD_TIMEOUT, Action, ImageButtons, belongs_here, saved_key
from bot.requests.edit_inputs import DOWNLOAD_TIMEOUT
from bot.requests.saved_requests import SavedRequest, SavedRequests, Spent, made_from, spent

log = logging.getLogger(__name__)

# The sentences members read (one place, for translation).
NOT_A_SET = _("This message is not a set of images the bot posted with its buttons.")
GONE = _("The bot no longer has the request behind these images.")
UNREADABLE = _("The bot cannot read this request right now. Please try again soon.")
DMS_CLOSED = _(
    "The bot cannot send you direct messages: your privacy settings do not allow them. "
    "Allow direct messages from this server's members (or from apps) and press again."
)
DM_FAILED = _("Discord did not let the bot send the copy. Please try again.")
NOT_DOWNLOADED = _("The images could not be read back from Discord. Please try again.")
NO_IMAGES_LEFT = _("These images are no longer in the message.")
SENT = _("A copy is in your direct messages: {link}")
LEFT_OUT = ngettext(
    "({n} image too large for a direct message was left out.)",
    "({n} images too large for a direct message were left out.)",
)
TOO_LARGE_FOR_DM = _("These images are too large for a direct message (10 MiB each at most).")
ONE_AT_A_TIME = _(
    "Your previous copy of a set is still on its way. Please wait for it, then ask again."
)
PRIVATE_LINK = _("private (only its member saw it)")
NOT_KNOWN = _("not known")
ESTIMATED = _("{cost} (estimated)")
STILL_RUNNING = _("{cost} (estimated; still running)")
# The card's title and its fields' names.
TITLE = _("Request {key}")
ASKED_BY = _("Asked by")
WHEN = _("When")
COST = _("Cost")
MODEL = _("Model")
SIZE = _("Size")
QUALITY = _("Quality")
IMAGES = _("Images")
OPTIONS = _("Options")
REQUEST_ID = _("Request id")
FOR_SHOW = _("`{key}` (for `/show id:{key}`)")
IMAGE_SERVICE = _("Image service: `{id}`")
POSTED = _("Posted")
THIS_SET = _("this set")
MADE_FROM = _("Made from")
MADE_FROM_IT = _("Made from it")
REQUEST_KEY = _("request {key}")
HOW_OF = _("{how} of {request}")
MADE = _("Made")
REQUEST = _("Request")
FROM = _("From")
THE_SET_IN_THE_SERVER = _("the set in the server")

CARD_TIMEOUT = 10.0  # seconds to read a card's rows, once the press is acknowledged
CHILDREN_SHOWN = 10  # sets made from this one, linked on the card
COPIES_AT_ONCE = 2  # copies (Send to DM, /show) downloading at a time: memory stays bounded
DM_UPLOAD_LIMIT = 10 * 1024 * 1024  # bytes Discord takes in one upload to a DM
FILES_PER_MESSAGE = 10  # Discord's most attachments in one message
DMS_CLOSED_CODE = 50007  # "Cannot send messages to this user"
ORIGINS = {
    "reroll": _("Reroll"),
    "edit": _("Edit prompt"),
    "prompt": _("Edit prompt"),
    "larger": _("Larger"),
    "vary": _("Vary"),
    "vary image": _("Vary image"),
}


def jump_url(saved: SavedRequest) -> str | None:
    """The link to the first message of a set; None where there is none (private, or the
    message is not known)."""
    if saved.private or saved.message_id is None or saved.channel_id is None:
        return None
    where = saved.guild_id if saved.guild_id is not None else "@me"
    return f"https://discord.com/channels/{where}/{saved.channel_id}/{saved.message_id}"


def may_see(saved: SavedRequest, interaction: discord.Interaction) -> bool:
    """Whether the member of ``interaction`` may be told of ``saved`` (named on a card, shown
    again by /show): their own set of this server (in DMs, of DMs), or another member's set of
    this server posted publicly in a channel they can read (view it and read its history; a
    channel the bot does not see counts as not readable)."""
    if saved.guild_id != interaction.guild_id:
        return False
    if saved.member_id == interaction.user.id:
        return True
    if saved.private or interaction.guild is None or saved.channel_id is None:
        return False
    member = interaction.user
    channel = interaction.guild.get_channel_or_thread(saved.channel_id)
    if channel is None or not isinstance(member, discord.Member):
        return False
    permissions = channel.permissions_for(member)
    if (
        isinstance(channel, discord.Thread)
        and channel.is_private()
        and not permissions.manage_threads
    ):
        # A thread's permissions are its parent's: they do not say who was added to a private
        # thread, and the bot's cache of its members is not complete. Only those who see every
        # private thread (Manage Threads) are known to see this one.
        return False
    return permissions.view_channel and permissions.read_message_history


def link(saved: SavedRequest, text: Text) -> Text:
    url = jump_url(saved)
    if url is not None:
        return joined(["[", text, f"]({url})"], "")
    return joined([text, PRIVATE_LINK], ", ") if saved.private else text


def origin_name(origin: str | None) -> Text:
    """What made a set (a button's label), for the card."""
    if not origin:
        return MADE
    return ORIGINS.get(origin, joined([origin.capitalize()]))


def cost_text(found: Spent | None) -> Text:
    if found is None or found.cost is None:
        return NOT_KNOWN
    cost = money(found.cost)
    if found.outcome == "pending":
        return STILL_RUNNING.format(cost=cost)
    return ESTIMATED.format(cost=cost) if found.estimated else cost


def discord_time(saved: SavedRequest) -> Text:
    if saved.created_at is None:
        return NOT_KNOWN
    seconds = int(saved.created_at.timestamp())
    return joined([f"<t:{seconds}:f> (<t:{seconds}:R>)"])


class InfoCards:
    """Info and Send to DM, under every set (handed to :class:`ImageButtons` at start), and
    the Image info message menu."""

    def __init__(
        self,
        buttons: ImageButtons,
        barred: Callable[[discord.Interaction, str | None], Awaitable[str | None]] | None = None,
    ) -> None:
        """``barred``: the sentence refusing a member the server barred (None: not barred);
        Send to DM and /show copy and post sets without a request, and a bar covers them."""
        self.buttons = buttons
        self.copies = asyncio.Semaphore(COPIES_AT_ONCE)
        self.barred = barred
        # The members with a copy (Send to DM, /show) on its way: one each, so that a member
        # pressing again and again cannot queue copy after copy ahead of everyone else's.
        self.copying: set[int] = set()

    @property
    def saved(self) -> SavedRequests:
        return self.buttons.saved

    def install(self) -> None:
        """Put Info and Send to DM under every set posted from now on."""
        self.buttons.handlers[Action.INFO] = self.show
        self.buttons.handlers[Action.DM] = self.send_to_dm

    # -- Info ------------------------------------------------------------------------------------

    async def show(self, interaction: discord.Interaction, saved: SavedRequest) -> None:
        """The card of ``saved`` (a request of this server), privately."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        try:
            async with asyncio.timeout(CARD_TIMEOUT):
                embed = await self.card(interaction, saved)
        except Exception as exc:  # its text may quote the query's parameters: the type only
            log.error(
                "could not make the info card of request %s (%s)", saved.key, type(exc).__name__
            )
            await interaction.followup.send(
                UNREADABLE.localized(interaction.locale), ephemeral=True
            )
            return
        await interaction.followup.send(
            embed=fit_embed(embed), ephemeral=True, allowed_mentions=discord.AllowedMentions.none()
        )

    async def card(self, interaction: discord.Interaction, saved: SavedRequest) -> discord.Embed:
        parent = None
        if saved.parent_key is not None:
            parent = await self.saved.load(saved.parent_key)
            if parent is not None and not may_see(parent, interaction):
                parent = None
        children = [
            child
            for child in await made_from(self.saved, saved.key, CHILDREN_SHOWN * 4)
            if may_see(child, interaction)
        ][:CHILDREN_SHOWN]
        costs = await spent(self.saved, [saved.ledger_id] if saved.ledger_id is not None else [])
        found = costs.get(saved.ledger_id) if saved.ledger_id is not None else None

        def t(text: Text) -> str:
            return text.localized(interaction.locale)

        embed = discord.Embed(
            title=t(TITLE.format(key=str(saved.key))),
            description=clip(as_written(saved.prompt), 1000),
            colour=discord.Colour.blurple(),
        )
        embed.add_field(name=t(ASKED_BY), value=f"<@{saved.member_id}>")
        embed.add_field(name=t(WHEN), value=t(discord_time(saved)))
        embed.add_field(name=t(COST), value=t(cost_text(found)))
        embed.add_field(name=t(MODEL), value=saved.model)
        embed.add_field(name=t(SIZE), value=saved.size)
        embed.add_field(name=t(QUALITY), value=saved.quality)
        embed.add_field(name=t(IMAGES), value=str(saved.count))
        options = ", ".join(f"{name} {value}" for name, value in sorted(saved.options.items()))
        if options:
            embed.add_field(name=t(OPTIONS), value=clip(options, 1024))
        ids = t(FOR_SHOW.format(key=str(saved.key)))
        if found is not None and found.service_request_id:
            ids += "\n" + t(IMAGE_SERVICE.format(id=found.service_request_id))
        embed.add_field(name=t(REQUEST_ID), value=ids, inline=False)
        embed.add_field(name=t(POSTED), value=t(link(saved, THIS_SET)), inline=False)
        if parent is not None:
            how = origin_name(saved.origin)
            parent_link = link(parent, REQUEST_KEY.format(key=str(parent.key)))
            embed.add_field(name=t(MADE_FROM), value=t(HOW_OF.format(how=how, request=parent_link)))
        if children:
            lines = [
                t(origin_name(child.origin))
                + ": "
                + t(link(child, REQUEST_KEY.format(key=str(child.key))))
                for child in children
            ]
            embed.add_field(name=t(MADE_FROM_IT), value=clip("\n".join(lines), 1024), inline=False)
        return embed

    async def info_of_message(
        self, interaction: discord.Interaction, message: discord.Message
    ) -> None:
        """Image info, the message menu: the card of the set ``message`` is the first of. Only
        the bot's own messages count: any member can have another app post a message whose
        buttons carry the bot's ids, naming a set they may not see."""
        replies = Replies(interaction)
        me = interaction.client.user
        key = saved_key(message) if me is not None and message.author.id == me.id else None
        if key is None:
            await replies.answer(NOT_A_SET)
            return
        try:
            saved = await load_in_time(interaction, self.saved, key)
        except Unreadable:
            await replies.answer(UNREADABLE)
            return
        if saved is None or not belongs_here(saved, interaction):
            await replies.answer(GONE)
            return
        await self.show(interaction, saved)

    # -- Send to DM ------------------------------------------------------------------------------

    async def send_to_dm(self, interaction: discord.Interaction, saved: SavedRequest) -> None:
        """A copy of the pressed set in the presser's DMs, said privately either way."""
        if await self.refused(interaction) or not await self.may_copy(interaction):
            return
        with self.copy_for(interaction.user.id):
            await self._send_to_dm(interaction, saved)

    async def _send_to_dm(self, interaction: discord.Interaction, saved: SavedRequest) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        attachments = await self.attachments_of(interaction, saved)
        small = [a for a in attachments if a.size <= DM_UPLOAD_LIMIT]
        if not small:
            await _tell(interaction, TOO_LARGE_FOR_DM if attachments else NO_IMAGES_LEFT)
            return
        async with self.copies:
            try:
                files = await read_attachments(small)
            except DownloadFailed:
                await _tell(interaction, NOT_DOWNLOADED)
                return
            embed = discord.Embed(
                description=clip(as_written(saved.prompt), 3000), colour=discord.Colour.blurple()
            )
            locale = interaction.locale
            embed.add_field(name=MODEL.localized(locale), value=saved.model)
            embed.add_field(name=SIZE.localized(locale), value=saved.size)
            embed.add_field(name=REQUEST.localized(locale), value=str(saved.key))
            origin = jump_url(saved)
            if origin is not None:
                here = THE_SET_IN_THE_SERVER.localized(locale)
                embed.add_field(name=FROM.localized(locale), value=f"[{here}]({origin})")
            try:
                first: discord.Message | None = None
                for index, group in enumerate(groups(files, DM_UPLOAD_LIMIT)):
                    sent = await interaction.user.send(
                        embed=embed if index == 0 else discord.utils.MISSING, files=group
                    )
                    first = first or sent
            except discord.Forbidden as exc:
                closed = exc.code == DMS_CLOSED_CODE
                if not closed:
                    log.warning("could not send a copy to a member's DMs: %r", exc)
                await _tell(interaction, DMS_CLOSED if closed else DM_FAILED)
                return
            except DISCORD_FAILURES as exc:
                log.warning("could not send a copy to a member's DMs: %r", exc)
                await _tell(interaction, DM_FAILED)
                return
        said = SENT.format(link=first.jump_url if first is not None else "")
        if len(small) < len(attachments):
            said = joined([said, LEFT_OUT.format(n=len(attachments) - len(small))])
        await _tell(interaction, said)

    async def refused(self, interaction: discord.Interaction, command: str | None = None) -> bool:
        """Whether the member is barred here (or, for a ``command`` that posts in the channel,
        the server keeps the bot to other channels): then told privately (nothing is
        downloaded)."""
        refusal = await self.barred(interaction, command) if self.barred is not None else None
        if refusal is not None:
            await Replies(interaction).answer(refusal)
        return refusal is not None

    @contextlib.contextmanager
    def copy_for(self, member_id: int) -> Iterator[None]:
        """The member's copy on its way while the block runs."""
        self.copying.add(member_id)
        try:
            yield
        finally:
            self.copying.discard(member_id)

    async def may_copy(self, interaction: discord.Interaction) -> bool:
        """Whether the member has no other copy on its way; if one is, they are told."""
        if interaction.user.id not in self.copying:
            return True
        await Replies(interaction).answer(ONE_AT_A_TIME)
        return False

    async def attachments_of(
        self, interaction: discord.Interaction, saved: SavedRequest
    ) -> list[discord.Attachment]:
        """The images of the pressed set: the message's, then, where it is the set's own first
        message, its follow-ups' (read through the channel; a private set's follow-ups cannot
        be, and a repost's, /show's, are not recorded: both are left out)."""
        message = interaction.message
        if message is None:
            return []
        found = list(message.attachments)
        if saved.private or message.id != saved.message_id or saved.channel_id is None:
            return found
        channel = interaction.client.get_partial_messageable(
            saved.channel_id, guild_id=saved.guild_id
        )
        for message_id in saved.follow_up_ids:
            try:
                found += (await channel.fetch_message(message_id)).attachments
            except DISCORD_FAILURES as exc:
                log.warning("could not read a follow-up of saved request %s: %r", saved.key, exc)
        return found


class Unreadable(Exception):
    """The saved requests could not be read in time (logged)."""


async def load_in_time(
    interaction: discord.Interaction, saved: SavedRequests, key: int
) -> SavedRequest | None:
    """The request saved under ``key`` (None: there is none), read within what is left of the
    interaction's 3 seconds; raises :class:`Unreadable` after one log line."""
    try:
        async with asyncio.timeout(step_timeout(interaction, LOAD_TIMEOUT)):
            return await saved.load(key)
    except Exception as exc:
        log.error("could not read saved request %s (%s)", key, type(exc).__name__)
        raise Unreadable from None


class DownloadFailed(Exception):
    """An attachment could not be read back from Discord's CDN."""


async def read_attachments(attachments: Sequence[discord.Attachment]) -> list[discord.File]:
    """The attachments as files to upload again, downloaded from Discord's CDN one at a time
    (each under the edit inputs' time limit: a stuck download must not hold the copy)."""
    files = []
    for attachment in attachments:
        try:
            async with asyncio.timeout(DOWNLOAD_TIMEOUT):
                data = await attachment.read()
        except (discord.HTTPException, aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.warning("could not download an attachment to copy it: %r", exc)
            raise DownloadFailed from None
        files.append(
            discord.File(
                io.BytesIO(data), filename=attachment.filename, description=attachment.description
            )
        )
    return files


def groups(files: list[discord.File], limit: int) -> list[list[discord.File]]:
    """``files`` in messages of at most 10 files and ``limit`` bytes each, in order (each file
    is within ``limit``: the caller left out the others)."""
    packed: list[list[discord.File]] = []
    size = 0
    for file in files:
        length = len(file.fp.getbuffer()) if isinstance(file.fp, io.BytesIO) else 0
        if not packed or len(packed[-1]) == FILES_PER_MESSAGE or size + length > limit:
            packed.append([])
            size = 0
        packed[-1].append(file)
        size += length
    return packed


async def _tell(interaction: discord.Interaction, sentence: Text) -> None:
    try:
        text = sentence.localized(interaction.locale)
        await interaction.followup.send(clip(text, 2000), ephemeral=True)
    except DISCORD_FAILURES as exc:
        log.warning("could not tell the member: %r", exc)
