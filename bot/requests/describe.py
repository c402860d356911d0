"""Describe and enhance: the text model's requests (``TEXT_MODEL``, bot/images/text.py), on the
road every request takes.

- /describe and the Describe image menu: four prompt suggestions for an image, each with an
  "Imagine this" button (:class:`SuggestionButton`) that starts /imagine with it.
- Enhance (/imagine's ``enhance`` option, the ✨ Enhance button under posted images): the text
  model rewrites the prompt into a richer one, and the images are made from that, which their
  embed shows and their Reroll and Edit prompt reuse (it is the request saved for the buttons).

Decisions:

- Each is a request of its own, admitted like every other (:meth:`Admission.admit_text`): the
  server's channels and budgets, the member's limits, a ledger row (kind ``describe`` or
  ``enhance``, no images, its cost reserved from the text model's prices and settled from the
  usage reported), the acknowledgement, the drain; every refusal or failure is a private
  sentence. An enhanced /imagine is two rows (the enhancement, then the images) but one request
  against the member's limits: the images are admitted as already counted. The images are
  checked against the server's settings and the catalog before the enhancement is paid for;
  what can only refuse them later (a budget, the bot restarting) is said privately in place of
  the placeholder.
- A description's image is checked for its declared size before anything counts, downloaded
  only once the request is counted, recorded and acknowledged (with room kept for it, as an
  edit's inputs), read from its bytes and scaled down before it is sent as a data URL.
- A suggestion is up to 600 characters and a ``custom_id`` holds 100: each is saved as a request
  (``generation_state``, with the offered default model), and its button carries the key. A
  press is a new /imagine from the presser, with the server's default model, so it works after
  a restart like the buttons under images.
- Where the text model is not offered (TEXT_MODEL empty, or the endpoint lists its models and
  lacks it: one log line at start), /describe and the menu are not added, the Enhance button is
  not shown, and /imagine's ``enhance`` option is answered with :data:`NOT_OFFERED`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
from collections.abc import Callable, Sequence
from typing import Any, cast

import discord

from bot.discord_out.progress import EditBudget
from bot.discord_out.replies import DISCORD_FAILURES, RESTARTING, Replies, as_written
from bot.i18n import _
from bot.images import (
    ImageClient,
    ImageError,
    ImageRequest,
    Lease,
    Policy,
    UnsupportedOption,
)
from bot.images.edits import check_file_size
from bot.images.text import (
    DESCRIBE,
    DESCRIBE_PROMPT,
    ENHANCE,
    MAX_INPUT_BYTES,
    PreparedText,
    TextModelSpec,
    TextResult,
    data_url_image,
    enhanced_of,
    image_data_url,
    prepare_describe,
    prepare_enhance,
    suggestions_of,
)
from bot.observability.metrics import Metrics
from bot.requests.admission import Admission
from bot.requests.buttons import belongs_here
from bot.requests.edit_inputs import _download
from bot.requests.editing import image_attachments
from bot.requests.generation import (
    CANCELLED,
    REFUSALS,
    TOKEN_LIFETIME,
    TOKEN_MARGIN,
    TOOK_TOO_LONG,
    WENT_WRONG,
    NotRecorded,
    OnAnInteraction,
    Timeline,
    member_of,
    record_sending,
    settle_row,
)
from bot.requests.queue import GenerationQueue
from bot.requests.saved_requests import SavedRequests
from bot.requests.server_admission import Admissible
from bot.requests.where import where
from bot.store.budgets import Budget
from bot.store.ledger import Ledger, Outcome
from bot.store.pseudonym import Pseudonymizer

log = logging.getLogger(__name__)

NOT_OFFERED = _(
    "Describing images and enhancing prompts are not available on this bot: its image service "
    "has no text model."
)
NO_IMAGE = _("That message has no image to describe.")
DESCRIBING = _("🔎 Describing the image…")
ENHANCING = _("✨ Enhancing the prompt…")
# The text checked with a description's image (and what the moderation log shows for it): the
# member wrote none.
GONE = _("The bot no longer has this suggestion. Please use /describe again.")
UNREADABLE = _("The bot cannot read this suggestion right now. Please try again soon.")
IMAGINE_THIS = _("Imagine this")
IMAGINE_THIS_NUMBER = _("Imagine this ({number})")
DESCRIBED = _("{member}'s image, described")
FOOTER = _("{model} · Imagine this starts /imagine with it")
LOAD_TIMEOUT = 1.0  # seconds to read a suggestion back: a press wants an answer within 3
# describe:imagine:<key>: the saved suggestion's key.
SUGGESTION_ID = re.compile(r"describe:imagine:(?P<key>[0-9]{1,19})")


class TextJob(OnAnInteraction):
    """One text model's request, admitted, on its way to its answer (a :class:`Job`)."""

    def __init__(
        self,
        replies: Replies,
        prepared: PreparedText,
        ledger: Ledger,
        metrics: Metrics,
        *,
        budgets: tuple[tuple[Budget, ...], tuple[Budget, ...]] | None,
        features: TextFeatures,
        source: discord.Attachment | None = None,
        request: ImageRequest | None = None,
        exempt: bool = False,
        moderation: Policy | None = None,
        spoiler: bool = False,
    ) -> None:
        """``source``: the image a description starts from; ``request``: the images an
        enhancement is for (made from its answer); ``exempt``: from the member's rate limit
        (their tier); ``moderation``: the server's moderation check; ``spoiler``: the server
        posts results here as spoilers."""
        self.replies = replies
        self.exempt = exempt
        # Whose settings and budgets apply, and which install: the ledger's row records it.
        self.where = where(replies.interaction)
        # The server's moderation check reads an enhancement's prompt before the text model is
        # paid for it (and sees it); the images are checked again, with the enhanced prompt,
        # when they are admitted.
        self.moderation: Policy | None = moderation
        self.spoiler = spoiler
        self._prepared = prepared
        self.ledger = ledger
        self.metrics = metrics
        self.budgets = budgets
        self.features = features
        self.source = source
        self.request = request
        self.ledger_row: int | None = None
        self.result: TextResult | None = None
        self.timeline = Timeline(received=discord.utils.utcnow())

    @property
    def prepared(self) -> PreparedText:
        return self._prepared

    @property
    def command(self) -> str:
        return self._prepared.kind

    @property
    def member(self) -> str:
        return member_of(self._prepared.body)

    async def _moderated(self, url: str) -> str | None:
        """The server's moderation check of a description's image (what the text model would
        be sent): None where it lets it through, else the sentence. The description is posted
        publicly with the image's thumbnail, so the image is checked as an edit's are."""
        if self.moderation is None or not self.moderation.checks:
            return None
        admission = self.features.admission
        return await admission.moderate(self, DESCRIBE_PROMPT, [data_url_image(url)])

    async def settle(
        self, outcome: Outcome, error: BaseException | None = None, *, counted: bool = True
    ) -> None:
        """Record how the request ended; a ledger failure is logged, never the member's.
        ``counted``: False where the metrics counted its outcome already (the moderation
        check's refusal)."""
        if counted:
            self.metrics.request(outcome.value, self.command)
        if self.ledger_row is None:
            return
        result = self.result
        await settle_row(
            self.ledger,
            self.ledger_row,
            outcome,
            self._prepared,
            # An answer arrived: its usage (or the estimate) settles it; none: the estimate
            # stays counted, as for an image answer that never came.
            images_returned=1 if result else None,
            request_id=result.request_id if result else getattr(error, "request_id", None),
            usage=result.usage if result else None,
            sent=self.timeline.started_upstream is not None,
        )

    async def run(
        self,
        queue: GenerationQueue,
        images: ImageClient,
        lease: Lease,
        edits: EditBudget | None = None,
    ) -> None:
        """The image downloaded (a description), a turn in the queue, the text model's answer,
        then what it is for: the suggestions posted, or the enhanced prompt's images admitted."""
        expires = self.interaction.created_at + TOKEN_LIFETIME - TOKEN_MARGIN
        budget = max((expires - discord.utils.utcnow()).total_seconds(), 1.0)
        try:
            async with asyncio.timeout(budget):
                await self.replies.show_progress(DESCRIBING if self.source else ENHANCING)
                if self.source is not None:
                    await lease.keep(self.source.size)
                    data = await _download(self.source, "image")
                    url = await image_data_url(data)
                    refusal = await self._moderated(url)
                    if refusal is not None:  # never sent: its reservation is released
                        await self.replies.tell_privately(refusal)
                        await self.settle(Outcome.REFUSED, counted=False)
                        return
                    self._prepared = self._prepared.with_image(url)
                async with queue.slot():
                    await record_sending(self.ledger, self.ledger_row)
                    self.timeline.started_upstream = discord.utils.utcnow()
                    self.result = await images.complete(self._prepared)
                lease.release()
                if self._prepared.kind == DESCRIBE:
                    await self.features.post_suggestions(self, suggestions_of(self.result.text))
                    await self.settle(Outcome.DELIVERED)
                else:
                    enhanced = enhanced_of(self.result.text)
                    await self.settle(Outcome.DELIVERED)
                    assert self.request is not None
                    # Within what the model takes: a longer prompt would only be refused.
                    spec = images.catalog.get(self.request.model)
                    if spec is not None:
                        enhanced = enhanced[: spec.max_prompt_chars]
                    request = dataclasses.replace(self.request, prompt=enhanced)
                    await self.features.admission.admit(
                        self.interaction, request, counted=True, private=self.replies.private
                    )
        except (ImageError, NotRecorded) as error:
            log.warning(
                "%s for %s failed: %s: %s", self.command, self.member, type(error).__name__, error
            )
            await self.replies.tell_privately(error.user_message)
            refused = isinstance(error, (*REFUSALS, UnsupportedOption))
            await self.settle(Outcome.REFUSED if refused else Outcome.FAILED, error)
        except DISCORD_FAILURES as error:
            log.warning("%s for %s could not be posted: %r", self.command, self.member, error)
            await self.replies.tell_privately(WENT_WRONG)
            await self.settle(Outcome.FAILED, error)
        except TimeoutError:
            await self.replies.tell_privately(TOOK_TOO_LONG)
            await self.settle(Outcome.CANCELLED)
        except asyncio.CancelledError:
            await self.replies.tell_privately(CANCELLED)
            await self.settle(Outcome.CANCELLED)
            raise
        except Exception as error:
            log.exception("%s for %s failed unexpectedly", self.command, self.member)
            await self.replies.tell_privately(WENT_WRONG)
            await self.settle(Outcome.FAILED, error)
        finally:
            lease.close()  # the room kept for the image too


class SuggestionButton(
    discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]], template=SUGGESTION_ID
):
    """Imagine this: /imagine with a saved suggestion (what it does is in :class:`TextFeatures`)."""

    def __init__(self, key: int, *, label: str = IMAGINE_THIS) -> None:
        super().__init__(
            discord.ui.Button(
                style=discord.ButtonStyle.primary,
                emoji="🎨",
                label=label,
                custom_id=f"describe:imagine:{key}",
            )
        )
        self.key = key

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction,
        item: discord.ui.Item[Any],
        match: re.Match[str],
        /,
    ) -> SuggestionButton:
        return cls(int(match["key"]), label=getattr(item, "label", None) or IMAGINE_THIS)

    async def callback(self, interaction: discord.Interaction) -> None:
        features = text_features_of(interaction.client)
        try:
            if features is None:
                await Replies(interaction).answer(RESTARTING)
            else:
                await features.imagine_this(interaction, self.key)
        except Exception:
            log.exception("an Imagine this button failed")
            await Replies(interaction).answer(WENT_WRONG)


def text_features_of(client: discord.Client) -> TextFeatures | None:
    """The bot's :class:`TextFeatures` (its ``text_features``); None when they are not offered
    or the bot is shutting down."""
    return cast("TextFeatures | None", getattr(client, "text_features", None))


class TextFeatures:
    """Describe and enhance, built once by the bot; ``spec`` None where the text model is not
    offered (Imagine this buttons posted earlier still work: they need no text model)."""

    def __init__(
        self,
        admission: Admission,
        spec: TextModelSpec | None,
        saved: SavedRequests,
        *,
        pseudonyms: Pseudonymizer,
        default_model: str,
    ) -> None:
        self.admission = admission
        self.spec = spec
        self.saved = saved
        self.pseudonyms = pseudonyms
        self.default_model = default_model  # the offer's: what suggestions are saved with

    def _job(
        self,
        prepared: PreparedText,
        *,
        source: discord.Attachment | None = None,
        request: ImageRequest | None = None,
    ) -> Callable[[Replies, Admissible], TextJob]:
        def make(replies: Replies, admissible: Admissible) -> TextJob:
            ledger = self.admission.ledger
            # A tier's exemption from the rate limit holds only where a money budget bounds
            # what the request costs: a budget in images does not count it, and nothing else
            # would bound how many an exempt member runs.
            here = where(replies.interaction).guild_id
            bounded = ledger.has_budgets(here, admissible.budgets, money=True)
            return TextJob(
                replies,
                prepared,
                ledger,
                self.admission.metrics,
                budgets=admissible.budgets,
                exempt=admissible.exempt and bounded,
                moderation=admissible.moderation,
                features=self,
                source=source,
                request=request,
                spoiler=admissible.spoiler,
            )

        return make

    async def describe(self, interaction: discord.Interaction, image: discord.Attachment) -> None:
        """Four prompts for ``image``: checked for its declared size at once (nothing counts
        for a file refused unread), downloaded once the request is admitted."""

        def prepare(spec: TextModelSpec) -> PreparedText:
            check_file_size("image", image.size, MAX_INPUT_BYTES)
            return prepare_describe(spec, self.pseudonyms.for_user(interaction.user.id))

        await self._admit(interaction, prepare, "/describe", DESCRIBE, source=image)

    async def enhance(
        self, interaction: discord.Interaction, request: ImageRequest, *, private: bool = False
    ) -> None:
        """``request`` with its prompt enhanced first: the enhancement is admitted, and once
        answered the images are admitted with the new prompt (as already counted). ``private``:
        both answered to the member only."""

        def prepare(spec: TextModelSpec) -> PreparedText:
            return prepare_enhance(spec, request.prompt, request.user)

        await self._admit(
            interaction, prepare, "Enhance", ENHANCE, private=private, request=request
        )

    async def _admit(
        self,
        interaction: discord.Interaction,
        prepare: Callable[[TextModelSpec], PreparedText],
        command: str,
        kind: str,
        *,
        private: bool = False,
        **job: Any,
    ) -> None:
        """The request ``prepare`` makes, refused at once where it cannot be made (nothing
        counted), else admitted as a :class:`TextJob`."""
        if self.spec is None:
            await Replies(interaction).answer(NOT_OFFERED)
            return
        try:
            prepared = prepare(self.spec)
        except UnsupportedOption as refusal:
            self.admission.metrics.request("invalid", kind)
            await Replies(interaction).answer(refusal.user_message)
            return
        await self.admission.admit_text(
            interaction,
            self._job(prepared, **job),
            command=command,
            kind=kind,
            images=job.get("request"),
            private=private,
        )

    async def post_suggestions(self, job: TextJob, suggestions: Sequence[str]) -> None:
        """The suggestions in the reply, each saved for its Imagine this button (one that
        cannot be saved, or that the default model would refuse, is shown without one)."""
        interaction = job.interaction
        locale = interaction.locale
        view = discord.ui.View(timeout=None)
        lines = []
        # Saved together: the saved requests' writer takes them in one transaction.
        keys = await asyncio.gather(*(self._save(interaction, prompt) for prompt in suggestions))
        for number, (prompt, key) in enumerate(zip(suggestions, keys, strict=True), 1):
            lines.append(f"**{number}.** {as_written(prompt)}")
            if key is not None:
                label = IMAGINE_THIS_NUMBER.format(number=str(number))
                view.add_item(SuggestionButton(key, label=label.localized(locale)))
        embed = discord.Embed(description="\n\n".join(lines), colour=discord.Colour.blurple())
        described = DESCRIBED.format(member=job.replies.member_name)
        embed.set_author(name=described.localized(locale))
        if job.source is not None and not job.spoiler:  # a thumbnail cannot be blurred
            embed.set_thumbnail(url=job.source.url)
        embed.set_footer(text=FOOTER.format(model=job.prepared.model).localized(locale))
        await job.replies.post(content=None, embed=embed, files=[], view=view)

    async def _save(self, interaction: discord.Interaction, prompt: str) -> int | None:
        try:
            prepared = self.admission.images.prepare(
                ImageRequest(prompt=prompt, model=self.default_model)
            )
            return await self.saved.save(
                prepared,
                member_id=interaction.user.id,
                guild_id=interaction.guild_id,
                channel_id=interaction.channel_id,
            )
        except UnsupportedOption:
            return None
        except Exception as exc:
            log.error("could not save a suggestion for its button (%s)", type(exc).__name__)
            return None

    async def imagine_this(self, interaction: discord.Interaction, key: int) -> None:
        """Imagine this: /imagine from the presser with the saved suggestion, the server's
        default model."""
        replies = Replies(interaction)
        try:
            async with asyncio.timeout(LOAD_TIMEOUT):
                saved = await self.saved.load(key)
        except Exception as exc:
            log.error("could not read suggestion %s (%s)", key, type(exc).__name__)
            await replies.answer(UNREADABLE)
            return
        if saved is None or not belongs_here(saved, interaction):
            # A forged id may name any saved request: another server's, another member's DM
            # or private set, whose prompt the images would show.
            await replies.answer(GONE)
            return
        request = ImageRequest(
            prompt=saved.prompt,
            model=self.default_model,
            user=self.pseudonyms.for_user(interaction.user.id),
        )
        await self.admission.admit(interaction, request, default_model=True)


def first_image(message: discord.Message) -> discord.Attachment | None:
    """The first attachment of ``message`` that looks like an image (the bytes decide)."""
    images = image_attachments(message)
    return images[0] if images else None
