"""/imagine: generate images from a prompt and post them in the channel.

A request travels one way: options -> validation (ephemeral refusal, nothing paid) -> per-user
limit -> defer -> queue for a generation slot (position shown) -> engine -> uploads fitted to the
server's limit -> reply. Every path ends with a message to the user.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import aiohttp
import discord
from discord import app_commands
from discord.ext import commands

from bot.delivery import ImageTooLarge, Upload, pack, prepare_uploads
from bot.images import (
    MAX_FRAMES,
    MIN_FRAMES,
    GenerationResult,
    ImageError,
    ImageRequest,
    ModelSpec,
    PreparedRequest,
    UnsupportedOption,
    parse_size,
)
from bot.queue import GenerationQueue, Ticket
from bot.ratelimit import UserRateLimiter

if TYPE_CHECKING:
    from bot.app import ImagineBot

log = logging.getLogger(__name__)

# Discord lets a bot use an interaction's token for 15 minutes; stop with time to say so.
TOKEN_LIFETIME = dt.timedelta(minutes=15)
TOKEN_MARGIN = dt.timedelta(seconds=45)
PROMPT_MAX = 6000  # Discord's longest string option
POSITION_UPDATE_INTERVAL = 1.5  # seconds between edits of a queued request's position
DESCRIPTION_MAX = 3000  # of Discord's 4096, leaving room in the 6000-character embed total
FIELD_MAX = 1024
RESTARTING = "The bot is restarting. Please try again in a minute."
CANCELLED = "The bot is restarting, so your request was cancelled. Sorry!"
LIMITER_TIMEOUT = 1.5  # seconds; Discord wants an answer within 3
# What talking to Discord can raise besides its own errors: discord.py retries only resets.
DISCORD_FAILURES = (discord.HTTPException, aiohttp.ClientError, OSError)
ALREADY_ACKNOWLEDGED = 40060
UPLOAD_FAILED = "Discord did not accept the images. Please try again."
UPLOAD_TOO_LARGE = "The images are too large to upload to this server."


CHOICE_MAX = 100  # Discord's longest choice name
FRAME_MS_MAX = 10_000  # what a member may pick; the API would take longer frames
FORMAT_LABELS = {
    "png": "png",
    "jpeg": "jpeg",
    "webp": "webp",
    "gif": "gif (animated)",
    "svg": "svg (vector, with a png preview)",
}


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _model_label(spec: ModelSpec) -> str:
    return spec.name if spec.is_live else f"{spec.name} (shut down on OpenAI; this service has it)"


def _orientation(size: str) -> str:
    dims = parse_size(size)
    if dims is None:
        return "the model decides" if size == "auto" else ""
    width, height = dims
    return "square" if width == height else ("landscape" if width > height else "portrait")


class Imagine(commands.Cog):
    """The /imagine command and the jobs it starts."""

    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot
        settings = bot.settings
        self.settings = settings
        self.limiter = UserRateLimiter(settings.user_rate_limit, settings.rate_limit_storage_uri)
        self.queue = GenerationQueue(settings.max_concurrent_generations)
        self.jobs: set[asyncio.Task[None]] = set()
        self._posted: set[int] = set()  # interactions whose reply already carries images
        self.accepting = True
        self.command = build_command(self)

    async def cog_load(self) -> None:
        self.bot.tree.add_command(self.command)

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.command.name)

    # -- choices and autocomplete ------------------------------------------------------------

    @property
    def default_model(self) -> str:
        return self.bot.offer.default

    def spec_for(self, model: str | None) -> ModelSpec:
        catalog = self.settings.catalog
        return catalog.get(model or "", catalog[self.default_model])

    def size_choices(self, model: str | None, typed: str) -> list[app_commands.Choice[str]]:
        spec = self.spec_for(model)
        typed = typed.strip().lower()
        sizes = [size for size in spec.sizes if typed in size]
        if typed and typed not in sizes and spec.free_size and spec.accepts_size(typed):
            sizes.insert(0, typed)
        choices = []
        for size in sizes[:25]:
            label = f"{size} ({_orientation(size)})" if _orientation(size) else size
            if size == spec.default_size:
                label += ", default"
            choices.append(app_commands.Choice(name=label, value=size))
        return choices

    def quality_choices(self, model: str | None, typed: str) -> list[app_commands.Choice[str]]:
        spec = self.spec_for(model)
        return [
            app_commands.Choice(
                name=f"{quality} (default)" if quality == spec.default_quality else quality,
                value=quality,
            )
            for quality in spec.qualities
            if typed.strip().lower() in quality
        ][:25]

    # -- the command ---------------------------------------------------------------------------

    async def imagine(self, interaction: discord.Interaction, request: ImageRequest) -> None:
        if not self.accepting:
            await self._answer(interaction, RESTARTING)
            return
        cap = self.settings.max_images_per_request
        if request.count > cap:
            await self._answer(interaction, f"This server allows at most {cap} images per request.")
            return
        try:
            prepared = self.bot.images.prepare(request)
        except UnsupportedOption as refusal:
            await self._answer(interaction, refusal.user_message)
            return
        # Tracked from here, before anything is awaited, so that a shutdown cannot miss it.
        job = asyncio.create_task(self._admit(interaction, prepared), name="imagine-job")
        self.jobs.add(job)
        job.add_done_callback(self._job_done)

    def _job_done(self, job: asyncio.Task[None]) -> None:
        self.jobs.discard(job)
        if not job.cancelled() and job.exception() is not None:
            log.error("an /imagine job failed", exc_info=job.exception())

    async def _admit(self, interaction: discord.Interaction, prepared: PreparedRequest) -> None:
        """Count the request against the member's limits, then acknowledge it and run it."""
        try:
            if not await self._within_limits(interaction):
                return
            await interaction.response.defer(thinking=True)
        except asyncio.CancelledError:
            if interaction.response.is_done() or not await self._answer(interaction, RESTARTING):
                # Acknowledged already (perhaps by a defer whose answer never came back).
                await self._tell_privately(interaction, CANCELLED)
            raise
        except DISCORD_FAILURES as exc:
            log.warning("could not acknowledge an /imagine in time: %r", exc)
            return
        try:
            await self._job(interaction, prepared)
        finally:
            self._posted.discard(interaction.id)

    async def _within_limits(self, interaction: discord.Interaction) -> bool:
        """Count the request; when a limit refuses it, or the store does not answer, say so."""
        try:
            # A shared store (Redis) that hangs must not outlast Discord's 3 seconds to answer.
            async with asyncio.timeout(LIMITER_TIMEOUT):
                refusal = await self.limiter.acquire(str(interaction.user.id))
        except Exception:
            log.exception("the rate-limit store did not answer")
            await self._answer(
                interaction, "The bot cannot check usage limits right now. Please try again soon."
            )
            return False
        if refusal is None:
            return True
        again = discord.utils.format_dt(dt.datetime.fromtimestamp(refusal.reset_at, dt.UTC), "R")
        await self._answer(
            interaction,
            f"You have reached this server's limit of {refusal.describe()}. "
            f"You can try again {again}.",
        )
        return False

    async def _answer(self, interaction: discord.Interaction, sentence: str) -> bool:
        """A private answer before the interaction was acknowledged; False if it did not go."""
        try:
            await interaction.response.send_message(sentence, ephemeral=True)
        except discord.InteractionResponded:
            return False
        except DISCORD_FAILURES as exc:
            if getattr(exc, "code", None) != ALREADY_ACKNOWLEDGED:
                log.warning("could not answer user %s: %r", interaction.user.id, exc)
            return False
        return True

    async def _job(self, interaction: discord.Interaction, prepared: PreparedRequest) -> None:
        expires = interaction.created_at + TOKEN_LIFETIME - TOKEN_MARGIN
        budget = max((expires - discord.utils.utcnow()).total_seconds(), 1.0)
        try:
            async with asyncio.timeout(budget):
                result = await self._generate(interaction, prepared)
                await self._deliver(interaction, result)
        except ImageError as error:
            log.warning(
                "/imagine for user %s failed: %s: %s",
                interaction.user.id,
                type(error).__name__,
                error,
            )
            await self._tell_privately(interaction, error.user_message)
        except TimeoutError:
            log.warning("/imagine for user %s outlived its interaction token", interaction.user.id)
            await self._tell_privately(
                interaction,
                "Your request took too long and was cancelled before Discord stopped accepting "
                "its reply. Please try again.",
            )
        except asyncio.CancelledError:
            await self._tell_privately(interaction, CANCELLED)
            raise
        except Exception:
            log.exception("/imagine for user %s failed unexpectedly", interaction.user.id)
            await self._tell_privately(
                interaction, "Something went wrong while making your images. Please try again."
            )

    async def _generate(
        self, interaction: discord.Interaction, prepared: PreparedRequest
    ) -> GenerationResult:
        watchers: list[asyncio.Task[None]] = []

        def show_position(ticket: Ticket) -> None:
            watchers.append(asyncio.create_task(self._show_position(interaction, ticket)))

        try:
            async with self.queue.slot(on_queued=show_position):
                if watchers:
                    watchers[0].cancel()
                    await self._edit_quietly(interaction, content="🎨 Generating…")
                return await self.bot.images.generate(prepared)
        finally:
            for watcher in watchers:
                watcher.cancel()

    async def _show_position(self, interaction: discord.Interaction, ticket: Ticket) -> None:
        # Polled rather than pushed: one edit per interval at most, whatever the churn ahead.
        shown = 0
        while ticket.position:
            if ticket.position != shown:
                shown = ticket.position
                await self._edit_quietly(
                    interaction,
                    content=f"⏳ Waiting for a free slot: you are number {shown} in the queue.",
                )
            await asyncio.sleep(POSITION_UPDATE_INTERVAL)

    async def _deliver(self, interaction: discord.Interaction, result: GenerationResult) -> None:
        embed = self._embed(interaction, result)
        limit = interaction.filesize_limit
        try:
            await self._upload(interaction, result, embed, limit)
        except discord.HTTPException as exc:
            if exc.status != 413:
                raise
            # The server's real limit is below what the interaction reported: try once, smaller.
            log.warning("Discord refused an upload as too large; retrying at half the limit")
            try:
                await self._upload(interaction, result, embed, limit // 2)
            except discord.HTTPException as again:
                if again.status != 413:
                    raise
                raise ImageError(str(again), user_message=UPLOAD_TOO_LARGE) from None

    async def _upload(
        self,
        interaction: discord.Interaction,
        result: GenerationResult,
        embed: discord.Embed,
        limit: int,
    ) -> None:
        try:
            uploads = await prepare_uploads(result.images, limit)
        except ImageTooLarge as exc:
            raise ImageError(str(exc), user_message=UPLOAD_TOO_LARGE) from None
        first, *rest = pack(uploads, limit)
        notes = []
        if result.missing:
            asked = result.request.count
            notes.append(
                f"{asked - result.missing} of the {asked} images came back from the image service."
            )
        if any(upload.reencoded for upload in uploads):
            notes.append("Some images were re-encoded to fit this server's upload limit.")
        if any(upload.preview_failed for upload in uploads):
            notes.append("(No preview: the SVG could not be rendered.)")
        note = " ".join(notes) or None
        try:
            await interaction.edit_original_response(
                content=note, embed=embed, attachments=self._files(first)
            )
        except discord.HTTPException as exc:
            if exc.status == 413:
                raise
            raise ImageError(
                f"uploading to Discord failed: {exc}", user_message=UPLOAD_FAILED
            ) from None
        self._posted.add(interaction.id)
        for part in rest:
            try:
                await interaction.followup.send(files=self._files(part))
            except discord.HTTPException as exc:
                # The images already posted stay; _tell_privately says the rest are missing.
                raise ImageError(
                    f"a follow-up upload failed: {exc}", user_message=UPLOAD_FAILED
                ) from None

    @staticmethod
    def _files(uploads: list[Upload]) -> list[discord.File]:
        return [
            discord.File(
                io.BytesIO(upload.data), filename=upload.filename, description=upload.description
            )
            for upload in uploads
        ]

    def _embed(self, interaction: discord.Interaction, result: GenerationResult) -> discord.Embed:
        request = result.request
        embed = discord.Embed(
            description=clip(request.prompt, DESCRIPTION_MAX),
            colour=discord.Colour.blurple(),
            timestamp=discord.utils.utcnow(),
        )
        user = interaction.user
        embed.set_author(name=clip(f"{user.display_name} imagined", 256))
        embed.add_field(name="Model", value=result.model)
        embed.add_field(name="Size", value=request.size)
        embed.add_field(name="Quality", value=request.quality)
        embed.add_field(name="Images", value=str(len(result.images)))
        embed.add_field(name="Time", value=f"{result.elapsed:.1f} s")
        options = ", ".join(f"{name} {value}" for name, value in request.options.items())
        if options:
            embed.add_field(name="Options", value=clip(options, FIELD_MAX))
        if result.revised_prompt:
            embed.add_field(
                name="Revised prompt", value=clip(result.revised_prompt, FIELD_MAX), inline=False
            )
        return embed

    # -- replies that must not fail the job ------------------------------------------------------

    async def _edit_quietly(self, interaction: discord.Interaction, **fields: Any) -> None:
        try:
            await interaction.edit_original_response(**fields)
        except DISCORD_FAILURES as exc:
            log.warning("could not update an /imagine message: %r", exc)

    async def _tell_privately(self, interaction: discord.Interaction, sentence: str) -> None:
        """Replace the public "thinking" message with a sentence only the user sees.

        While the deferred reply is still "thinking", Discord turns the first follow-up into that
        public reply, whatever its flags; so the reply is settled first, then the private
        sentence follows as a message of its own, then the public reply goes. Where images were
        already posted, they stay, and the sentence follows them.
        """
        if interaction.id in self._posted:
            try:
                await interaction.followup.send(
                    f"Not all of your images could be posted. {sentence}", ephemeral=True
                )
            except DISCORD_FAILURES as exc:
                log.warning("could not tell user %s privately: %r", interaction.user.id, exc)
            return
        steps: list[Callable[[], Awaitable[object]]] = [
            lambda: interaction.edit_original_response(
                content="⚠️ This request could not be completed.", embed=None, attachments=[]
            ),
            lambda: interaction.followup.send(sentence, ephemeral=True),
            interaction.delete_original_response,
        ]
        try:
            for step in steps:
                await step()
        except DISCORD_FAILURES as exc:
            log.warning("could not tell user %s privately: %r", interaction.user.id, exc)
            await self._edit_quietly(interaction, content=sentence, embed=None, attachments=[])

    # -- shutdown ----------------------------------------------------------------------------------

    async def drain(self, grace: float) -> None:
        """Refuse new requests, let those in flight finish within ``grace``, cancel the rest."""
        self.accepting = False  # checked before a job is created, with no await in between
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
            await asyncio.wait(unfinished, timeout=10)


def build_command(cog: Imagine) -> app_commands.Command[Any, ..., None]:
    """/imagine, with choices taken from the configuration and the model catalog."""
    settings = cog.settings
    offered = [settings.catalog[name] for name in cog.bot.offer.models]
    model_choices = [
        app_commands.Choice(name=clip(_model_label(spec), CHOICE_MAX), value=spec.name)
        for spec in offered
    ]
    # Formats any offered model takes, in the catalog's order (the model decides what it accepts).
    formats = list(dict.fromkeys(fmt for spec in offered for fmt in spec.output_formats))

    def fixed(*values: str) -> list[app_commands.Choice[str]]:
        return [
            app_commands.Choice(name=FORMAT_LABELS.get(value, value), value=value)
            for value in values
        ]

    async def size_autocomplete(
        interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        return cog.size_choices(getattr(interaction.namespace, "model", None), current)

    async def quality_autocomplete(
        interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        return cog.quality_choices(getattr(interaction.namespace, "model", None), current)

    @app_commands.command(name="imagine", description="Generate images from a text prompt")
    @app_commands.describe(
        prompt="What to draw",
        model=f"The image model (default {cog.default_model})",
        size="Width x height; the choices follow the model",
        quality="Rendering quality; the choices follow the model",
        count=f"How many images (at most {settings.max_images_per_request})",
        style="dall-e-3 only: vivid or natural",
        background="GPT image models only: transparent needs png or webp",
        format="The file format: gif is animated, svg is a vector drawing (newer models)",
        complexity="Newer models: how much planning goes into the picture, apart from quality",
        frames="Animated GIF only: how many frames (2-16, default 9)",
        frame_ms="Animated GIF only: how long each frame shows, in milliseconds (default 200)",
    )
    @app_commands.choices(
        model=model_choices,
        style=fixed("vivid", "natural"),
        background=fixed("auto", "opaque", "transparent"),
        format=fixed(*(formats or ["png"])),
        complexity=fixed("low", "medium", "high"),
    )
    @app_commands.autocomplete(size=size_autocomplete, quality=quality_autocomplete)
    async def imagine(
        interaction: discord.Interaction,
        prompt: app_commands.Range[str, 1, PROMPT_MAX],
        model: str | None = None,
        size: str | None = None,
        quality: str | None = None,
        count: app_commands.Range[int, 1, 10] = 1,
        style: str | None = None,
        background: str | None = None,
        format: str | None = None,
        complexity: str | None = None,
        frames: app_commands.Range[int, MIN_FRAMES, MAX_FRAMES] | None = None,
        frame_ms: app_commands.Range[int, 20, FRAME_MS_MAX] | None = None,
    ) -> None:
        request = ImageRequest(
            prompt=prompt,
            model=model or cog.default_model,
            size=size,
            quality=quality,
            count=count,
            user=cog.bot.pseudonyms.for_user(interaction.user.id),
            style=style,
            background=background,
            output_format=format,
            complexity=complexity,
            frame_count=frames,
            frame_duration_ms=frame_ms,
        )
        await cog.imagine(interaction, request)

    return imagine


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(Imagine(bot))
