"""The /imagine definition: options, their choices from the catalog, and the autocomplete that
follows the chosen model. It builds an :class:`ImageRequest` and hands it on; nothing else."""

from __future__ import annotations

from typing import Any

import discord
from discord import app_commands

from bot.i18n.commands import command_text
from bot.images import MAX_FRAMES, MIN_FRAMES, ImageRequest
from bot.requests.buttons import Admit
from bot.requests.describe import NOT_OFFERED
from bot.requests.options import (
    PROMPT_MAX,
    SHARED_OPTION_NAMES,
    autocompletes_following_the_model,
    choices_of_models,
)
from bot.services import Services

FRAME_MS_MAX = 10_000  # what a member may pick; the API would take longer frames
FORMAT_LABELS: dict[str, str | app_commands.locale_str] = {
    "png": "png",
    "jpeg": "jpeg",
    "webp": "webp",
    "gif": command_text("gif (animated)"),
    "svg": command_text("svg (vector, with a png preview)"),
}

# The choices' labels a member reads; their values are the API's words.
CHOICE_LABELS = {
    "vivid": command_text("vivid"),
    "natural": command_text("natural"),
    "auto": command_text("auto"),
    "opaque": command_text("opaque"),
    "transparent": command_text("transparent"),
    "low": command_text("low"),
    "medium": command_text("medium"),
    "high": command_text("high"),
}


def build_imagine_command(
    services: Services, admit: Admit, enhance: Admit | None = None
) -> app_commands.Command[Any, ..., None]:
    """/imagine, with choices taken from the configuration and the models the endpoint serves;
    ``enhance`` admits a request whose prompt the text model enhances first (None: no text model
    is offered, and the option is answered with a sentence)."""
    settings, offer = services.settings, services.offer
    catalog = settings.catalog
    offered = [catalog[name] for name in offer.models]
    model_choices = choices_of_models(offered)
    # Formats any offered model takes, in the catalog's order (the model decides what it accepts).
    formats = list(dict.fromkeys(fmt for spec in offered for fmt in spec.output_formats))

    def fixed(*values: str) -> list[app_commands.Choice[str]]:
        return [
            app_commands.Choice(name=FORMAT_LABELS.get(value, value), value=value)
            for value in values
        ]

    def labelled(*values: str) -> list[app_commands.Choice[str]]:
        return [app_commands.Choice(name=CHOICE_LABELS[value], value=value) for value in values]

    enhancer = enhance  # the option of the same name shadows it inside the command
    size_autocomplete, quality_autocomplete = autocompletes_following_the_model(
        catalog, offer.default
    )

    @app_commands.command(
        name=command_text("imagine"),
        description=command_text("Generate images from a text prompt"),
    )
    @app_commands.rename(
        **SHARED_OPTION_NAMES,
        style=command_text("style"),
        background=command_text("background"),
        format=command_text("format"),
        complexity=command_text("complexity"),
        frames=command_text("frames"),
        frame_ms=command_text("frame_ms"),
        private=command_text("private"),
        enhance=command_text("enhance"),
    )
    @app_commands.describe(
        prompt=command_text("What to draw"),
        model=command_text(
            "The image model (left out: the server's default, else {model})",
            model=offer.default,
        ),
        size=command_text("Width x height; the choices follow the model"),
        quality=command_text("Rendering quality; the choices follow the model"),
        count=command_text(
            "How many images (at most {most})", most=settings.max_images_per_request
        ),
        style=command_text("dall-e-3 only: vivid or natural"),
        background=command_text("GPT image models only: transparent needs png or webp"),
        format=command_text(
            "The file format: gif is animated, svg is a vector drawing (newer models)"
        ),
        complexity=command_text(
            "Newer models: how much planning goes into the picture, apart from quality"
        ),
        frames=command_text("Animated GIF only: how many frames (2-16, default 9)"),
        frame_ms=command_text(
            "Animated GIF only: how long each frame shows, in milliseconds (default 200)"
        ),
        private=command_text("Show the images to you only (and what is made from them)"),
        enhance=command_text(
            "Let a text model rewrite the prompt into a richer one first (you see it)"
        ),
    )
    @app_commands.choices(
        model=model_choices,
        style=labelled("vivid", "natural"),
        background=labelled("auto", "opaque", "transparent"),
        format=fixed(*(formats or ["png"])),
        complexity=labelled("low", "medium", "high"),
    )
    @app_commands.autocomplete(size=size_autocomplete, quality=quality_autocomplete)
    async def imagine_command(
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
        private: bool = False,
        enhance: bool = False,
    ) -> None:
        request = ImageRequest(
            prompt=prompt,
            model=model or offer.default,
            size=size,
            quality=quality,
            count=count,
            user=services.pseudonyms.for_user(interaction.user.id),
            style=style,
            background=background,
            output_format=format,
            complexity=complexity,
            frame_count=frames,
            frame_duration_ms=frame_ms,
        )
        if not enhance:
            await admit(interaction, request, private=private)
        elif enhancer is None:
            await interaction.response.send_message(NOT_OFFERED, ephemeral=True)
        else:
            await enhancer(interaction, request, private=private)

    return imagine_command
