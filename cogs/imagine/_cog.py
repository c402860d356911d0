"""The /imagine cog: admits requests and owns the jobs that run them.

Admission is everything before a request may wait for the image service: the bot is not
shutting down, the count is within the server's cap, the engine accepts the options (nothing is
paid for a refusal), the member is within their limits, the ledger records the request within
the member's and the server's budgets; then the interaction is acknowledged and
a :class:`~bot.generation.Generation` takes over. Unloading the cog (``bot.close()``) drains.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import TYPE_CHECKING

import discord
from discord.ext import commands

from bot.generation import CANCELLED, LEDGER_UNAVAILABLE, Generation
from bot.images import ImageRequest, UnsupportedOption
from bot.ledger import Outcome
from bot.observability.context import new_correlation_id
from bot.replies import DISCORD_FAILURES, Replies
from bot.services import Services

from ._command import build_imagine_command

if TYPE_CHECKING:
    from bot.app import ImagineBot

log = logging.getLogger(__name__)

RESTARTING = "The bot is restarting. Please try again in a minute."
LIMITS_UNAVAILABLE = "The bot cannot check usage limits right now. Please try again soon."
LIMITER_TIMEOUT = 1.5  # seconds; Discord wants an answer within 3
CANCEL_WAIT = 10.0  # seconds for cancelled jobs to tell their members


# How long the ledger may take to admit a request before it is acknowledged regardless: a
# refusal is private either way, and Discord wants an answer within 3 seconds.
ADMISSION_BEFORE_ACKNOWLEDGING = 1.0


class ImagineCog(commands.Cog, name="Imagine"):
    """The /imagine command and the generation jobs it starts."""

    def __init__(self, bot: ImagineBot, services: Services) -> None:
        self.bot = bot
        self.settings = services.settings
        self.images = services.images
        self.limiter = services.limiter
        self.queue = services.queue
        self.processing = services.processing
        self.ledger = services.ledger
        self.metrics = services.metrics
        self.jobs: set[asyncio.Task[None]] = set()
        self.draining = False  # set once, when the cog starts to drain: newcomers are refused
        self.command = build_imagine_command(services, self.admit)

    async def cog_load(self) -> None:
        self.bot.tree.add_command(self.command)

    async def cog_unload(self) -> None:
        await self.drain(self.settings.shutdown_grace_seconds)
        self.bot.tree.remove_command(self.command.name)

    # -- admission -------------------------------------------------------------------------------

    async def admit(self, interaction: discord.Interaction, request: ImageRequest) -> None:
        """Refuse what cannot go ahead at once and privately; start a job for the rest."""
        # Every line logged for this request from here on, in its job too, carries this id.
        new_correlation_id()
        log.debug("/imagine from user %s (interaction %s)", interaction.user.id, interaction.id)
        replies = Replies(interaction)
        if self.draining:
            self.metrics.request("restarting")
            await replies.answer(RESTARTING)
            return
        cap = self.settings.max_images_per_request
        if request.count > cap:
            self.metrics.request("invalid")
            await replies.answer(f"This server allows at most {cap} images per request.")
            return
        try:
            prepared = self.images.prepare(request)
        except UnsupportedOption as refusal:
            self.metrics.request("invalid")
            await replies.answer(refusal.user_message)
            return
        generation = Generation(replies, prepared, self.ledger, self.metrics)
        # Tracked from here, before anything is awaited, so that a drain cannot miss it.
        job = asyncio.create_task(self._run(generation), name=f"generation-{interaction.id}")
        self.jobs.add(job)
        job.add_done_callback(self._job_done)

    def _job_done(self, job: asyncio.Task[None]) -> None:
        self.jobs.discard(job)
        if not job.cancelled() and job.exception() is not None:
            log.error("an /imagine job failed", exc_info=job.exception())

    async def _run(self, generation: Generation) -> None:
        """Count the request against the member's limits, acknowledge it, then run it."""
        replies = generation.replies
        admission: asyncio.Task[str | None] | None = None
        try:
            if not await self._within_limits(generation):
                return
            # After the limits, so a request a budget refuses has still counted against them.
            admission = asyncio.create_task(generation.record_admission())
            # Where a budget may refuse the request, the refusal is best said before the public
            # placeholder appears; else (the default) the ledger can only fail, and the request
            # is acknowledged at once. Nothing is sent upstream before its row is written.
            may_refuse = self.ledger.has_budgets(generation.interaction.guild_id)
            wait = ADMISSION_BEFORE_ACKNOWLEDGING if may_refuse else 0.0
            done, _ = await asyncio.wait({admission}, timeout=wait)
            if not done:
                # A slow database must not outlast Discord's 3 seconds: acknowledge and wait
                # on; a refusal then replaces the placeholder with a private sentence.
                await generation.acknowledge()
            refusal = await admission
            if refusal is not None:
                if replies.acknowledged:
                    await replies.tell_privately(refusal)
                else:
                    await replies.answer(refusal)
                if refusal == LEDGER_UNAVAILABLE:  # not taken: not counted against the limits
                    await self._refund_limits(generation)
                return
            if not replies.acknowledged:
                await generation.acknowledge()
        except asyncio.CancelledError:
            if admission is not None and not admission.done():
                admission.cancel()
            if replies.acknowledged or not await replies.answer(RESTARTING):
                # Acknowledged already (perhaps by a defer whose answer never came back).
                await replies.tell_privately(CANCELLED)
            await generation.settle(Outcome.CANCELLED)
            raise
        except DISCORD_FAILURES as exc:
            log.warning("could not acknowledge an /imagine in time: %r", exc)
            await generation.settle(Outcome.FAILED, exc)
            return
        await generation.run(self.queue, self.images, self.processing.lease())

    async def _within_limits(self, generation: Generation) -> bool:
        """Count the request; when a limit refuses it, or the store does not answer, say so."""
        try:
            # A shared store (Redis) that hangs must not outlast Discord's 3 seconds to answer.
            async with asyncio.timeout(LIMITER_TIMEOUT):
                refusal = await self.limiter.acquire(str(generation.member_id))
        except Exception:
            log.exception("the rate-limit store did not answer")
            self.metrics.request("limits_unavailable")
            await generation.replies.answer(LIMITS_UNAVAILABLE)
            return False
        if refusal is None:
            return True
        self.metrics.request("rate_limited")
        again = discord.utils.format_dt(dt.datetime.fromtimestamp(refusal.reset_at, dt.UTC), "R")
        await generation.replies.answer(
            f"You have reached this server's limit of {refusal.describe()}. "
            f"You can try again {again}.",
        )
        return False

    async def _refund_limits(self, generation: Generation) -> None:
        try:
            async with asyncio.timeout(LIMITER_TIMEOUT):
                await self.limiter.refund(str(generation.member_id))
        except Exception as exc:  # the request stays counted: the member waits a little longer
            log.warning("could not take back a request from the limits (%s)", type(exc).__name__)

    # -- shutdown --------------------------------------------------------------------------------

    async def drain(self, grace: float) -> None:
        """Refuse new requests, let those in flight finish within ``grace``, cancel the rest."""
        self.draining = True  # checked before a job is created, with no await in between
        if not self.jobs:
            return
        log.info("waiting up to %.0fs for %d request(s) in flight", grace, len(self.jobs))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while self.jobs and (remaining := deadline - loop.time()) > 0:
            await asyncio.wait(set(self.jobs), timeout=remaining)
        unfinished = set(self.jobs)
        for job in unfinished:
            job.cancel()
        if unfinished:
            log.warning(
                "cancelled %d request(s) still running after the grace period", len(unfinished)
            )
            await asyncio.wait(unfinished, timeout=CANCEL_WAIT)
