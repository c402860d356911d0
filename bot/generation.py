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
from dataclasses import dataclass

import discord

from bot.images import GenerationResult, ImageClient, ImageError, Lease, PreparedRequest
from bot.posting import DeliveryFailed, post_result
from bot.queue import GenerationQueue, Ticket
from bot.replies import Replies

log = logging.getLogger(__name__)

# Discord lets a bot use an interaction's token for 15 minutes; stop with time to say so.
TOKEN_LIFETIME = dt.timedelta(minutes=15)
TOKEN_MARGIN = dt.timedelta(seconds=45)
POSITION_UPDATE_INTERVAL = 1.5  # seconds between edits of a queued request's position
CANCELLED = "The bot is restarting, so your request was cancelled. Sorry!"
TOOK_TOO_LONG = (
    "Your request took too long and was cancelled before Discord stopped accepting its reply. "
    "Please try again."
)
WENT_WRONG = "Something went wrong while making your images. Please try again."


@dataclass(slots=True)
class Timeline:
    """When each step of a generation happened (UTC); None for a step not reached."""

    received: dt.datetime
    acknowledged: dt.datetime | None = None
    started_upstream: dt.datetime | None = None
    delivered: dt.datetime | None = None


class Generation:
    """One request, admitted (valid and within the member's limits), on its way to a reply."""

    def __init__(self, replies: Replies, prepared: PreparedRequest) -> None:
        self.replies = replies
        self.prepared = prepared
        self.result: GenerationResult | None = None
        self.timeline = Timeline(received=discord.utils.utcnow())

    @property
    def interaction(self) -> discord.Interaction:
        return self.replies.interaction

    @property
    def member_id(self) -> int:
        return self.interaction.user.id

    async def acknowledge(self) -> None:
        """Defer with a public placeholder; raises what Discord raises."""
        await self.replies.defer()
        self.timeline.acknowledged = discord.utils.utcnow()

    async def run(self, queue: GenerationQueue, images: ImageClient, lease: Lease) -> None:
        """Wait for a slot, generate and post, within the interaction token's lifetime.

        ``lease`` takes a processing slot when the answer arrives; it is held until the images
        are posted and released here whatever happens.
        """
        expires = self.interaction.created_at + TOKEN_LIFETIME - TOKEN_MARGIN
        budget = max((expires - discord.utils.utcnow()).total_seconds(), 1.0)
        try:
            async with asyncio.timeout(budget):
                self.result = await self._generate(queue, images, lease)
                await post_result(self.replies, self.result)
                lease.release()
            self.timeline.delivered = discord.utils.utcnow()
            log.debug("generation for user %s: %s", self.member_id, self.timeline)
        except (ImageError, DeliveryFailed) as error:
            log.warning(
                "/imagine for user %s failed: %s: %s", self.member_id, type(error).__name__, error
            )
            await self.replies.tell_privately(error.user_message)
        except TimeoutError:
            log.warning("/imagine for user %s outlived its interaction token", self.member_id)
            await self.replies.tell_privately(TOOK_TOO_LONG)
        except asyncio.CancelledError:
            await self.replies.tell_privately(CANCELLED)
            raise
        except Exception:
            log.exception("/imagine for user %s failed unexpectedly", self.member_id)
            await self.replies.tell_privately(WENT_WRONG)
        finally:
            lease.release()

    async def _generate(
        self, queue: GenerationQueue, images: ImageClient, lease: Lease
    ) -> GenerationResult:
        # The only place that takes a slot: what decides when a request may go upstream.
        watchers: list[asyncio.Task[None]] = []

        def show_position(ticket: Ticket) -> None:
            watchers.append(asyncio.create_task(self._show_position(ticket)))

        try:
            async with queue.slot(on_queued=show_position):
                if watchers:
                    watchers[0].cancel()
                    await self.replies.show_progress("🎨 Generating…")
                self.timeline.started_upstream = discord.utils.utcnow()
                return await images.generate(self.prepared, lease=lease)
        finally:
            for watcher in watchers:
                watcher.cancel()

    async def _show_position(self, ticket: Ticket) -> None:
        # Polled rather than pushed: one edit per interval at most, whatever the churn ahead.
        shown = 0
        while ticket.position:
            if ticket.position != shown:
                shown = ticket.position
                await self.replies.show_progress(
                    f"⏳ Waiting for a free slot: you are number {shown} in the queue."
                )
            await asyncio.sleep(POSITION_UPDATE_INTERVAL)
