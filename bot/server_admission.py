"""A server's /imagine-settings applied to one request (/imagine, a button, /edit, Vary): where
it may be used, which models, the default model and quality, the most images, the budgets it is
checked against, and whether previews are shown."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass

import discord

from bot.budgets import Budget
from bot.images import ImageRequest
from bot.replies import step_timeout
from bot.server_settings import mentioned_channels
from bot.services import Services

log = logging.getLogger(__name__)

SETTINGS_UNAVAILABLE = (
    "The bot cannot read this server's settings right now. Please try again soon."
)
SETTINGS_TIMEOUT = 1.5  # seconds; a cached read takes none, and Discord wants an answer within 3


@dataclass(frozen=True, slots=True)
class Admissible:
    """The request as this server's settings make it, and what bounds it."""

    request: ImageRequest
    cap: int  # the most images per request
    budgets: tuple[tuple[Budget, ...], tuple[Budget, ...]] | None  # member's, server's
    previews: bool  # whether partial previews are shown while the images are made


def picked_model(interaction: discord.Interaction, request: ImageRequest) -> str | None:
    """The model the member chose for /imagine, None where they left it to the defaults."""
    if interaction.type is discord.InteractionType.application_command:
        return getattr(interaction.namespace, "model", None)  # None: the member left it
    # A button or form under posted images asks again with the model they were made with.
    return request.model


async def apply_server_settings(
    interaction: discord.Interaction,
    request: ImageRequest,
    services: Services,
    *,
    picked: str | None,
    command: str = "/imagine",
    usable: Callable[[str], bool] | None = None,
) -> Admissible | str:
    """The request with the server's defaults filled in, or the sentence refusing it.

    ``picked``: the model the member chose (None: the server's default). ``usable``: which
    models the command can use (an edit: those that edit); where the server's default is not
    one, the request's own model, else the first allowed one that is, stands in for it."""
    rules = services.server_rules
    try:
        async with asyncio.timeout(step_timeout(interaction, SETTINGS_TIMEOUT)):
            chosen = await services.server_settings.get(interaction.guild_id)
    except Exception as exc:
        log.error("could not read the server's settings: %r", exc)
        return SETTINGS_UNAVAILABLE
    channels = chosen.channels
    if channels is not None and interaction.guild_id is not None:
        parent = getattr(interaction.channel, "parent_id", None)  # a thread counts as its channel
        if interaction.channel_id not in channels and parent not in channels:
            return f"On this server, {command} works in {mentioned_channels(channels)}."
    allowed = rules.allowed(chosen)
    if picked is not None and picked not in allowed:
        return f"This server allows these models: {', '.join(allowed)}."
    model = picked or _default_model(rules.default(chosen), request.model, allowed, usable)
    if model is None:
        return f"None of the models this server allows ({', '.join(allowed)}) works with {command}."
    quality = request.quality
    if quality is None and chosen.default_quality in rules.catalog[model].qualities:
        quality = chosen.default_quality
    budgets = None
    if interaction.guild_id is not None:
        budgets = (rules.member_budget(chosen), rules.server_budget(chosen))
    return Admissible(
        dataclasses.replace(request, model=model, quality=quality),
        rules.cap(chosen),
        budgets,
        previews=chosen.partial_previews is not False,  # unset: PARTIAL_IMAGES decides
    )


def _default_model(
    default: str, requested: str, allowed: tuple[str, ...], usable: Callable[[str], bool] | None
) -> str | None:
    if usable is None:
        return default
    candidates = (default, requested, *allowed)
    return next((name for name in candidates if name in allowed and usable(name)), None)
