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

from collections.abc import Sequence

import discord

from bot.images import ImageRequest
from bot.requests.admission import Admission
from bot.requests.buttons import VaryHandler, made_privately
from bot.requests.edit_inputs import EditInputs, Source
from bot.requests.saved_requests import SavedRequest
from bot.store.pseudonym import Pseudonymizer

# What a variation asks for when there is no prompt to reuse.
VARY_PROMPT = "A variation of this image: the same subject, composition and style, made anew."


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
    private: bool = False,
) -> None:
    """Admit an edit of ``sources`` (the first is edited, the others are references) with
    ``request``'s prompt and options, as a Generation for ``interaction``: the server's
    settings applied, checked, counted against the member's limits and budgets, acknowledged,
    run and posted like /imagine, every refusal a private sentence. ``request.user`` is the
    member's pseudonym; ``picked`` the model the member chose (None: ``request.model`` is only
    the command's default, and the server's default model stands in for it where it edits);
    ``preferred`` a model used before the server's default where the server allows it (Vary:
    the images' own model; ``request``'s size and quality are its own, dropped if it is not);
    ``private``: answered to the member only."""
    inputs = EditInputs(admission.images, sources, mask=mask, input_fidelity=input_fidelity)
    await admission.admit_checked_later(
        interaction,
        request,
        inputs,
        picked=picked,
        command=command,
        preferred=preferred,
        private=private,
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
            admission,
            interaction,
            request,
            [image],
            preferred=saved.model,
            command="Vary",
            private=made_privately(interaction, saved),
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
