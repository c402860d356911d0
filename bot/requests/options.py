"""The options members give a command, as Discord offers them: the longest prompt, the
``model`` choices and the ``size`` and ``quality`` autocompletes that follow the model chosen so
far. Shared by every command that makes images (/imagine, /edit)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping
from typing import Any

import discord
from discord import app_commands

from bot.discord_out.replies import clip
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


def _model_label(spec: ModelSpec) -> str:
    return spec.name if spec.is_live else f"{spec.name} (shut down on OpenAI; this service has it)"


def _orientation(size: str) -> str:
    dims = parse_size(size)
    if dims is None:
        return "the model decides" if size == "auto" else ""
    width, height = dims
    return "square" if width == height else ("landscape" if width > height else "portrait")


def size_choices(spec: ModelSpec, typed: str) -> list[app_commands.Choice[str]]:
    typed = typed.strip().lower()
    sizes = [size for size in spec.sizes if typed in size]
    if typed and typed not in sizes and spec.free_size and spec.accepts_size(typed):
        sizes.insert(0, typed)
    choices = []
    for size in sizes[:CHOICES_MAX]:
        label = f"{size} ({_orientation(size)})" if _orientation(size) else size
        if size == spec.default_size:
            label += ", default"
        choices.append(app_commands.Choice(name=label, value=size))
    return choices


def quality_choices(spec: ModelSpec, typed: str) -> list[app_commands.Choice[str]]:
    return [
        app_commands.Choice(
            name=f"{quality} (default)" if quality == spec.default_quality else quality,
            value=quality,
        )
        for quality in spec.qualities
        if typed.strip().lower() in quality
    ][:CHOICES_MAX]


def choices_of_models(specs: list[ModelSpec]) -> list[app_commands.Choice[str]]:
    """The `model` option's choices (a shut-down model the endpoint still serves says so)."""
    return [
        app_commands.Choice(name=clip(_model_label(spec), CHOICE_MAX), value=spec.name)
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
