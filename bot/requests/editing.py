"""Edits for an interaction: images from Discord (attachments, or bytes already at hand) made
into an edit and admitted like any generation. /edit, the Vary image menu and the Vary button
all come through :func:`run_edit`.

What an edit costs the bot is a download: it is taken in the order that costs least
(:class:`EditInputs`). First, every check that needs no file, before the request counts against
anything: the model edits, the number of images and the mask are what it takes, each
attachment's size as Discord declares it is within the model's limit (a 500 MB file is refused
unread), and the options are the model's. Then the admission counts it against the member's
limits and checks the budgets; then the request takes room for its declared bytes outside the
processing slots, or a slot (:meth:`bot.images.Lease.keep`), so that downloaded inputs are
bounded by the slots however many edits arrive; only then are the files downloaded (at most
their declared size, which Discord's CDN serves) and read from their bytes by the engine. From
the first download on, the request stays counted against the member's limits whatever follows
(refused for its content, the download failing): a limit of one an hour is one download an hour.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import aiohttp
import discord

from bot.images import (
    EditRequest,
    ImageClient,
    ImageRequest,
    PreparedRequest,
    UnsupportedOption,
)
from bot.images.edits import (
    check_counts,
    check_file_size,
    describe_input,
    input_fields,
    max_input_bytes,
)
from bot.requests.admission import Admission
from bot.requests.buttons import VaryHandler
from bot.requests.saved_requests import SavedRequest
from bot.store.pseudonym import Pseudonymizer

log = logging.getLogger(__name__)

# An image to start from: a Discord attachment (downloaded once the request passes the checks
# that need no download), or bytes already at hand (the Vary button reads its own message).
Source = discord.Attachment | bytes
# Seconds to download one attachment from Discord's CDN (a stuck download must not hold a job
# past Discord's 15 minutes; the engine's own timeouts start once the request is sent).
DOWNLOAD_TIMEOUT = 60.0
# What a variation asks for when there is no prompt to reuse.
VARY_PROMPT = "A variation of this image: the same subject, composition and style, made anew."


def _declared_size(source: Source) -> int:
    return source.size if isinstance(source, discord.Attachment) else len(source)


async def _download(source: Source, field: str) -> bytes:
    if isinstance(source, bytes):
        return source
    try:
        async with asyncio.timeout(DOWNLOAD_TIMEOUT):
            return await source.read()
    except (discord.HTTPException, aiohttp.ClientError, OSError, TimeoutError) as exc:
        log.warning("could not download an attachment for an edit: %r", exc)
        raise UnsupportedOption(
            field,
            f"{describe_input(field).capitalize()} could not be downloaded from Discord. "
            "Please try again.",
        ) from None


class EditInputs:
    """The images an edit starts from, taken in the order that costs the bot least:
    :meth:`check` what needs no file, then :meth:`download` (once room is kept for them)."""

    def __init__(
        self,
        images: ImageClient,
        sources: Sequence[Source],
        *,
        mask: Source | None = None,
        input_fidelity: str | None = None,
    ) -> None:
        self.images = images
        self.sources = list(sources)
        self.mask = mask
        self.input_fidelity = input_fidelity
        named = list(zip(input_fields(len(self.sources)), self.sources, strict=True))
        self.named: list[tuple[str, Source]] = named + (
            [("mask", mask)] if mask is not None else []
        )
        self.request: ImageRequest | None = None  # as checked
        self.downloading = False  # set once a download starts: the request then stays counted

    @property
    def declared_bytes(self) -> int:
        """The bytes the downloads will bring, as Discord declares them."""
        return sum(_declared_size(source) for _, source in self.named)

    def check(self, request: ImageRequest) -> PreparedRequest:
        """Everything that needs no file (the model, counts, declared sizes, options): the
        request prepared with its inputs declared only, or :class:`UnsupportedOption`."""
        spec = self.images.edit_spec(request.model)
        check_counts(spec, len(self.sources), self.mask is not None)
        for field, source in self.named:
            check_file_size(field, _declared_size(source), max_input_bytes(spec, field))
        checked = self.images.check_edit(
            request,
            images=len(self.sources),
            has_mask=self.mask is not None,
            input_fidelity=self.input_fidelity,
        )
        self.request = request
        return checked

    async def download(self) -> PreparedRequest:
        """Download the files and read them from their bytes: the request ready to send, or
        :class:`UnsupportedOption`. After :meth:`check`, and with room kept for them."""
        assert self.request is not None, "checked first"
        self.downloading = True
        named = self.named
        downloaded = await asyncio.gather(*(_download(source, field) for field, source in named))
        inputs = tuple(downloaded[: len(self.sources)])
        mask_bytes = downloaded[len(self.sources)] if self.mask is not None else None
        edit = EditRequest(
            self.request, inputs, mask=mask_bytes, input_fidelity=self.input_fidelity
        )
        return await self.images.prepare_edit(edit)


async def run_edit(
    admission: Admission,
    interaction: discord.Interaction,
    request: ImageRequest,
    sources: Sequence[Source],
    *,
    mask: Source | None = None,
    input_fidelity: str | None = None,
    picked: str | None = None,
    command: str = "/edit",
    preferred: str | None = None,
) -> None:
    """Admit an edit of ``sources`` (the first is edited, the others are references) with
    ``request``'s prompt and options, as a Generation for ``interaction``: the server's
    settings applied, checked, counted against the member's limits and budgets, acknowledged,
    run and posted like /imagine, every refusal a private sentence. ``request.user`` is the
    member's pseudonym; ``picked`` the model the member chose (None: ``request.model`` is only
    the command's default, and the server's default model stands in for it where it edits);
    ``preferred`` a model used before the server's default where the server allows it (Vary:
    the images' own model; ``request``'s size and quality are its own, dropped if it is not)."""
    inputs = EditInputs(admission.images, sources, mask=mask, input_fidelity=input_fidelity)
    await admission.admit_checked_later(
        interaction, request, inputs, picked=picked, command=command, preferred=preferred
    )


def edit_models(admission: Admission, offered: Sequence[str]) -> list[str]:
    """The offered models that edit images, in the offer's order."""
    catalog = admission.images.catalog
    return [name for name in offered if name in catalog and catalog[name].edits]


def default_edit_model(offer_default: str, editors: list[str]) -> str:
    """The offer's default where it edits, else the first offered model that does."""
    return offer_default if offer_default in editors else editors[0]


def vary_handler(
    admission: Admission,
    *,
    offered: Sequence[str],
    offer_default: str,
    pseudonyms: Pseudonymizer,
) -> VaryHandler | None:
    """What a Vary button under posted images does: a variation of the chosen image, made by an
    edit with the prompt, model, size and quality the images were made with. A press is a new
    request from the presser, like any other button's: their pseudonym, their limits and
    budgets, the server's settings, every refusal or failure told to them privately. None where
    no offered model edits (no Vary buttons then)."""
    editors = edit_models(admission, offered)
    if not editors:
        return None
    default = default_edit_model(offer_default, editors)

    async def vary(
        interaction: discord.Interaction, saved: SavedRequest, image: discord.Attachment
    ) -> None:
        # The model the images were made with, with their size and quality, where it edits and
        # this server still allows it; else what /edit takes when no model is picked (the
        # server's default where it edits, ...), and the size and quality that model chooses.
        # A model the server no longer allows is no refusal: the press asked for no model.
        request = ImageRequest(
            prompt=saved.prompt,
            model=default,
            size=saved.size,
            quality=saved.quality,
            user=pseudonyms.for_user(interaction.user.id),
        )
        await run_edit(
            admission, interaction, request, [image], preferred=saved.model, command="Vary"
        )

    return vary


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif")


def image_attachments(message: discord.Message) -> list[discord.Attachment]:
    """The attachments of ``message`` that look like images (a hint only: the bytes decide)."""
    return [
        attachment
        for attachment in message.attachments
        if (attachment.content_type or "").startswith("image/")
        or attachment.filename.lower().endswith(IMAGE_SUFFIXES)
    ]
