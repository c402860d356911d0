"""Edits for an interaction: images from Discord (attachments, or bytes already at hand) made
into an edit and admitted like any generation. /edit, the Vary image menu and the Vary button
all come through :func:`run_edit`.

Before anything is downloaded, the model must edit, the number of images and the mask must be
what it takes, and each attachment's size as Discord declares it must be within the model's
limit: a 500 MB file is refused unread. Then the files are downloaded (at most their declared
size, which Discord's CDN serves) and read from their bytes by the engine.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import aiohttp
import discord

from bot.admission import Admission
from bot.images import EditRequest, ImageRequest, PreparedRequest, UnsupportedOption
from bot.images.edits import (
    check_counts,
    check_file_size,
    describe_input,
    input_fields,
    max_input_bytes,
)

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
    images = admission.images

    async def prepare(request: ImageRequest) -> PreparedRequest:
        spec = images.edit_spec(request.model)
        check_counts(spec, len(sources), mask is not None)
        fields = input_fields(len(sources))
        named = list(zip(fields, sources, strict=True))
        if mask is not None:
            named.append(("mask", mask))
        for field, source in named:
            check_file_size(field, _declared_size(source), max_input_bytes(spec, field))
        downloaded = await asyncio.gather(*(_download(source, field) for field, source in named))
        inputs = tuple(downloaded[: len(sources)])
        mask_bytes = downloaded[len(sources)] if mask is not None else None
        return await images.prepare_edit(
            EditRequest(request, inputs, mask=mask_bytes, input_fidelity=input_fidelity)
        )

    await admission.admit_checked_later(
        interaction, request, prepare, picked=picked, command=command, preferred=preferred
    )


def edit_models(admission: Admission, offered: Sequence[str]) -> list[str]:
    """The offered models that edit images, in the offer's order."""
    catalog = admission.images.catalog
    return [name for name in offered if name in catalog and catalog[name].edits]


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif")


def image_attachments(message: discord.Message) -> list[discord.Attachment]:
    """The attachments of ``message`` that look like images (a hint only: the bytes decide)."""
    return [
        attachment
        for attachment in message.attachments
        if (attachment.content_type or "").startswith("image/")
        or attachment.filename.lower().endswith(IMAGE_SUFFIXES)
    ]
