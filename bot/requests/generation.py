"""One generation: a member's request from its acknowledgement to its reply.

A :class:`Generation` owns what belongs to one request (its interaction's replies, the prepared
request, the result, what was posted, when each step happened) and runs the steps after the
acknowledgement: wait for a slot (showing the place in line), ask the engine, post the result.
Every way it ends, the member is told.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

import discord

from bot.discord_out.posting import ButtonsFor, DeliveryFailed, post_result
from bot.discord_out.progress import EditBudget, PreviewHold, ProgressDisplay
from bot.discord_out.replies import Replies
from bot.i18n import _
from bot.images import (
    AuthenticationFailed,
    GenerationResult,
    ImageClient,
    ImageError,
    InvalidRequest,
    Lease,
    ModerationBlocked,
    Policy,
    PreparedRequest,
    QuotaExhausted,
)
from bot.observability.metrics import Metrics
from bot.requests.moderation_log import ModerationLog
from bot.requests.queue import GenerationQueue, Ticket
from bot.requests.where import Where, where
from bot.store.budgets import Budget
from bot.store.ledger import Ledger, Outcome, Priced

log = logging.getLogger(__name__)

# Discord lets a bot use an interaction's token for 15 minutes; stop with time to say so.
TOKEN_LIFETIME = dt.timedelta(minutes=15)
TOKEN_MARGIN = dt.timedelta(seconds=45)
POSITION_UPDATE_INTERVAL = 1.5  # seconds between edits of a queued request's position
CANCELLED = _("The bot is restarting, so your request was cancelled. Sorry!")
TOOK_TOO_LONG = _(
    "Your request took too long and was cancelled before Discord stopped accepting its reply. "
    "Please try again."
)
LEDGER_UNAVAILABLE = _(
    "The bot cannot record usage right now, so it cannot take requests. Please try again soon."
)
WENT_WRONG = _("Something went wrong while making your images. Please try again.")
GENERATING = _("🎨 Generating…")
QUEUED = _("⏳ Waiting for a free slot: you are number {n} in the queue.")
# The image service refused before generating anything (InvalidRequest covers the options it
# does not take, the models it does not serve and the features the account lacks).
REFUSALS = (InvalidRequest, ModerationBlocked, QuotaExhausted, AuthenticationFailed)
LEDGER_SETTLE_TIMEOUT = 10.0  # seconds; the member has had their answer by then
# Seconds for the ledger to record that a request is being sent, while it holds a place in the
# queue: past it, the request is not sent (it could not be settled right after a crash).
LEDGER_SENDING_TIMEOUT = 5.0
# How long the images wait, once made, for their buttons (their request being saved): past it
# they are posted without buttons rather than held up by a slow database.
BUTTONS_WAIT = 2.0  # seconds


class NotRecorded(Exception):
    """The ledger could not record that the request is being sent: it is not sent."""

    user_message = LEDGER_UNAVAILABLE


# Makes what makes the buttons posted under a generation's images, once the uploads are known
# (None: no buttons); it must not raise. Started when the generation starts, so that saving the
# request overlaps the wait for the images.
Buttons = Callable[["Generation"], Coroutine[Any, Any, ButtonsFor | None]]


@dataclass(slots=True)
class Timeline:
    """When each step of a generation happened (UTC); None for a step not reached."""

    received: dt.datetime
    acknowledged: dt.datetime | None = None
    started_upstream: dt.datetime | None = None
    delivered: dt.datetime | None = None


class Job(Protocol):
    """What the admission runs after its checks: a :class:`Generation`, or a text model's request
    (bot/requests/describe.py). It records its ledger row, is acknowledged, then runs."""

    replies: Replies
    budgets: tuple[tuple[Budget, ...], tuple[Budget, ...]] | None
    ledger_row: int | None
    timeline: Timeline
    exempt: bool  # from the member's rate limit (their tier)
    where: Where  # whose settings and budgets apply, and which install
    moderation: Policy | None  # the server's moderation check (None or off: none)

    @property
    def prepared(self) -> Priced: ...
    @property
    def command(self) -> str: ...
    @property
    def interaction(self) -> discord.Interaction: ...
    @property
    def member_id(self) -> int: ...
    @property
    def member(self) -> str: ...
    async def settle(self, outcome: Outcome, error: BaseException | None = None) -> None: ...
    async def run(
        self,
        queue: GenerationQueue,
        images: ImageClient,
        lease: Lease,
        edits: EditBudget | None = None,
    ) -> None: ...


class OnAnInteraction:
    """A job's interaction and member, read from its replies (Generation, and the text model's
    jobs in bot/requests/describe.py)."""

    replies: Replies

    @property
    def interaction(self) -> discord.Interaction:
        return self.replies.interaction

    @property
    def member_id(self) -> int:
        return self.interaction.user.id


def member_of(body: dict[str, Any]) -> str:
    """The member as log lines above DEBUG name them: the pseudonym the service gets."""
    return str(body.get("user") or "a member")


class Generation(OnAnInteraction):
    """One request, admitted (valid and within the member's limits), on its way to a reply."""

    def __init__(
        self,
        replies: Replies,
        prepared: PreparedRequest,
        ledger: Ledger,
        metrics: Metrics | None = None,
        budgets: tuple[tuple[Budget, ...], tuple[Budget, ...]] | None = None,
        buttons: Buttons | None = None,
        *,
        exempt: bool = False,
        moderation_log: ModerationLog | None = None,
        moderation: Policy | None = None,
        preview_hold: PreviewHold | None = None,
    ) -> None:
        """``budgets``: the member's and the server's, from the server's settings (None: the
        ledger's defaults); ``buttons``: what puts buttons under the images; ``exempt``: from
        the member's rate limit (their tier); ``moderation_log``: where how it ended is logged
        (for servers that keep a log); ``moderation``: the server's moderation check (None or
        off: none); ``preview_hold``: the previews it holds in the progress budget's count (given
        back when its images arrive; the admission gives them back whatever else happens)."""
        self.replies = replies
        self.prepared = prepared
        self.ledger = ledger
        self.metrics = metrics or Metrics()
        self.budgets = budgets
        self.buttons = buttons
        self.exempt = exempt
        self.moderation_log = moderation_log
        self.moderation = moderation
        self.preview_hold = preview_hold
        # Whose settings and budgets apply, and which install: the ledger's row records it.
        self.where = where(replies.interaction)
        self.ledger_row: int | None = None  # set once the admission is recorded
        self.result: GenerationResult | None = None
        self._log_image: bytes | None = None  # the first image, for the moderation log's thumbnail
        self.timeline = Timeline(received=discord.utils.utcnow())

    @property
    def command(self) -> str:
        """What the metrics count this request under: an edit (/edit, Vary) or a generation."""
        return "edit" if self.prepared.is_edit else "imagine"

    @property
    def member(self) -> str:
        return member_of(self.prepared.body)

    async def settle(self, outcome: Outcome, error: BaseException | None = None) -> None:
        """Record how the request ended; a ledger failure is logged, never the member's."""
        self.metrics.request(outcome.value, self.command)
        if self.ledger_row is None:
            return
        result = self.result
        delivered = len(result.images) if result and outcome is Outcome.DELIVERED else 0
        request_id = result.request_id if result else getattr(error, "request_id", None)
        cost = await settle_row(
            self.ledger,
            self.ledger_row,
            outcome,
            self.prepared,
            images_returned=len(result.images) if result else None,
            images_delivered=delivered,
            request_id=request_id,
            usage=result.usage if result else None,
            previews_returned=result.previews if result else 0,
            # Never sent (cancelled or failed before its turn): its reservation goes.
            sent=self.timeline.started_upstream is not None,
        )
        if self.moderation_log is not None:
            first, self._log_image = self._log_image, None
            self.moderation_log.finished(
                self.interaction,
                prompt=self.prepared.prompt,
                model=self.prepared.model,
                outcome=outcome.value,
                cost=cost,
                image=first if delivered else None,
            )

    async def run(
        self,
        queue: GenerationQueue,
        images: ImageClient,
        lease: Lease,
        edits: EditBudget | None = None,
    ) -> None:
        """Wait for a slot, generate and post, within the interaction token's lifetime.

        ``lease`` takes a processing slot when the answer arrives; it is held until the images
        are posted and released here whatever happens. With ``edits`` (the bot's budget of
        progress edits), the reply shows previews, or the time elapsed, while the images are made.
        """
        expires = self.interaction.created_at + TOKEN_LIFETIME - TOKEN_MARGIN
        budget = max((expires - discord.utils.utcnow()).total_seconds(), 1.0)
        buttons: asyncio.Task[ButtonsFor | None] | None = None
        if self.buttons is not None:
            buttons = asyncio.create_task(self.buttons(self))
        try:
            async with asyncio.timeout(budget):
                self.result = await self._generate(queue, images, lease, edits)
                self.metrics.generated(self.result.model, self.result.elapsed)
                uploaded = await post_result(self.replies, self.result, await _ready(buttons))
                # Posted: the bytes go with the slot, not when the ledger has settled, which a
                # burst (or a slow database) can put off for seconds while every request
                # delivered meanwhile would keep its images: memory bounded by the slots, not N.
                # Only a server that keeps a moderation log keeps the first, for its thumbnail
                # (the log's queue bounds what it holds).
                if self.moderation_log is not None:  # handed only where the server keeps one
                    self._log_image = self.result.images[0].data if self.result.images else None
                self.result = self.result.without_bytes()
                lease.release()
            self.timeline.delivered = discord.utils.utcnow()
            self.metrics.delivered(
                self.result.model,
                len(self.result.images),
                uploaded,
                (self.timeline.delivered - self.timeline.received).total_seconds(),
            )
            log.debug("generation for user %s: %s", self.member_id, self.timeline)
            await self.settle(Outcome.DELIVERED)
        except (ImageError, DeliveryFailed, NotRecorded) as error:
            log.warning("/imagine for %s failed: %s: %s", self.member, type(error).__name__, error)
            await self.replies.tell_privately(error.user_message)
            refused = isinstance(error, REFUSALS)
            await self.settle(Outcome.REFUSED if refused else Outcome.FAILED, error)
        except TimeoutError:
            log.warning("/imagine for %s outlived its interaction token", self.member)
            await self.replies.tell_privately(TOOK_TOO_LONG)
            await self.settle(Outcome.CANCELLED)
        except asyncio.CancelledError:
            await self.replies.tell_privately(CANCELLED)
            await self.settle(Outcome.CANCELLED)
            raise
        except Exception as error:
            log.exception("/imagine for %s failed unexpectedly", self.member)
            await self.replies.tell_privately(WENT_WRONG)
            await self.settle(Outcome.FAILED, error)
        finally:
            lease.release()
            if buttons is not None:
                buttons.cancel()

    async def _generate(
        self, queue: GenerationQueue, images: ImageClient, lease: Lease, edits: EditBudget | None
    ) -> GenerationResult:
        # The only place that takes a slot: what decides when a request may go upstream.
        watchers: list[asyncio.Task[None]] = []

        def show_position(ticket: Ticket) -> None:
            watchers.append(asyncio.create_task(self._show_position(ticket, edits)))

        try:
            async with queue.slot(on_queued=show_position):
                if watchers:
                    watchers[0].cancel()
                    await self.replies.show_progress(GENERATING)
                await self._record_sending()
                self.timeline.started_upstream = discord.utils.utcnow()
                if edits is None:
                    return await images.generate(self.prepared, lease=lease)
                display = ProgressDisplay(
                    self.replies,
                    edits,
                    previews=self.prepared.partial_images,
                    hold=self.preview_hold,
                    most=self.prepared.partial_images * max(self.prepared.count, 1),
                )
                display.start()
                try:
                    on_partial = display.offer if self.prepared.streams else None
                    return await images.generate(
                        self.prepared, lease=lease, on_partial=on_partial, on_images=display.arrived
                    )
                finally:
                    # Before anything else edits the reply: no preview may land over the images.
                    await display.stop()
        finally:
            for watcher in watchers:
                watcher.cancel()

    async def _record_sending(self) -> None:
        await record_sending(self.ledger, self.ledger_row)

    async def _show_position(self, ticket: Ticket, edits: EditBudget | None) -> None:
        # Polled rather than pushed: one edit per interval at most, whatever the churn ahead.
        # Paid from the progress-edit budget like any other edit (put off to the next poll where
        # it says no): a slot freed with a thousand in line would otherwise start a thousand
        # edits at once, each holding its request and connection until Discord answers.
        shown = 0
        while ticket.position:
            if ticket.position != shown and (edits is None or edits.try_take()):
                shown = ticket.position
                await self.replies.show_progress(QUEUED.format(n=shown))
            await asyncio.sleep(POSITION_UPDATE_INTERVAL)


async def settle_row(
    ledger: Ledger, row: int, outcome: Outcome, prepared: Priced, **settlement: Any
) -> Decimal | None:
    """Settle ``row`` (see :meth:`Ledger.settle`): its cost, or None where the ledger failed,
    which is logged, never the member's (the ledger writes it later). The cost goes into the
    metrics once written."""
    try:
        async with asyncio.timeout(LEDGER_SETTLE_TIMEOUT):
            return await ledger.settle(row, outcome, prepared, **settlement)
    except Exception as exc:
        log.error(
            "the usage ledger could not settle row %s as %s (%s); it will try again",
            row,
            outcome.value,
            type(exc).__name__,
        )
        return None


async def record_sending(ledger: Ledger, row: int | None) -> None:
    """Before anything is sent: the ledger's row says it may have been, so that if this
    process dies now its reservation is kept, not released (bot/store/ledger.py). Raises
    :class:`NotRecorded` when it cannot say so, or the row was settled meanwhile by another
    process (this one had lost touch with the database for longer than its lease)."""
    if row is None:
        return
    try:
        async with asyncio.timeout(LEDGER_SENDING_TIMEOUT):
            pending = await ledger.sending(row)
    except Exception as exc:
        log.error(
            "the usage ledger could not record that row %s is being sent (%s); not sent",
            row,
            type(exc).__name__,
        )
        raise NotRecorded from None
    if not pending:
        log.warning(
            "row %s was settled as abandoned by another process while this one could not "
            "reach the database; not sent",
            row,
        )
        raise NotRecorded


async def _ready(buttons: asyncio.Task[ButtonsFor | None] | None) -> ButtonsFor | None:
    """The buttons, if they are ready within :data:`BUTTONS_WAIT`; else none."""
    if buttons is None:
        return None
    done, _ = await asyncio.wait({buttons}, timeout=BUTTONS_WAIT)
    if not done:
        log.warning("the buttons were not ready in time; the images are posted without them")
        return None
    if buttons.cancelled():
        return None
    if buttons.exception() is not None:
        log.error("the buttons could not be made", exc_info=buttons.exception())
        return None
    return buttons.result()
