"""The images an edit starts from, taken in the order that costs the bot least
(:class:`EditInputs`): every check that needs no file first, then, once the admission has
counted the request and kept room for them, the download (at most each file's declared size,
which Discord's CDN serves) and the engine's reading of their bytes. See
:mod:`bot.requests.editing` for where it sits in an edit's life."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import aiohttp
import discord

from bot.i18n import _
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

log = logging.getLogger(__name__)

# An image to start from: a Discord attachment (downloaded once the request passes the checks
# that need no download), or bytes already at hand (the Vary button reads its own message).
Source = discord.Attachment | bytes
# Seconds to download one attachment from Discord's CDN (a stuck download must not hold a job
# past Discord's 15 minutes; the engine's own timeouts start once the request is sent).
DOWNLOAD_TIMEOUT = 60.0
NOT_DOWNLOADED = _("{input} could not be downloaded from Discord. Please try again.")


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
            NOT_DOWNLOADED.format(input=describe_input(field, first=True)),
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
