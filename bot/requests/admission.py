"""Admission: everything before a request may wait for the image service, for every command.

The server's settings allow it (channel, model; they fill in the default model and quality, and
say the cap, the budgets and whether previews are shown), the bot is not shutting down, the
count is within the server's cap, the engine accepts the request (nothing is paid for
a refusal), the member is within their limits, the ledger records the request within the
member's and the server's budgets; then the interaction is acknowledged and
a :class:`~bot.requests.generation.Generation` takes over. One :class:`Admission` serves /imagine,
/edit and the Vary image menu, and owns their jobs: draining it (when the cogs are unloaded by
``bot.close()``) lets them finish or cancels them, whichever command started them.

An edit is checked twice: first everything that needs no file, at once, before it counts
against anything; then, in its job, it is counted against the member's limits, the budgets are
checked, room is kept for its inputs (or a processing slot), and only then are its images
downloaded from Discord and read. If that takes longer than Discord's patience allows, the
interaction is acknowledged first and a refusal then replaces the placeholder with a private
sentence. The member's limits count a request from its admission whatever its outcome; they
take it back only where the bot itself failed before downloading anything of it (the ledger
unavailable, Discord refusing the acknowledgement, a bug): from the first byte downloaded, a
request stays counted, so that a limit bounds the bot's downloads too.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import discord

from bot.config import Settings
from bot.discord_out.progress import EditBudget, PreviewHold
from bot.discord_out.replies import (
    DISCORD_FAILURES,
    RESTARTING,
    Replies,
    step_timeout,
    time_to_acknowledge,
)
from bot.i18n import _, ngettext
from bot.images import (
    ImageClient,
    ImageRequest,
    Lease,
    ModerationUnavailable,
    PreparedRequest,
    ProcessingSlots,
    UnsupportedOption,
)
from bot.images.text import PreparedText
from bot.observability.context import new_correlation_id, set_place
from bot.observability.metrics import Metrics
from bot.requests.acknowledgements import AcknowledgementsFirst
from bot.requests.generation import (
    CANCELLED,
    LEDGER_UNAVAILABLE,
    WENT_WRONG,
    Buttons,
    Generation,
    Job,
)
from bot.requests.moderation_log import ModerationLog
from bot.requests.queue import GenerationQueue
from bot.requests.server_admission import (
    BARRED,
    BLOCKED,
    Admissible,
    apply_server_settings,
    barred_here,
    picked_model,
)
from bot.requests.where import where
from bot.store.budgets import OverBudget, PriceUnknown
from bot.store.ledger import Ledger, Outcome
from bot.store.ratelimit import UserRateLimiter
from bot.store.server_settings import Rules, SettingsStore

if TYPE_CHECKING:
    from bot.requests.edit_inputs import EditInputs

log = logging.getLogger(__name__)

# Why a refusal is in the moderation log (read in the server's preferred language).
LOGGED_BARRED = _("the member is barred")
LOGGED_BLOCKED = _("a blocked word or pattern")
LOGGED_MODERATION = _("the moderation check: {categories}")
LOGGED_OVER_BUDGET = _("over a budget")
LIMITS_UNAVAILABLE = _("The bot cannot check usage limits right now. Please try again soon.")
CAP = ngettext(
    "This server allows at most {n} image per request.",
    "This server allows at most {n} images per request.",
)
RATE_LIMITED = _(
    "You have reached your limit of {limit}, counted across every server this bot is in. You "
    "can try again {again}."
)
SERVERS_ONLY = _("This bot works only in servers that installed it.")
NO_FILES_HERE = _(
    "This server does not let apps attach files in this channel, so the bot cannot post images "
    "here. Try another channel, or your DM with the bot."
)
LIMITER_TIMEOUT = 1.5  # seconds; Discord wants an answer within 3
MODERATION_REFUSED = _(
    "This server's moderation check refused this request, so it was not sent. Nothing was charged."
)
NOT_CHECKED = _(
    "This request could not be checked by this server's moderation check right now, so it was "
    "not sent. Nothing was charged: please try again soon."
)
NO_MODERATION_ROUTE = _(
    "This server checks requests with a moderation check that this bot's image service does "
    "not have, so it was not sent: a manager can turn it off with /imagine-settings moderation."
)
CANCEL_WAIT = 10.0  # seconds for cancelled jobs to tell their members

# How long the ledger (or a slow check) may take before the request is acknowledged regardless:
# a refusal is private either way, and Discord wants an answer within 3 seconds.
ADMISSION_BEFORE_ACKNOWLEDGING = 1.0
# Seconds; past ADMISSION_BEFORE_ACKNOWLEDGING the request is acknowledged while the ledger goes
# on, so this bounds only how long a member waits for a refusal from a stuck database.
LEDGER_ADMISSION_TIMEOUT = 30.0


async def _cancel(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and let it end (what it took, room or a slot, is back before the lease
    closes)."""
    task.cancel()
    await asyncio.wait({task})


class Admission:
    """Admits requests and owns the jobs that run them, whichever command they came from."""

    def __init__(
        self,
        *,
        settings: Settings,
        images: ImageClient,
        limiter: UserRateLimiter,
        queue: GenerationQueue,
        processing: ProcessingSlots,
        ledger: Ledger,
        metrics: Metrics,
        edits: EditBudget,
        rules: Rules,
        server_settings: SettingsStore,
        moderation_log: ModerationLog | None = None,
    ) -> None:
        self.settings = settings
        self.images = images
        self.limiter = limiter
        self.queue = queue  # requests waiting on the image service
        self.processing = processing  # answers being read, decoded and posted
        self.ledger = ledger
        self.metrics = metrics
        self.edits = edits  # the bot's budget of progress edits (previews, time)
        self.rules = rules  # what the configuration lets a server choose
        self.server_settings = server_settings
        # Servers' moderation logs; the checks before paying (a blocklist, the moderation check)
        # log their refusals with ``moderation_log.refused(...)``.
        self.moderation_log = moderation_log or ModerationLog(server_settings, metrics)
        self.jobs: set[asyncio.Task[None]] = set()
        # During a burst, the acknowledgements before any request's later steps.
        self.acknowledgements = AcknowledgementsFirst()
        # What puts buttons under every request's images (the bot's ImageButtons); None: none.
        self.buttons: Buttons | None = None
        self.draining = False  # set once, when draining starts: newcomers are refused

    def use_buttons(self, buttons: Buttons) -> None:
        """Put ``buttons`` under the images of every request admitted from now on (the bot
        builds them once at start, after this admission, since a press admits through it)."""
        self.buttons = buttons

    async def admit(
        self,
        interaction: discord.Interaction,
        request: ImageRequest,
        *,
        private: bool = False,
        counted: bool = False,
        default_model: bool = False,
    ) -> None:
        """A request checked at once (/imagine, a button under posted images): refused
        privately, or a job is started. ``private``: answered to the member only; ``counted``:
        already counted against the member's limits (an enhanced prompt's images: the
        enhancement counted, and acknowledged, the request); ``default_model``: the server's
        default model, not ``request.model`` (Imagine this)."""
        replies = self._received(interaction, "/imagine", private)
        # Before the draining check: nothing is awaited between it and the job's creation.
        settled = await apply_server_settings(
            interaction,
            request,
            self.rules,
            self.server_settings,
            picked=None if default_model else picked_model(interaction, request),
        )
        admissible = await self._open_to(replies, settled, request, "imagine")
        if admissible is None:
            return
        # The image service's lower moderation only where the server allows it in an
        # age-restricted channel, and only for a model that takes it; else always its default
        # (a saved request's buttons ask again under the rules of now).
        low = (
            admissible.low_moderation
            and "moderation" in self.images.catalog[admissible.request.model].options
        )
        admissible = dataclasses.replace(
            admissible,
            request=dataclasses.replace(admissible.request, moderation="low" if low else None),
        )
        try:
            prepared, hold = self._with_previews(admissible, self.images.prepare)
        except UnsupportedOption as refusal:
            self.metrics.request("invalid", "imagine")
            await self._refuse(replies, refusal.user_message)
            return
        generation = self._generation(replies, prepared, admissible, hold)
        self._start(interaction, self._run(generation, counted=counted), hold)

    async def admit_text(
        self,
        interaction: discord.Interaction,
        job: Callable[[Replies, Admissible], Job],
        *,
        command: str,
        kind: str,
        images: ImageRequest | None = None,
        private: bool = False,
    ) -> None:
        """A text model's request (/describe, Enhance; bot/requests/describe.py): the server's
        settings (its channels and budgets), draining, then limits, the ledger's row and the
        acknowledgement, as for images; ``job`` makes it for the request's replies. ``images``:
        the images it is made for (Enhance), checked now as :meth:`admit` will check them, so
        that nothing is paid for an enhancement whose images would be refused."""
        replies = self._received(interaction, command, private)
        request = images or ImageRequest(prompt="-", model=self.rules.default_model)
        picked = picked_model(interaction, request) if images else None
        settled = await apply_server_settings(
            interaction, request, self.rules, self.server_settings, picked=picked, command=command
        )
        admissible = await self._open_to(
            replies, settled, request, kind, count=request.count if images else 0
        )
        if admissible is None:
            return
        try:
            if images is not None:
                self.images.prepare(admissible.request)
        except UnsupportedOption as refusal:
            self.metrics.request("invalid", kind)
            await replies.answer(refusal.user_message)
            return
        self._start(interaction, self._run(job(replies, admissible)))

    async def admit_checked_later(
        self,
        interaction: discord.Interaction,
        request: ImageRequest,
        inputs: EditInputs,
        *,
        picked: str | None,
        command: str,
        preferred: str | None = None,
        private: bool = False,
    ) -> None:
        """An edit (/edit, Vary), whose ``inputs`` are checked at once for what needs no file,
        on the request as the server's settings make it, then downloaded in the job once it is
        counted, within budget and has room. ``picked``: the model the member chose (None: the
        default); only models that edit stand in for the server's default. ``preferred``: a
        model used before the default where the server allows it (see
        ``apply_server_settings``)."""
        replies = self._received(interaction, command, private)
        catalog = self.images.catalog
        settled = await apply_server_settings(
            interaction,
            request,
            self.rules,
            self.server_settings,
            picked=picked,
            command=command,
            usable=lambda name: name in catalog and catalog[name].edits,
            preferred=preferred,
        )
        admissible = await self._open_to(replies, settled, request, "edit")
        if admissible is None:
            return
        try:
            declared, hold = self._with_previews(admissible, inputs.check)
        except UnsupportedOption as refusal:  # nothing downloaded, nothing counted
            self.metrics.request("invalid", "edit")
            await replies.answer(refusal.user_message)
            return
        generation = self._generation(replies, declared, admissible, hold)
        self._start(interaction, self._download_then_run(generation, inputs), hold)

    def _received(
        self, interaction: discord.Interaction, what: str, private: bool = False
    ) -> Replies:
        # Every line logged for this request from here on, in its job too, carries this id,
        # and the place (server, DM, group DM, user install): never a raw id.
        new_correlation_id()
        here = where(interaction)
        set_place(here.place.value)
        self.metrics.received(here.place.value, "edit" if what != "/imagine" else "imagine")
        # The one line that ties the request's correlation id to its raw Discord ids, at DEBUG:
        # lines above it name the member by pseudonym, or not at all.
        log.debug(
            "%s from user %s in server %s, channel %s (interaction %s)",
            what, interaction.user.id, interaction.guild_id, interaction.channel_id, interaction.id,
        )  # fmt: skip
        # Outside a server's install the bot answers only through the interaction, which
        # allows a few follow-ups, and Discord may show the answer to the member alone.
        return Replies(
            interaction,
            private=private,
            follow_up_limit=here.follow_up_limit,
            shown_to_member_only=here.shown_to_member_only,
        )

    def _with_previews(
        self, admissible: Admissible, prepare: Callable[[ImageRequest], PreparedRequest]
    ) -> tuple[PreparedRequest, PreviewHold]:
        """The request prepared (by ``prepare``, which may raise :class:`UnsupportedOption`)
        with the previews the progress budget can show, and their hold in its count.

        Previews while the image is made: PARTIAL_IMAGES, unless the server turned them off,
        where the model streams, and only those the shared budget of progress edits can show
        (bot/discord_out/progress.py): decided here, before the request is priced, so that a
        preview withheld is neither reserved nor charged. Held from now, before anything is
        awaited: a burst admitted at once counts every request admitted before it."""
        wanted = self.settings.partial_images if admissible.previews else 0
        request = dataclasses.replace(admissible.request, partial_images=wanted)
        prepared = prepare(request)  # how many the model streams: PARTIAL_IMAGES or none
        # The stream carries its partial images per image: a set of 4 with 2 each is 8.
        images = max(prepared.count, 1)
        hold = self.edits.hold_previews(prepared.partial_images * images)
        per_image = hold.previews // images
        hold.keep(per_image * images)  # what does not make a whole round for every image
        withheld = (prepared.partial_images - per_image) * images
        if withheld:
            self.metrics.previews_withheld.inc(withheld)
            try:
                prepared = prepare(dataclasses.replace(request, partial_images=per_image))
            except BaseException:
                hold.release()
                raise
        return prepared, hold

    def _generation(
        self,
        replies: Replies,
        prepared: PreparedRequest,
        admissible: Admissible,
        hold: PreviewHold,
    ) -> Generation:
        replies.spoiler = admissible.spoiler
        return Generation(
            replies,
            prepared,
            self.ledger,
            self.metrics,
            budgets=admissible.budgets,
            buttons=self.buttons,
            exempt=admissible.exempt,
            moderation_log=self.moderation_log if admissible.logged else None,
            moderation=admissible.moderation,
            preview_hold=hold,
        )

    async def _open_to(
        self,
        replies: Replies,
        settled: Admissible | str,
        request: ImageRequest,
        kind: str,
        *,
        count: int | None = None,
    ) -> Admissible | None:
        """The request as the server's settings make it, if the bot takes ``request`` (of
        ``count`` images, its own count by default) now; if not (or the settings refuse it:
        ``settled`` is then the sentence), the member is told and it is None. ``kind``: what
        the metrics count it under ("imagine", "edit", "describe", "enhance")."""
        if self.draining:
            self.metrics.request("restarting", kind)
            await self._refuse(replies, RESTARTING)
            return None
        here = where(replies.interaction)
        if not self.settings.allow_user_install and here.personal:
            # Commands synced before ALLOW_USER_INSTALL was turned off may linger in clients.
            self.metrics.request("invalid", kind)
            await replies.answer(SERVERS_ONLY)
            return None
        if not here.can_attach:  # images that could not be posted are not paid for
            self.metrics.request("invalid", kind)
            await replies.answer(NO_FILES_HERE)
            return None
        if isinstance(settled, str):
            if settled == BARRED:
                self.metrics.request("barred", kind)
                self.moderation_log.refused(
                    replies.interaction, prompt=request.prompt, reason=LOGGED_BARRED
                )
            if settled == BLOCKED:
                self.metrics.request("blocked", kind)
                self.moderation_log.refused(
                    replies.interaction, prompt=request.prompt, reason=LOGGED_BLOCKED
                )
            await self._refuse(replies, settled)
            return None
        cap = settled.cap
        if (request.count if count is None else count) > cap:
            self.metrics.request("invalid", kind)
            await self._refuse(replies, CAP.format(n=cap))
            return None
        return settled

    def _start(
        self,
        interaction: discord.Interaction,
        work: Coroutine[Any, Any, None],
        hold: PreviewHold | None = None,
    ) -> None:
        # Tracked from here, before anything is awaited, so that a drain cannot miss it.
        job = asyncio.create_task(work, name=f"generation-{interaction.id}")
        self.jobs.add(job)
        job.add_done_callback(self._job_done)
        if hold is not None:
            # However the job ends (refused, failed, cancelled before it ran): its previews go
            # back, if its images' arrival has not given them back already.
            job.add_done_callback(lambda _: hold.release())

    def _job_done(self, job: asyncio.Task[None]) -> None:
        self.jobs.discard(job)
        if not job.cancelled() and job.exception() is not None:
            log.error("a generation job failed", exc_info=job.exception())

    @staticmethod
    async def _refuse(replies: Replies, sentence: str) -> None:
        """A private sentence, before the acknowledgement or in place of its placeholder."""
        if replies.acknowledged:
            await replies.tell_privately(sentence)
        else:
            await replies.answer(sentence)

    @staticmethod
    async def _cancelled(replies: Replies) -> None:
        if replies.acknowledged or not await replies.answer(RESTARTING):
            # Acknowledged already (perhaps by a defer whose answer never came back).
            await replies.tell_privately(CANCELLED)

    async def _download_then_run(self, generation: Generation, inputs: EditInputs) -> None:
        """Count the edit, check its budgets, keep room for its inputs, download and read them
        (acknowledging first where that takes long), then run it; the lease holds the room (or
        the slot standing in for it) until the job ends."""
        replies = generation.replies
        member_id = generation.member_id
        lease = self.processing.lease()
        try:
            # Counted before anything is downloaded: a member over their limit costs the bot no
            # download, and every download counts.
            if not generation.exempt and not await self._within_limits(replies, member_id, "edit"):
                return
            downloading = asyncio.create_task(self._download(generation, inputs, lease))
            try:
                wait = min(ADMISSION_BEFORE_ACKNOWLEDGING, time_to_acknowledge(replies.interaction))
                done, _ = await asyncio.wait({downloading}, timeout=wait)
                if not done:
                    await replies.defer()
                refusal = await downloading
            except UnsupportedOption as refused:  # the files, read: downloaded, so counted
                self.metrics.request("invalid", "edit")
                await self._refuse(replies, refused.user_message)
                return
            except asyncio.CancelledError:
                await _cancel(downloading)
                await self._cancelled(replies)
                raise
            except DISCORD_FAILURES as exc:
                await _cancel(downloading)
                log.warning("could not acknowledge a request in time: %r", exc)
                await self._refund_unless_downloaded(generation, inputs)
                return
            except Exception:
                # A bug in a check must still end with a sentence, never a silent placeholder.
                log.exception("checking a request failed unexpectedly")
                await self._refuse(replies, WENT_WRONG)
                await self._refund_unless_downloaded(generation, inputs)
                return
            if refusal is not None:  # a budget, before anything was downloaded
                await self._refuse(replies, refusal)
                if refusal == LEDGER_UNAVAILABLE and not generation.exempt:  # not counted
                    await self._refund_limits(member_id)
                return
            await self._run(generation, lease=lease, counted=True)
        finally:
            lease.close()

    async def _download(
        self, generation: Generation, inputs: EditInputs, lease: Lease
    ) -> str | None:
        """The budgets' refusal (checked before any download, and again when the request is
        recorded), or None once the inputs are downloaded and read into ``generation``."""
        refusal = await self._check_budgets(generation)
        if refusal is not None:
            return refusal
        # Room for the inputs outside the processing slots, or a slot kept until the job ends:
        # downloaded inputs are bounded by the slots, however many edits arrive at once.
        await lease.keep(inputs.declared_bytes)
        generation.prepared = await inputs.download()
        return None

    async def _refund_unless_downloaded(self, generation: Generation, inputs: EditInputs) -> None:
        if not inputs.downloading and not generation.exempt:  # exempt: it was never counted
            await self._refund_limits(generation.member_id)

    async def _run(
        self, generation: Job, *, lease: Lease | None = None, counted: bool = False
    ) -> None:
        """Count the request against the member's limits (unless ``counted``: an edit, whose
        files are downloaded by now, and which stays counted whatever happens), acknowledge it,
        then run it (with ``lease``, or a new one)."""
        replies = generation.replies
        admission: asyncio.Task[str | None] | None = None
        acknowledging = self.acknowledgements.started()
        try:
            # A tier exempt from the rate limit is counted until the moderation check lets the
            # request through: what the check refuses costs nothing, so no budget bounds how
            # many checks (on the operator's account, shared by every server) it could cause.
            until_checked = generation.exempt and not counted and self._checks(generation)
            counted = counted or (generation.exempt and not until_checked)
            if not counted and not await self._within_limits(
                replies, generation.member_id, generation.command
            ):
                return
            # Where a budget may refuse the request, the refusal is best said before the public
            # placeholder appears; else (the default) the ledger can only fail, and the request
            # is acknowledged at once. Nothing is sent upstream before its row is written.
            may_refuse = self._checks(generation) or self.ledger.has_budgets(
                generation.where.guild_id, generation.budgets
            )
            done: set[asyncio.Task[str | None]] = set()
            if may_refuse:
                # After the limits, so a request a budget refuses has still counted against
                # them, and the limits bound how many moderation checks a member can cause.
                admission = asyncio.create_task(self._checked_then_recorded(generation))
                wait = min(ADMISSION_BEFORE_ACKNOWLEDGING, time_to_acknowledge(replies.interaction))
                done, _ = await asyncio.wait({admission}, timeout=wait)
            else:
                # Nothing is awaited before the defer, and nothing more is started until the
                # other requests of a burst are acknowledged too (half a second at most): their
                # acknowledgements share the loop with no ledger rows, uploads or streams.
                if not replies.acknowledged:  # an enhanced prompt's images: acknowledged
                    await self._acknowledge(generation)
                acknowledging.done()
                await self.acknowledgements.after_the_others()
                admission = asyncio.create_task(self._checked_then_recorded(generation))
            if not done and not replies.acknowledged:
                # A slow database must not outlast Discord's 3 seconds: acknowledge and wait
                # on; a refusal then replaces the placeholder with a private sentence.
                await self._acknowledge(generation)
                acknowledging.done()
            refusal = await admission
            checked_out = refusal in (MODERATION_REFUSED, NOT_CHECKED, NO_MODERATION_ROUTE)
            if not counted and (
                refusal == LEDGER_UNAVAILABLE  # not taken: not counted
                or (until_checked and not checked_out)  # checked: exempt after all
            ):
                await self._refund_limits(generation.member_id)
            if refusal is not None:
                await self._refuse(replies, refusal)
                return
            if not replies.acknowledged:
                await self._acknowledge(generation)
        except asyncio.CancelledError:
            if admission is not None and not admission.done():
                admission.cancel()
            await self._cancelled(replies)
            await generation.settle(Outcome.CANCELLED)
            raise
        except DISCORD_FAILURES as exc:
            log.warning("could not acknowledge a request in time: %r", exc)
            if admission is not None:
                # Its row may be on its way (a slow ledger outlasted the wait): settled with the
                # rest, not written after and left reserved until its lease runs out.
                await asyncio.wait({admission})
            await generation.settle(Outcome.FAILED, exc)
            return
        finally:
            acknowledging.done()
        lease = lease or self.processing.lease()
        await generation.run(self.queue, self.images, lease, self.edits)

    async def barred(
        self, interaction: discord.Interaction, command: str | None = None
    ) -> str | None:
        """Whether the member is barred here (the sentence), for what needs no request;
        ``command``: one that posts in the channel, also refused outside the server's channels."""
        return await barred_here(interaction, self.rules, self.server_settings, command=command)

    # -- the moderation check, the ledger's row and the acknowledgement -------------------------

    @staticmethod
    def _checks(generation: Job) -> bool:
        return generation.moderation is not None and generation.moderation.checks

    async def _checked_then_recorded(self, generation: Job) -> str | None:
        """The moderation check (where the server wants one), then :meth:`_record`: None when
        the row is written, else what to tell the member."""
        refusal = await self._moderated(generation)
        return refusal if refusal is not None else await self._record(generation)

    async def _moderated(self, generation: Job) -> str | None:
        """What the server's moderation check says of the prompt and the edit's images: None
        where it lets the request through, else the sentence. It fails closed: a check that
        cannot be made refuses the request."""
        policy = generation.moderation
        if policy is None or not policy.checks:
            return None
        prepared = generation.prepared
        if isinstance(prepared, PreparedRequest):
            prompt = prepared.prompt
            images = [(image.format, image.data) for image in prepared.inputs if image.data]
        elif isinstance(prepared, PreparedText) and prepared.members_text is not None:
            # An enhancement: the member's prompt, before the text model is paid for it.
            prompt, images = prepared.members_text, []
        else:  # a description: its image is checked once downloaded (TextJob.run)
            return None
        return await self.moderate(generation, prompt, images)

    async def moderate(
        self, generation: Job, prompt: str, images: list[tuple[str, bytes]]
    ) -> str | None:
        """What the server's moderation check of ``generation`` says of ``prompt`` and
        ``images`` (format and bytes): None where it lets them through, else the sentence (it
        fails closed)."""
        policy = generation.moderation
        assert policy is not None
        prepared = generation.prepared
        if self.rules.moderations is False:
            self.metrics.request("moderation_unavailable", generation.command)
            return NO_MODERATION_ROUTE
        try:
            refused = policy.refused(await self.images.moderate(prompt, images))
        except ModerationUnavailable as exc:
            log.warning("a request was refused: the moderation check failed (%s)", exc)
            self.metrics.request("moderation_unavailable", generation.command)
            return NOT_CHECKED
        except Exception:
            log.exception("the moderation check failed unexpectedly")
            self.metrics.request("moderation_unavailable", generation.command)
            return NOT_CHECKED
        if refused:
            log.info("the moderation check refused a request (%s)", ", ".join(refused))
            self.metrics.request("moderation_refused", generation.command)
            self.moderation_log.refused(
                generation.interaction,
                prompt=prompt,
                model=prepared.model,
                reason=LOGGED_MODERATION.format(categories=", ".join(refused)),
            )
            return MODERATION_REFUSED
        return None

    async def _record(self, generation: Job) -> str | None:
        """Write the ledger's row for this request, reserving its estimate against the budgets;
        None when written, else what to tell the member: a budget refused it, or the row could
        not be written (the request must then not go ahead: spend is never unrecorded)."""

        async def admitted() -> None:
            generation.ledger_row = await self.ledger.admitted(
                generation.prepared,
                member_id=generation.member_id,
                guild_id=generation.where.guild_id,  # None: the member's personal scope
                channel_id=generation.interaction.channel_id,
                at=generation.timeline.received,
                chosen_budgets=generation.budgets,
                context=generation.where.context.value,
                installation=generation.where.installation.value,
            )

        return await self._ledger_refusal(generation, admitted(), "record")

    async def _check_budgets(self, generation: Generation) -> str | None:
        """Whether the budgets would take this request now, recording nothing (an edit, before
        its files are downloaded: :meth:`_record` still decides): None, or what to tell the
        member, as :meth:`_record`."""
        checking = self.ledger.check_budgets(
            generation.prepared,
            member_id=generation.member_id,
            guild_id=generation.where.guild_id,
            at=generation.timeline.received,
            chosen_budgets=generation.budgets,
        )
        return await self._ledger_refusal(generation, checking, "check the budgets of")

    async def _ledger_refusal(
        self, generation: Job, writing: Coroutine[Any, Any, None], what: str
    ) -> str | None:
        try:
            async with asyncio.timeout(LEDGER_ADMISSION_TIMEOUT):
                await writing
        except (OverBudget, PriceUnknown) as refusal:
            log.info("a budget refused a request from %s: %s", generation.member, refusal)
            self.metrics.request("over_budget", generation.command)
            prepared = generation.prepared
            self.moderation_log.refused(
                generation.interaction,
                prompt=prepared.prompt
                if isinstance(prepared, PreparedRequest)
                else f"({prepared.kind})",
                model=prepared.model,
                reason=LOGGED_OVER_BUDGET,
            )
            return refusal.sentence()  # in the member's language when it is answered
        except Exception as exc:
            self.metrics.request("ledger_unavailable", generation.command)
            log.error(
                "the usage ledger could not %s a request from %s (%s: %s)",
                what,
                generation.member,
                type(exc).__name__,
                str(exc).splitlines()[0][:300] if str(exc) else "",
            )
            return LEDGER_UNAVAILABLE
        return None

    @staticmethod
    async def _acknowledge(generation: Job) -> None:
        """Defer with a public placeholder; raises what Discord raises."""
        await generation.replies.defer()
        generation.timeline.acknowledged = discord.utils.utcnow()

    async def _within_limits(self, replies: Replies, member_id: int, kind: str) -> bool:
        """Count the request; when a limit refuses it, or the store does not answer, say so.
        ``kind``: what the metrics count it under."""
        try:
            # A shared store (Redis) that hangs must not outlast Discord's 3 seconds to answer.
            async with asyncio.timeout(step_timeout(replies.interaction, LIMITER_TIMEOUT)):
                refusal = await self.limiter.acquire(str(member_id))
        except Exception:
            log.exception("the rate-limit store did not answer")
            self.metrics.request("limits_unavailable", kind)
            await self._refuse(replies, LIMITS_UNAVAILABLE)
            return False
        if refusal is None:
            return True
        self.metrics.request("rate_limited", kind)
        again = discord.utils.format_dt(dt.datetime.fromtimestamp(refusal.reset_at, dt.UTC), "R")
        await self._refuse(
            replies,
            # The limit is the member's own in every server: "this server's" would mislead.
            RATE_LIMITED.format(limit=refusal.describe(), again=again),
        )
        return False

    async def _refund_limits(self, member_id: int) -> None:
        try:
            async with asyncio.timeout(LIMITER_TIMEOUT):
                await self.limiter.refund(str(member_id))
        except Exception as exc:  # the request stays counted: the member waits a little longer
            log.warning("could not take back a request from the limits (%s)", type(exc).__name__)

    # -- shutdown --------------------------------------------------------------------------------

    async def drain(self, grace: float) -> None:
        """Refuse new requests, let those in flight finish within ``grace``, cancel the rest.
        Every cog that admits through this calls it as it unloads; after the first, it finds
        nothing left to wait for."""
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
