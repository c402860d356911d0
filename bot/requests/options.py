"""The options members give a command, as Discord offers them: the longest prompt, the
``model`` choices and the ``size`` and ``quality`` autocompletes that follow the model chosen so
far. Shared by every command that makes images (/imagine, /edit)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping
from typing import Any

import discord
from discord import app_commands

from bot.discord_out.replies import clip
from bot.i18n import Text, _
from bot.i18n.commands import command_text
from bot.images import ModelSpec, parse_size

PROMPT_MAX = 6000  # Discord's longest string option
# The names, in every language, of the options /imagine and /edit share.
SHARED_OPTION_NAMES = {
    "prompt": command_text("prompt"),
    "model": command_text("model"),
    "size": command_text("size"),
    "quality": command_text("quality"),
    "count": command_text("count"),
}
CHOICE_MAX = 100  # Discord's longest choice name
CHOICES_MAX = 25  # Discord's most choices or autocomplete suggestions

Autocomplete = Callable[
    [discord.Interaction, str], Coroutine[Any, Any, list[app_commands.Choice[str]]]
]


# The choices' labels, in the member's language (the values stay the API's).
SHUT_DOWN = _("{model} (shut down on OpenAI; this service has it)")
MODEL_DECIDES = _("the model decides")
SQUARE = _("square")
LANDSCAPE = _("landscape")
PORTRAIT = _("portrait")
SIZE_LABEL = _("{size} ({orientation})")
WITH_DEFAULT = _("{label}, default")
QUALITY_DEFAULT = _("{quality} (default)")


def _model_label(spec: ModelSpec) -> str:
    return spec.name if spec.is_live else SHUT_DOWN.format(model=spec.name)


def _orientation(size: str) -> Text | None:
    dims = parse_size(size)
    if dims is None:
        return MODEL_DECIDES if size == "auto" else None
    width, height = dims
    return SQUARE if width == height else (LANDSCAPE if width > height else PORTRAIT)


def size_choices(spec: ModelSpec, typed: str) -> list[app_commands.Choice[str]]:
    typed = typed.strip().lower()
    sizes = [size for size in spec.sizes if typed in size]
    if typed and typed not in sizes and spec.free_size and spec.accepts_size(typed):
        sizes.insert(0, typed)
    choices = []
    for size in sizes[:CHOICES_MAX]:
        orientation = _orientation(size)
        label = (
            Text(size)
            if orientation is None
            else SIZE_LABEL.format(size=size, orientation=orientation)
        )
        if size == spec.default_size:
            label = WITH_DEFAULT.format(label=label)
        choices.append(app_commands.Choice(name=command_text(label), value=size))
    return choices


def quality_choices(spec: ModelSpec, typed: str) -> list[app_commands.Choice[str]]:
    return [
        app_commands.Choice(
            name=command_text(QUALITY_DEFAULT, quality=quality)
            if quality == spec.default_quality
            else quality,
            value=quality,
        )
        for quality in spec.qualities
        if typed.strip().lower() in quality
    ][:CHOICES_MAX]


def choices_of_models(specs: list[ModelSpec]) -> list[app_commands.Choice[str]]:
    """The `model` option's choices (a shut-down model the endpoint still serves says so)."""
    return [
        app_commands.Choice(
            name=command_text(_model_label(spec))
            if len(_model_label(spec)) <= CHOICE_MAX
            else clip(_model_label(spec), CHOICE_MAX),
            value=spec.name,
        )
        for spec in specs
    ]


def autocompletes_following_the_model(
    catalog: Mapping[str, ModelSpec], default: str
) -> tuple[Autocomplete, Autocomplete]:
    """The `size` and `quality` autocompletes, which follow the `model` option chosen so far
    (``default`` until one is)."""

    def chosen_spec(interaction: discord.Interaction) -> ModelSpec:
        model = getattr(interaction.namespace, "model", None)
        return catalog.get(model or "", catalog[default])

    async def size_autocomplete(
        interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        return size_choices(chosen_spec(interaction), current)

    async def quality_autocomplete(
        interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        return quality_choices(chosen_spec(interaction), current)

    return size_autocomplete, quality_autocomplete
