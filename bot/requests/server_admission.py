"""A server's /imagine-settings applied to one request (/imagine, a button, /edit, Vary): where
it may be used, which models, the default model and quality, the most images, the budgets it is
checked against (the member's from the tier of their roles), whether previews are shown, whether
the member is barred or exempt from the rate limit, whether the image service's ``moderation:
low`` may be asked for (an age-restricted channel, where the server allows it), whether the
result is posted as a spoiler, whether the prompt has a blocked word or pattern (the operator's
BLOCKED_WORDS and the server's own: bot/store/blocklist.py) and which moderation check applies.

Decision: a channel is age-restricted when Discord says so (``nsfw``); a thread is when its
parent is; a channel the bot cannot see (not cached) is not: the default moderation then
applies, never the lower one by mistake."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import discord

from bot.discord_out.replies import step_timeout
from bot.i18n import Text, _
from bot.images import ImageRequest, Policy
from bot.requests.where import where
from bot.store.budgets import Budget
from bot.store.server_settings import Rules, ServerSettings, SettingsStore, mentioned_channels

log = logging.getLogger(__name__)

SETTINGS_UNAVAILABLE = _(
    "The bot cannot read this server's settings right now. Please try again soon."
)
ALLOWED_MODELS = _("This server allows these models: {models}.")
NONE_WORKS = _("None of the models this server allows ({models}) works with {command}.")
CHANNELS_GONE = _(
    "On this server, {command} works only in channels that no longer exist: a manager can "
    "choose others with /imagine-settings channels."
)
WORKS_IN = _("On this server, {command} works in {channels}.")
BARRED = _("A manager of this server has barred you from using this bot here.")
BLOCKED = _(
    "This prompt has words or phrases that are not allowed here, so it was not sent. Nothing "
    "was charged."
)


def command_named(command: str) -> Text:
    """A command as the reader's client names it: ``/imagine`` is ``/bild-erzeugen`` in German
    (the catalog's entry for the command's name), ``Vary image`` the menu's own translation."""
    if command.startswith("/"):
        return Text("/{name}", None, {"name": Text(command[1:])})
    return Text(command)


SETTINGS_TIMEOUT = 1.5  # seconds; a cached read takes none, and Discord wants an answer within 3


@dataclass(frozen=True, slots=True)
class Admissible:
    """The request as this server's settings make it, and what bounds it."""

    request: ImageRequest
    cap: int  # the most images per request
    budgets: tuple[tuple[Budget, ...], tuple[Budget, ...]] | None  # member's, server's
    previews: bool  # whether partial previews are shown while the images are made
    exempt: bool = False  # from the member's rate limit (their tier, where the operator allows)
    low_moderation: bool = False  # an age-restricted channel where the server allows it
    spoiler: bool = False  # results and previews posted as spoilers
    moderation: Policy = field(default_factory=Policy)  # the server's check (off: none)
    logged: bool = False  # the server keeps a moderation log (its first image: a thumbnail)


def age_restricted(channel: object) -> bool:
    """Whether Discord marks ``channel`` age-restricted (a thread: its parent)."""
    is_nsfw = getattr(channel, "is_nsfw", None)  # DMs and partial channels have none
    return bool(is_nsfw()) if callable(is_nsfw) else False


def spoiler_here(chosen: ServerSettings, interaction: discord.Interaction) -> bool:
    """Whether the server posts results as spoilers where ``interaction`` was used (a thread
    counts as its channel)."""
    spoilers = chosen.spoilers
    if isinstance(spoilers, tuple):
        parent = getattr(interaction.channel, "parent_id", None)
        return interaction.channel_id in spoilers or parent in spoilers
    return spoilers


def role_ids(member: object) -> tuple[int, ...]:
    """The ids of a member's roles (a user in a direct message has none)."""
    return tuple(role.id for role in getattr(member, "roles", ()))


def picked_model(interaction: discord.Interaction, request: ImageRequest) -> str | None:
    """The model the member chose for /imagine, None where they left it to the defaults."""
    if interaction.type is discord.InteractionType.application_command:
        return getattr(interaction.namespace, "model", None)  # None: the member left it
    # A button or form under posted images asks again with the model they were made with.
    return request.model


async def apply_server_settings(
    interaction: discord.Interaction,
    request: ImageRequest,
    rules: Rules,
    store: SettingsStore,
    *,
    picked: str | None,
    command: str = "/imagine",
    usable: Callable[[str], bool] | None = None,
    preferred: str | None = None,
) -> Admissible | str:
    """The request with the server's defaults filled in, or the sentence refusing it.

    ``picked``: the model the member chose (None: the server's default). ``usable``: which
    models the command can use (an edit: those that edit); where the server's default is not
    one, the request's own model, else the first allowed one that is, stands in for it.
    ``preferred``: a model to use before the server's default where the server allows it and
    the command can use it (Vary: the model the images were made with); where it cannot, the
    default stands in, never a refusal, and the request's size and quality (which were the
    preferred model's) are left to the model that stands in. ``rules``: what the configuration
    lets a server choose; ``store``: the servers' settings."""
    # Outside a server that installed the bot (personal scope: None) there are no settings.
    guild_id = where(interaction).guild_id
    chosen = await _settings(interaction, store, guild_id)
    if chosen is None:
        return SETTINGS_UNAVAILABLE
    tier = None
    if guild_id is not None:  # a server that installed the bot: its tiers and bars apply
        tier = rules.member_tier(chosen, interaction.user.id, role_ids(interaction.user))
        if tier.barred:  # before anything else: nothing is counted, nothing paid
            return BARRED
    channels = chosen.channels
    if channels is not None and guild_id is not None and _outside(interaction, channels):
        return _where_it_works(interaction, channels, command)
    # Before anything else is looked at or paid for; the refusal names no word or pattern: a
    # long prompt does not hand over which of its words is on the list (nor the list itself).
    try:
        # Compiled once per change of the list (a fifth of a second for 10,000 entries): off
        # the event loop; then it is matched in microseconds.
        listed = rules.compiled_blocklist(chosen)
        if listed is None:
            listed = await asyncio.to_thread(rules.blocklist, chosen)
        blocked = listed.blocks(request.prompt)
    except Exception as exc:  # a list that no longer compiles: nothing goes unchecked
        log.error("could not compile the server's blocked words and patterns: %r", exc)
        return SETTINGS_UNAVAILABLE
    if blocked:
        log.info("a prompt was refused by a blocked word or pattern")
        return BLOCKED
    allowed = rules.allowed(chosen)
    if picked is not None and picked not in allowed:
        return ALLOWED_MODELS.format(models=", ".join(allowed))
    if picked is None and preferred is not None and _can_use(preferred, allowed, usable):
        model: str | None = preferred
    else:
        model = picked or _default_model(rules.default(chosen), request.model, allowed, usable)
        if preferred is not None:
            request = dataclasses.replace(request, size=None, quality=None)
    if model is None:
        return NONE_WORKS.format(models=", ".join(allowed), command=command_named(command))
    quality = request.quality
    if quality is None and chosen.default_quality in rules.catalog[model].qualities:
        quality = chosen.default_quality
    budgets = None
    if tier is not None:
        budgets = (tier.budgets, rules.server_budget(chosen))
    return Admissible(
        dataclasses.replace(request, model=model, quality=quality),
        rules.cap(chosen),
        budgets,
        previews=chosen.partial_previews is not False,  # unset: PARTIAL_IMAGES decides
        exempt=tier is not None and tier.exempt,
        low_moderation=chosen.age_restricted and age_restricted(interaction.channel),
        spoiler=spoiler_here(chosen, interaction),
        moderation=rules.moderation(chosen),
        logged=chosen.log_channel is not None,
    )


async def _settings(
    interaction: discord.Interaction, store: SettingsStore, guild_id: int | None
) -> ServerSettings | None:
    """The settings of ``guild_id`` (None: the personal scope's), or None after one log line."""
    try:
        async with asyncio.timeout(step_timeout(interaction, SETTINGS_TIMEOUT)):
            return await store.get(guild_id)
    except Exception as exc:
        log.error("could not read the server's settings: %r", exc)
        return None


def _outside(interaction: discord.Interaction, channels: tuple[int, ...]) -> bool:
    parent = getattr(interaction.channel, "parent_id", None)  # a thread counts as its channel
    return interaction.channel_id not in channels and parent not in channels


async def barred_here(
    interaction: discord.Interaction,
    rules: Rules,
    store: SettingsStore,
    *,
    command: str | None = None,
) -> str | None:
    """:data:`BARRED` where the member is barred on this server (:data:`SETTINGS_UNAVAILABLE`
    where its settings cannot be read), else None: for what posts or copies a set again without
    a request (/show, Send to DM), which a bar covers as it covers a request. ``command``: one
    that posts in the channel (/show), refused too outside the channels the server chose.
    Outside a server's install there is no bar."""
    guild_id = where(interaction).guild_id
    if guild_id is None:
        return None
    chosen = await _settings(interaction, store, guild_id)
    if chosen is None:
        return SETTINGS_UNAVAILABLE
    tier = rules.member_tier(chosen, interaction.user.id, role_ids(interaction.user))
    if tier.barred:
        return BARRED
    channels = chosen.channels
    if command is not None and channels is not None and _outside(interaction, channels):
        return _where_it_works(interaction, channels, command)
    return None


def _where_it_works(
    interaction: discord.Interaction, channels: tuple[int, ...], command: str
) -> str:
    """The refusal outside the chosen channels, naming those that still exist: a channel deleted
    since it was chosen would show as "#unknown", and a long list of them would push the ones
    left out of the summary ("and N more")."""
    guild = interaction.client.get_guild(interaction.guild_id or 0)
    existing = channels
    if guild is not None:  # unknown to this process (not cached): every one is named
        existing = tuple(c for c in channels if guild.get_channel_or_thread(c) is not None)
    if not existing:
        return CHANNELS_GONE.format(command=command_named(command))
    return WORKS_IN.format(command=command_named(command), channels=mentioned_channels(existing))


def _can_use(name: str, allowed: tuple[str, ...], usable: Callable[[str], bool] | None) -> bool:
    return name in allowed and (usable is None or usable(name))


def _default_model(
    default: str, requested: str, allowed: tuple[str, ...], usable: Callable[[str], bool] | None
) -> str | None:
    if usable is None:
        return default
    candidates = (default, requested, *allowed)
    return next((name for name in candidates if _can_use(name, allowed, usable)), None)
