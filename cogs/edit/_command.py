"""The /edit definition and the Vary image message menu. They build an :class:`ImageRequest`
and hand it, with the images to start from, to :func:`bot.editing.run_edit`; nothing else."""

from __future__ import annotations

from typing import Any

import discord
from discord import app_commands

from bot.admission import Admission
from bot.editing import VARY_PROMPT, edit_models, image_attachments, run_edit
from bot.images import ImageRequest
from bot.services import Services
from cogs.imagine._command import (
    PROMPT_MAX,
    autocompletes_following_the_model,
    choices_of_models,
)

NO_IMAGE = "This message has no image to vary."


def _default_model(services: Services, editors: list[str]) -> str:
    """The offer's default where it edits, else the first offered model that does."""
    default = services.offer.default
    return default if default in editors else editors[0]


def build_edit_command(
    services: Services, admission: Admission
) -> app_commands.Command[Any, ..., None] | None:
    """/edit, with the offered models that edit; None where no offered model does."""
    settings, catalog = services.settings, services.settings.catalog
    editors = edit_models(admission, services.offer.models)
    if not editors:
        return None
    default = _default_model(services, editors)
    size_autocomplete, quality_autocomplete = autocompletes_following_the_model(catalog, default)

    @app_commands.command(name="edit", description="Edit an image, or make one from several")
    @app_commands.describe(
        image="The image to edit (PNG, JPEG or WebP)",
        prompt="What to change, or what to make from the images",
        mask="A PNG the image's size; its transparent areas are where the image changes",
        image2="Another image to draw from (models that take several)",
        image3="Another image to draw from (models that take several)",
        image4="Another image to draw from (models that take several)",
        model=f"The image model (default {default})",
        size="Width x height; the choices follow the model",
        quality="Rendering quality; the choices follow the model",
        count=f"How many images (at most {settings.max_images_per_request})",
        fidelity="How closely to keep the input's features, faces above all (some models)",
    )
    @app_commands.choices(
        model=choices_of_models([catalog[name] for name in editors]),
        fidelity=[app_commands.Choice(name=value, value=value) for value in ("high", "low")],
    )
    @app_commands.autocomplete(size=size_autocomplete, quality=quality_autocomplete)
    async def edit_command(
        interaction: discord.Interaction,
        image: discord.Attachment,
        prompt: app_commands.Range[str, 1, PROMPT_MAX],
        mask: discord.Attachment | None = None,
        image2: discord.Attachment | None = None,
        image3: discord.Attachment | None = None,
        image4: discord.Attachment | None = None,
        model: str | None = None,
        size: str | None = None,
        quality: str | None = None,
        count: app_commands.Range[int, 1, 10] = 1,
        fidelity: str | None = None,
    ) -> None:
        request = ImageRequest(
            prompt=prompt,
            model=model or default,
            size=size,
            quality=quality,
            count=count,
            user=services.pseudonyms.for_user(interaction.user.id),
        )
        references = [extra for extra in (image2, image3, image4) if extra is not None]
        sources = [image, *references]
        await run_edit(admission, interaction, request, sources, mask=mask, input_fidelity=fidelity)

    return edit_command


def build_vary_menu(services: Services, admission: Admission) -> app_commands.ContextMenu | None:
    """Vary image: a variation of the first image of any message, with the default edit model.
    The prompt is the message's own where the bot posted it (its embed holds the prompt), else a
    request for a variation. None where no offered model edits."""
    editors = edit_models(admission, services.offer.models)
    if not editors:
        return None
    model = _default_model(services, editors)

    async def vary_image(interaction: discord.Interaction, message: discord.Message) -> None:
        attachments = image_attachments(message)
        if not attachments:
            await interaction.response.send_message(NO_IMAGE, ephemeral=True)
            return
        prompt = VARY_PROMPT
        me = interaction.client.user
        if me is not None and message.author.id == me.id and message.embeds:
            prompt = message.embeds[0].description or VARY_PROMPT
        request = ImageRequest(
            prompt=prompt,
            model=model,
            user=services.pseudonyms.for_user(interaction.user.id),
        )
        # The first image: a message of several is varied from its first, which is what the
        # member sees on top; the Vary button chooses among a result's images.
        await run_edit(admission, interaction, request, attachments[:1])

    return app_commands.ContextMenu(name="Vary image", callback=vary_image)
