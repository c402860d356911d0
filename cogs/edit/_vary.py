"""The Vary buttons under posted images: a variation of the chosen image, made by an edit with
the prompt, model, size and quality the images were made with.

The buttons themselves belong to /imagine (``cogs.imagine._buttons``); they appear once their
``vary`` hook is set, which the /edit cog does where an offered model edits images. A press is a
new request from the presser, like any other button's: their pseudonym, their limits and budgets,
the server's settings, and every refusal or failure told to them privately.
"""

from __future__ import annotations

import discord

from bot.images import ImageRequest
from bot.requests.admission import Admission
from bot.requests.editing import edit_models, run_edit
from bot.requests.saved_requests import SavedRequest
from bot.services import Services
from cogs.imagine._buttons import VaryHandler

from ._command import default_edit_model


def build_vary_button(services: Services, admission: Admission) -> VaryHandler | None:
    """What a Vary button does; None where no offered model edits (no Vary buttons then)."""
    editors = edit_models(admission, services.offer.models)
    if not editors:
        return None
    default = default_edit_model(services, editors)

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
            user=services.pseudonyms.for_user(interaction.user.id),
        )
        await run_edit(
            admission, interaction, request, [image], preferred=saved.model, command="Vary"
        )

    return vary
