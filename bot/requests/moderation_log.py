"""The moderation log: every request on a server, posted to the channel its managers picked
(``/imagine-settings log-channel``): who (a mention that pings nobody), where (a link), the
prompt, the model, the outcome and the cost, and a small thumbnail of the first image.

Decisions:

- The log never holds the full images: a thumbnail (a JPEG of at most :data:`THUMBNAIL_SIDE`
  pixels a side) is made off the event loop by the writer, and only it is posted.
- Nothing of it holds up the member's answer: a request's entry is put on a bounded queue
  (:data:`QUEUE_ENTRIES` entries and :data:`QUEUE_BYTES` bytes of images waiting for their
  thumbnail) and one task per bot writes them in turn. When the queue is full, the entry is
  dropped and counted (``imagine_moderation_log_dropped_total``): a log that cannot keep up
  must not make the bot hold memory without bound.
- A log channel that is gone, or where the bot may not post, is told once: one log line, a
  direct message to the manager who picked it, and a line in ``/imagine-settings show``; then
  the entries for that channel are skipped for :data:`RETRY_SECONDS` before one more try (a
  permission given back starts the log again). The members hear nothing of it.
- The prompt is shown as written (its markdown escaped): what a member types must not pass
  for a link or a heading of the log's own.
- Refusals before anything is paid (a barred member, a budget, and the blocklist and moderation
  check, which call :meth:`ModerationLog.refused`) are logged too, without a thumbnail.
"""

from __future__ import annotations

import asyncio
import collections
import io
import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

import discord
from PIL import Image

from bot.discord_out.delivery import run_in_encoder
from bot.discord_out.replies import as_written, clip
from bot.i18n import Text, _, joined, localize, money
from bot.images.processing import WaitFor, wait_plainly
from bot.observability.metrics import Metrics
from bot.store.server_settings import Setting, SettingsStore

log = logging.getLogger(__name__)

QUEUE_ENTRIES = 256  # entries waiting to be written, across every server
QUEUE_BYTES = 32 * 1024 * 1024  # bytes of images waiting for their thumbnail
THUMBNAIL_SIDE = 160  # pixels
THUMBNAIL_PIXELS_MAX = 40_000_000  # an image declaring more is not thumbnailed
THUMBNAIL_NAME = "thumbnail.jpg"
SEND_TIMEOUT = 15.0  # seconds for one entry to be posted
RETRY_SECONDS = 600.0  # a channel that failed is tried again after this
REMEMBERED = 10_000  # servers whose log problem is remembered (the oldest are forgotten)
PROMPT_MAX = 1024
# What the server's moderators and managers read, in the server's preferred locale (its
# "primary language" in Discord's settings; en-US unless a Community server chose another):
# they are several people, of whom the bot knows no client language.
DELETED = _("the channel no longer exists")
FORBIDDEN = _(
    "the bot is not allowed to post there (it needs View Channel, Send Messages, Embed Links and "
    "Attach Files)"
)
TOLD = _(
    "The /imagine moderation log of {server} cannot be written to {channel}: {problem}. Pick "
    "another channel or fix its permissions with /imagine-settings log-channel."
)
A_SERVER = _("a server")
REFUSED = _("refused: {reason}")
WHO = _("Who")
WHERE = _("Where")
MODEL = _("Model")
OUTCOME = _("Outcome")
COST = _("Cost")


@dataclass(frozen=True, slots=True, repr=False)
class Entry:
    """One line of the log; ``image``: the first image's bytes, for its thumbnail only."""

    client: discord.Client
    guild_id: int
    member_id: int
    where: str  # a link to the message or the channel
    prompt: str
    model: str | None
    outcome: str
    cost: Decimal | None = None
    image: bytes | None = None

    def __repr__(self) -> str:  # no prompt, no ids in a repr
        return f"Entry({self.outcome})"


class ModerationLog:
    """The bot's one writer of moderation logs, for every server."""

    def __init__(
        self,
        store: SettingsStore,
        metrics: Metrics,
        *,
        entries: int = QUEUE_ENTRIES,
        max_bytes: int = QUEUE_BYTES,
        name_server: Callable[[int], str] = lambda _id: "a server",
        clock: Callable[[], float] = time.monotonic,
        wait: WaitFor = wait_plainly,
    ) -> None:
        """``wait``: how the writer waits for a thumbnail made in a thread (a test harness
        declares it)."""
        self._store = store
        self._metrics = metrics
        self._entries = entries
        self._max_bytes = max_bytes
        self._name_server = name_server  # a pseudonym: no raw Discord id above DEBUG
        self.clock = clock  # monotonic seconds: when a failed channel is tried again
        self.wait = wait
        self._queue: collections.deque[Entry] = collections.deque()
        self._bytes = 0
        self._writer: asyncio.Task[None] | None = None
        # By server: the channel that failed, what is wrong, and when to try it again.
        self._problems: collections.OrderedDict[int, tuple[int, str, float]] = (
            collections.OrderedDict()
        )
        self.dropped = 0

    # -- what the request road calls (never awaits, never raises) -----------------------------

    def refused(
        self,
        interaction: discord.Interaction,
        *,
        prompt: str,
        model: str | None = None,
        reason: str,
    ) -> None:
        """Log a request refused before anything was paid for; ``reason`` is what the
        moderators read (such as "a blocked word", "the moderation check: violence")."""
        outcome = REFUSED.format(reason=reason)
        self._put(interaction, prompt=prompt, model=model, outcome=outcome)

    def finished(
        self,
        interaction: discord.Interaction,
        *,
        prompt: str,
        model: str,
        outcome: str,
        cost: Decimal | None,
        image: bytes | None,
        where: str | None = None,
    ) -> None:
        """Log a request that ended (``outcome``: the ledger's), with its first image's bytes,
        of which only a thumbnail is posted."""
        self._put(
            interaction, prompt=prompt, model=model, outcome=outcome, cost=cost, image=image,
            where=where,
        )  # fmt: skip

    def problem(self, guild_id: int) -> Text | None:
        """What is wrong with this server's log channel, as ``show`` says it; None: nothing
        known."""
        known = self._problems.get(guild_id)
        return None if known is None else joined([f"<#{known[0]}>:", known[1]])

    async def close(self) -> None:
        """Stop writing; the entries still waiting are dropped (the log is a courtesy)."""
        if self._writer is not None:
            self._writer.cancel()
            await asyncio.wait({self._writer})
            self._writer = None
        self._queue.clear()
        self._bytes = 0

    # -- the queue ------------------------------------------------------------------------------

    def _put(
        self,
        interaction: discord.Interaction,
        *,
        prompt: str,
        model: str | None,
        outcome: str,
        cost: Decimal | None = None,
        image: bytes | None = None,
        where: str | None = None,
    ) -> None:
        guild_id = interaction.guild_id
        if guild_id is None:
            return  # a direct message has no server, and no log
        cached = self._store.cached(guild_id)  # read for this request a moment ago
        if cached is not None and cached.log_channel is None:
            return  # most servers keep no log: nothing queued, no task
        size = len(image or b"")
        if len(self._queue) >= self._entries or self._bytes + size > self._max_bytes:
            self.dropped += 1
            self._metrics.moderation_log_dropped.inc()
            return
        channel = interaction.channel_id
        entry = Entry(
            interaction.client, guild_id, interaction.user.id,
            where or f"https://discord.com/channels/{guild_id}/{channel}",
            prompt, model, outcome, cost, image,
        )  # fmt: skip
        self._queue.append(entry)
        self._bytes += size
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_all(), name="moderation-log")

    async def _write_all(self) -> None:
        """Write what is queued, then end (the next entry starts another writer)."""
        while self._queue:
            entry = self._queue.popleft()
            self._bytes -= len(entry.image or b"")
            try:
                await self._write(entry)
            except asyncio.CancelledError:
                raise
            except Exception:  # one bad entry must not end the log
                log.exception("could not write an entry of a moderation log")

    async def _write(self, entry: Entry) -> None:
        chosen = await self._store.get(entry.guild_id)
        channel_id = chosen.log_channel
        if channel_id is None:
            return
        known = self._problems.get(entry.guild_id)
        if known is not None and known[0] == channel_id and known[2] > self.clock():
            return  # told already; tried again after RETRY_SECONDS
        guild = entry.client.get_guild(entry.guild_id)
        if guild is None:  # not in this process's cache (an outage): nothing can be said of it
            return
        channel = guild.get_channel_or_thread(channel_id)
        if not isinstance(channel, discord.abc.Messageable):
            await self._report(entry, channel_id, DELETED)
            return
        embed = _embed(entry, guild.preferred_locale)
        thumbnail = None
        if entry.image is not None:
            making = asyncio.ensure_future(run_in_encoder(make_thumbnail, entry.image))
            await self.wait(making)
            made = making.result()
            if made is not None:
                thumbnail = discord.File(io.BytesIO(made), filename=THUMBNAIL_NAME)
                embed.set_thumbnail(url=f"attachment://{THUMBNAIL_NAME}")
        try:
            async with asyncio.timeout(SEND_TIMEOUT):
                mentions = discord.AllowedMentions.none()  # the log pings nobody
                if thumbnail is None:
                    await channel.send(embed=embed, allowed_mentions=mentions)
                else:
                    await channel.send(embed=embed, file=thumbnail, allowed_mentions=mentions)
        except discord.NotFound:
            await self._report(entry, channel_id, DELETED)
            return
        except discord.Forbidden:
            await self._report(entry, channel_id, FORBIDDEN)
            return
        except (discord.HTTPException, TimeoutError) as exc:
            log.warning("could not post to a moderation log (%s)", type(exc).__name__)
            return
        if known is not None:  # it works again: a new problem will be told again
            self._problems.pop(entry.guild_id, None)

    async def _report(self, entry: Entry, channel_id: int, problem: Text) -> None:
        """Tell the manager who picked the channel, once for this channel and problem."""
        known = self._problems.pop(entry.guild_id, None)
        self._problems[entry.guild_id] = (channel_id, problem, self.clock() + RETRY_SECONDS)
        while len(self._problems) > REMEMBERED:
            self._problems.popitem(last=False)
        if known is not None and known[:2] == (channel_id, problem):
            return  # told already
        server = self._name_server(entry.guild_id)
        log.warning("the moderation log of %s cannot be written: %s", server, problem)
        guild = entry.client.get_guild(entry.guild_id)
        sentence = TOLD.format(
            server=guild.name if guild else A_SERVER, channel=f"<#{channel_id}>", problem=problem
        ).localized(guild.preferred_locale if guild else None)
        try:
            changes = await self._store.last_changes(entry.guild_id)
            change = changes.get(Setting.LOG_CHANNEL.value)
            if change is None:
                return
            user = entry.client.get_user(change.changed_by)
            if user is None:
                user = await entry.client.fetch_user(change.changed_by)
            async with asyncio.timeout(SEND_TIMEOUT):
                await user.send(sentence)
        except Exception as exc:  # /imagine-settings show still says it
            log.info("could not tell a manager about their moderation log (%r)", exc)


def _embed(entry: Entry, locale: object = None) -> discord.Embed:
    """The entry in ``locale``, the server's preferred one (see DELETED)."""
    # The prompt as the member wrote it, not as markdown: a masked link, a heading or a spoiler
    # in it must not pass for something else in front of the moderators.
    shown = clip(as_written(entry.prompt), PROMPT_MAX)
    embed = discord.Embed(description=shown, timestamp=None)
    cost = "-" if entry.cost is None else money(entry.cost).localized(locale)
    embed.add_field(name=WHO.localized(locale), value=f"<@{entry.member_id}>")
    embed.add_field(name=WHERE.localized(locale), value=entry.where)
    embed.add_field(name=MODEL.localized(locale), value=entry.model or "-")
    embed.add_field(
        name=OUTCOME.localized(locale), value=clip(localize(entry.outcome, locale), 256)
    )
    embed.add_field(name=COST.localized(locale), value=cost)
    embed.timestamp = discord.utils.utcnow()
    return embed


def make_thumbnail(data: bytes, side: int = THUMBNAIL_SIDE) -> bytes | None:
    """A small JPEG of an image (its first frame), or None if it cannot be read (an SVG).
    CPU-bound: run it off the event loop."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as opened:
                if opened.width * opened.height > THUMBNAIL_PIXELS_MAX:
                    return None
                opened.draft("RGB", (side, side))
                image = opened.convert("RGBA")
        image.thumbnail((side, side), Image.Resampling.BILINEAR, reducing_gap=2.0)
        flat = Image.new("RGB", image.size, "white")  # transparency on white: a JPEG has none
        flat.paste(image, mask=image.getchannel("A"))
        buffer = io.BytesIO()
        flat.save(buffer, format="JPEG", quality=70)
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError):
        return None
    return buffer.getvalue()
