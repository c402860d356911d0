"""Every Discord write for one interaction: answers, the acknowledgement, progress, images and
the private sentence a failure ends with. Nothing else in the bot writes to an interaction.

Replies that report progress or a failure must not fail the request themselves: they log and
carry on. Posting the images is the exception: its failures are the caller's to handle.

Whatever is written is first fitted to Discord's limits (:func:`fit_content`,
:func:`fit_embed`): Discord refuses a whole message over any of them, and a refusal that is
never shown is worse than one that ends in "…". The texts that can grow (lists of channels,
models) are summarised where they are made; this is the guard behind them.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aiohttp
import discord

from bot.i18n import _, localize

log = logging.getLogger(__name__)

# What talking to Discord can raise besides its own errors: discord.py retries only resets.
DISCORD_FAILURES = (discord.HTTPException, aiohttp.ClientError, OSError)

# Discord wants an interaction acknowledged within 3 seconds of its creation; the bot aims at
# this, leaving the rest for the acknowledgement's own round trip.
ACKNOWLEDGE_WITHIN = 2.5
# However late it is, a step before the acknowledgement gets this long to answer.
SHORTEST_STEP = 0.25


def time_to_acknowledge(interaction: discord.Interaction) -> float:
    """Seconds left before ``interaction`` must be acknowledged, from 0 to ACKNOWLEDGE_WITHIN.

    Every step before the acknowledgement (settings, limits, a saved request, the ledger) takes
    at most what is left, so that their waits never add up past Discord's patience. A host clock
    ahead of Discord's makes this 0: the bot then acknowledges at once, which is harmless."""
    deadline = interaction.created_at + dt.timedelta(seconds=ACKNOWLEDGE_WITHIN)
    left = (deadline - discord.utils.utcnow()).total_seconds()
    return min(max(left, 0.0), ACKNOWLEDGE_WITHIN)


def step_timeout(interaction: discord.Interaction, longest: float) -> float:
    """How long a step before the acknowledgement may take: ``longest``, or what is left."""
    return min(longest, max(time_to_acknowledge(interaction), SHORTEST_STEP))


ALREADY_ACKNOWLEDGED = 40060

NOT_ALL_POSTED = _("Not all of your images could be posted. {reason}")
NOT_COMPLETED = _("⚠️ This request could not be completed.")

# Discord's limits on what a message carries, in characters.
CONTENT_MAX = 2000
EMBED_TITLE_MAX = 256
EMBED_DESCRIPTION_MAX = 4096
EMBED_FIELDS_MAX = 25
EMBED_FIELD_NAME_MAX = 256
EMBED_FIELD_VALUE_MAX = 1024
EMBED_FOOTER_MAX = 2048
EMBED_AUTHOR_MAX = 256
EMBED_TOTAL_MAX = 6000
# A cut this close after a "<" that is not closed again would leave half a mention (<#123...)
# or of a custom emoji (<a:name:id>, up to 57 characters) on show: the cut moves before it.
_MARKUP_LONGEST = 64


# Said wherever a request or a press arrives while the bot drains for a restart.
RESTARTING = _("The bot is restarting. Please try again in a minute.")


def clip(text: str, limit: int) -> str:
    """``text`` within ``limit`` characters, ending in "…" where it was cut (never inside a
    mention, a timestamp or a custom emoji, ``<...>``)."""
    if len(text) <= limit:
        return text
    kept = text[: limit - 1]
    opened = kept.rfind("<")
    if opened > kept.rfind(">") and len(kept) - opened <= _MARKUP_LONGEST:
        kept = kept[:opened]
    return kept.rstrip() + "…"


def as_written(text: str) -> str:
    """A member's or a service's words shown as they were written: no markdown, no masked link,
    no mention, no channel or command link. A prompt of ``[Free Nitro](https://…)`` in the bot's
    public message would otherwise be a link under the bot's name, one of ``<@id>`` a member's
    name, ``<#id>`` or ``</verify:id>`` a link to a channel or a command: every ``<`` is followed
    by a zero-width space, so that Discord reads none of its ``<…>`` markup."""
    escaped = discord.utils.escape_mentions(discord.utils.escape_markdown(text))
    return escaped.replace("<", "<\u200b")


def fit_content(text: str) -> str:
    return clip(text, CONTENT_MAX)


def fit_embed(embed: discord.Embed) -> discord.Embed:
    """``embed`` (changed in place) within every limit Discord sets on an embed: each text
    clipped, at most 25 fields, and 6,000 characters in all (the last fields go first, then
    the description is shortened)."""
    if embed.title:
        embed.title = clip(embed.title, EMBED_TITLE_MAX)
    if embed.description:
        embed.description = clip(embed.description, EMBED_DESCRIPTION_MAX)
    if embed.author.name:
        author = embed.author
        embed.set_author(
            name=clip(author.name or "", EMBED_AUTHOR_MAX), url=author.url, icon_url=author.icon_url
        )
    if embed.footer.text:
        footer = embed.footer
        embed.set_footer(text=clip(footer.text or "", EMBED_FOOTER_MAX), icon_url=footer.icon_url)
    fields = embed.fields[:EMBED_FIELDS_MAX]
    embed.clear_fields()
    for field in fields:
        embed.add_field(
            name=clip(field.name or "", EMBED_FIELD_NAME_MAX),
            value=clip(field.value or "", EMBED_FIELD_VALUE_MAX),
            inline=bool(field.inline),
        )
    while len(embed) > EMBED_TOTAL_MAX and embed.fields:
        embed.remove_field(-1)
    over = len(embed) - EMBED_TOTAL_MAX
    if over > 0 and embed.description:
        embed.description = clip(embed.description, max(len(embed.description) - over, 1))
    return embed


class Replies:
    """The one place that writes to Discord for one interaction, and remembers what it posted."""

    def __init__(
        self,
        interaction: discord.Interaction,
        *,
        private: bool = False,
        follow_up_limit: int | None = None,
        shown_to_member_only: bool = False,
    ) -> None:
        """``private``: only the member sees the answer (/imagine private:true, and what is
        made from such a set): the placeholder, the images and their follow-ups are ephemeral;
        ``follow_up_limit``: the most follow-up messages Discord takes for this interaction
        (a user-installed app's: 5), None for no limit; ``shown_to_member_only``: Discord shows
        this interaction's public answers to the member alone (external apps are off for them
        in that server), which the images' message then says."""
        self.interaction = interaction
        self.private = private
        self.follow_up_limit = follow_up_limit
        self.shown_to_member_only = shown_to_member_only
        # The first message the images are in, once posted; and who hears of it (the buttons,
        # for the set's jump link). It must not raise.
        self.message_id: int | None = None
        self.on_posted: Callable[[int], Awaitable[None]] | None = None
        # The reply already carries images: a later failure must leave them and say so.
        self.posted = False
        # The messages posted after the first, in order; and who hears of each new one (the
        # buttons, whose Delete removes them too). It is given every id so far and must not raise.
        self.follow_up_ids: list[int] = []
        self.on_follow_up: Callable[[tuple[int, ...]], Awaitable[None]] | None = None
        # The server posts results here as spoilers (the images and the previews): each upload's
        # filename then starts with SPOILER_, which Discord blurs until clicked.
        self.spoiler = False

    def say(self, text: str) -> str:
        """``text`` in the member's language (a marked sentence), fitted to a message."""
        return fit_content(localize(text, self.interaction.locale))

    @property
    def locale(self) -> discord.Locale:
        """The member's client language: what every sentence for them is written in."""
        return self.interaction.locale

    @property
    def acknowledged(self) -> bool:
        return self.interaction.response.is_done()

    @property
    def upload_limit(self) -> int:
        """The most bytes one upload may have, as Discord reported it for this interaction."""
        return self.interaction.filesize_limit

    @property
    def member_name(self) -> str:
        return self.interaction.user.display_name

    async def answer(self, sentence: str) -> bool:
        """A private answer before the interaction was acknowledged; False if it did not go."""
        try:
            await self.interaction.response.send_message(self.say(sentence), ephemeral=True)
        except discord.InteractionResponded:
            return False
        except DISCORD_FAILURES as exc:
            if getattr(exc, "code", None) != ALREADY_ACKNOWLEDGED:
                log.warning("could not answer the member: %r", exc)
            return False
        return True

    async def defer(self) -> None:
        """Acknowledge with a public "thinking" placeholder; raises what Discord raises."""
        await self.interaction.response.defer(thinking=True, ephemeral=self.private)

    async def show_progress(self, text: str) -> None:
        await self._edit_quietly(content=self.say(text))

    async def show_preview(self, text: str, preview: discord.File) -> None:
        """The placeholder with a preview of the image being made (it replaces the last one);
        the images replace it when they are posted."""
        await self._edit_quietly(content=self.say(text), attachments=[preview])

    async def post(
        self,
        *,
        content: str | None,
        embed: discord.Embed,
        files: Sequence[discord.File],
        view: discord.ui.View | None = None,
    ) -> None:
        """Replace the placeholder with the images (and the buttons under them, if any); raises
        what Discord raises."""
        content = None if content is None else self.say(content)
        embed = fit_embed(embed)
        if view is None:
            message = await self.interaction.edit_original_response(
                content=content, embed=embed, attachments=list(files)
            )
        else:
            message = await self.interaction.edit_original_response(
                content=content, embed=embed, attachments=list(files), view=view
            )
        self.posted = True
        self.message_id = message.id
        if self.on_posted is not None:
            await self.on_posted(message.id)

    async def follow_up(self, files: Sequence[discord.File]) -> None:
        """More images after the first message; raises what Discord raises."""
        message = await self.interaction.followup.send(
            files=list(files), wait=True, ephemeral=self.private
        )
        self.follow_up_ids.append(message.id)
        if self.on_follow_up is not None:
            await self.on_follow_up(tuple(self.follow_up_ids))

    async def tell_privately(self, sentence: str) -> None:
        """Replace the public "thinking" message with a sentence only the user sees.

        While the deferred reply is still "thinking", Discord turns the first follow-up into that
        public reply, whatever its flags; so the reply is settled first, then the private
        sentence follows as a message of its own, then the public reply goes. Where images were
        already posted, they stay, and the sentence follows them.
        """
        interaction = self.interaction
        said = self.say(sentence)
        if self.posted:
            try:
                await interaction.followup.send(
                    self.say(NOT_ALL_POSTED.format(reason=sentence)), ephemeral=True
                )
            except DISCORD_FAILURES as exc:
                log.warning("could not tell the member privately: %r", exc)
            return
        steps: list[Callable[[], Awaitable[object]]] = [
            lambda: interaction.edit_original_response(
                content=self.say(NOT_COMPLETED), embed=None, attachments=[]
            ),
            lambda: interaction.followup.send(said, ephemeral=True),
            interaction.delete_original_response,
        ]
        told = False
        try:
            for step in steps:
                await step()
                told = told or step is steps[1]
        except DISCORD_FAILURES as exc:
            log.warning("could not tell the member privately: %r", exc)
            if not told:
                # The private sentence did not go: the public placeholder is the only place
                # left to say it. Once it went, the placeholder keeps its neutral words.
                await self._edit_quietly(content=said, embed=None, attachments=[])

    async def _edit_quietly(self, **fields: Any) -> None:
        try:
            await self.interaction.edit_original_response(**fields)
        except DISCORD_FAILURES as exc:
            log.warning("could not update an /imagine message: %r", exc)
