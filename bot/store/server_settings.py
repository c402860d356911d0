"""Server settings: what a server's managers choose with /imagine-settings, over the operator's
defaults from the environment.

A setting left at its default has no row in ``server_settings``; a change writes the row and one
row of ``settings_changes`` (who, when, the old and new value) in one transaction, so that the
record cannot miss a change. Values are stored as the normalised text a manager could type again.

Several bot processes may share the database (PostgreSQL): each keeps a server's settings for
:data:`CACHE_SECONDS` and reads them again after that, so a change made through one process is
seen by every other within that time, and by the process that made it at once.

Decisions: the operator's ``MEMBER_BUDGET`` and ``SERVER_BUDGET`` are ceilings, since anyone may
invite the bot and its managers are not the operator who pays: a server's own budget of the same
scope applies beside them, and both must hold (of one unit and period, the lower amount; of
different periods or units, each), so that a server can lower them and never lift them;
``none`` means no budget of the server's own beyond the operator's, as a reset does. A value above
the ceiling is accepted (it comes into force if the operator raises the ceiling) and the answer
says that the ceiling applies. Where the operator sets ``SERVERS_MAY_RAISE_BUDGETS``, a server's
budget instead replaces the operator's of the same scope, and ``none`` lifts it. The most images
per request may likewise only be lowered below the operator's ``MAX_IMAGES_PER_REQUEST``. A
stored value that the operator's configuration no longer allows (a model no longer offered) is
ignored where it is used, not deleted: it comes back into force if the configuration does.

Role tiers (``tier:<role id>`` rows) and barred members (``bar:<user id>`` rows) are settings
too, one row each, so that every change is recorded like any other. A tier is budgets in the
notation of MEMBER_BUDGET, ``exempt`` (from USER_RATE_LIMIT, where the operator's
``SERVERS_MAY_EXEMPT_ROLES`` allows it) and ``barred``. Decision, "the most generous of a
member's roles applies": per dimension (money or images, per day or per month), each of the
member's tiers has the value it states or, where it states none, the server's member budget of
that dimension (none: no budget); the member gets the highest of those, no budget where one of
them is none. A bar on any of a member's roles, or on the member, bars them whatever their
other roles: a bar is a manager's decision about a person, not a generosity. The operator's
MEMBER_BUDGET stays a ceiling over the result exactly as over the server's own budget.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import hashlib
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from sqlalchemy import delete, insert, select, update
from sqlalchemy import text as sql
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.i18n import Text, _, joined, localize, ngettext
from bot.images import CATEGORIES, ModelSpec, Policy, PolicyRefused, parse_policy
from bot.store import blocklist as blocklists
from bot.store.budgets import BUDGET_ACCEPTS, Budget, parse_budgets, tightest
from bot.store.db import BEGIN_IMMEDIATE
from bot.store.db.schema import server_settings, settings_changes

CACHE_SECONDS = 5.0  # how long another process may act on a server's settings before a change
# The most characters of a list (of channels) in an answer: two fit one message (2,000), and
# one an embed field (1,024) with the note of who changed it.
LIST_SHOWN_MAX = 900
NO_BUDGET = "none"


class Setting(StrEnum):
    MODELS = "models"
    DEFAULT_MODEL = "default-model"
    DEFAULT_QUALITY = "default-quality"
    MAX_IMAGES = "max-images"
    MEMBER_BUDGET = "member-budget"
    SERVER_BUDGET = "server-budget"
    CHANNELS = "channels"
    PREVIEWS = "previews"
    AGE_RESTRICTED = "age-restricted"
    SPOILERS = "spoilers"
    LOG_CHANNEL = "log-channel"
    BLOCKED_WORDS = "blocked-words"
    BLOCKED_PATTERNS = "blocked-patterns"
    MODERATION = "moderation"


DESCRIPTIONS = {
    Setting.MODELS: _("the models members may choose"),
    Setting.DEFAULT_MODEL: _("the model used when a member picks none"),
    Setting.DEFAULT_QUALITY: _("the quality used when a member picks none"),
    Setting.MAX_IMAGES: _("the most images one request may ask for"),
    Setting.MEMBER_BUDGET: _("each member's budget on this server"),
    Setting.SERVER_BUDGET: _("this server's budget as a whole"),
    Setting.CHANNELS: _("the channels where /imagine works"),
    Setting.PREVIEWS: _("whether partial previews are shown while an image is drawn"),
    Setting.AGE_RESTRICTED: _("the image service's low moderation in age-restricted channels"),
    Setting.SPOILERS: _("results posted as spoilers: always, off, or in the channels named"),
    Setting.LOG_CHANNEL: _("the channel where every request is logged for moderators"),
    Setting.BLOCKED_WORDS: _("words and phrases that refuse a prompt"),
    Setting.BLOCKED_PATTERNS: _("regular expressions (RE2) that refuse a prompt"),
    Setting.MODERATION: _("the moderation check of prompts and images before paying"),
}
# What a manager is told. A setting is named as its subcommand is in the manager's language
# (:func:`setting_name`); budgets keep their notation ($2/day), which is what is typed.
MODELS_REFUSED = _(
    "{setting} must be one or more of the models this bot offers, separated by commas: {models}."
)
DEFAULT_MODEL_REFUSED = _("{setting} must be one of the models this server allows: {models}.")
QUALITY_REFUSED = _("{setting} must be one of the qualities the allowed models take: {qualities}.")
MAX_IMAGES_REFUSED = _(
    "{setting} must be a whole number from 1 to {most} (the most this bot allows)."
)
BUDGET_REFUSED = _("{setting} must be {accepts}, or {none} for no budget")
BUDGET_REFUSED_OWN = _("{setting} must be {accepts}, or {none} for no budget of this server's own")
WHY = _("{refused} ({why}).")
REFUSED = _("{refused}.")
CHANNELS_REFUSED = _(
    "{setting} must be one or more channels of this server, mentioned with # (such as "
    "#general #art)."
)
PREVIEWS_REFUSED = _("{setting} must be on or off.")
NOT_A_SETTING = _("{setting} is not a setting.")
EACH_MODELS_OWN = _("each model's own")
OWN_AND_CEILING = _("{budgets}\nthis server's own: {own} · this bot's ceiling: {ceiling}")
EVERY_CHANNEL = _("every channel")
BOTS_DEFAULT = _("the bot's default")
ON = _("on")
OFF = _("off")
DEFAULT = _("default")
NO_BUDGET_TEXT = _("no budget")
NOW = _("{setting} is now {value} (it was {was}).")
NONE_AND_CEILING = _(
    "{setting} is now {none} (it was {was}): this server sets no budget of its own, and this "
    "bot's ceiling, set by its operator, applies: {ceiling}."
)
ABOVE_CEILING = ngettext(
    "{budgets} is above this bot's ceiling of {ceilings}, set by its operator, so the ceiling "
    "applies.",
    "{budgets} are above this bot's ceiling of {ceilings}, set by its operator, so the ceiling "
    "applies.",
)
CEILING_AS_WELL = _("This bot's ceiling of {ceiling}, set by its operator, applies as well.")
IN_FORCE = _("In force on this server: {budgets}.")
AND_MORE = _("{items} and {n} more")


def setting_name(setting: Setting) -> Text:
    """A setting as its /imagine-settings subcommand is named in the reader's language."""
    return Text(setting.value)


TIER_PREFIX = "tier:"  # a role's tier: ``tier:<role id>``
BAR_PREFIX = "bar:"  # a barred member: ``bar:<user id>``
MAX_TIERS = 25  # per server: a member's tiers are read on every request
MAX_BARRED = 500  # members barred one by one, per server (a role bars any number)
EXEMPT = "exempt"
BARRED = "barred"
ALWAYS = "always"


BUDGETS = (Setting.MEMBER_BUDGET, Setting.SERVER_BUDGET)
BLOCKLISTS = (Setting.BLOCKED_WORDS, Setting.BLOCKED_PATTERNS)
BLOCKLIST_MOST = 10_000  # a server's words and patterns together
WORD_CHARS = 100
PATTERN_CHARS = 300
# What the settings cog sends parse() for a blocklist: the entries to add or to remove.
ADD, REMOVE = "+", "-"
SPOILERS_REFUSED = _(
    "{setting} must be {always}, off, or channels mentioned with # (such as #spoilers #art)."
)
LOG_CHANNEL_REFUSED = _(
    "{setting} must be one channel of this server, mentioned with # (such as #mod-log)."
)
MODERATION_REFUSED = _(
    "{setting} must be off, on (the service's own judgement) or strict (lower scores refuse, for "
    "servers with children), then any categories with the score from 0 to 1 at which they "
    "refuse, or off, such as: strict violence=0.6 harassment=off. The categories: {categories}"
)
BLOCKLIST_REFUSED = ngettext(
    "{setting} takes words and phrases, separated by commas, each at most {n} character.",
    "{setting} takes words and phrases, separated by commas, each at most {n} characters.",
)
PATTERN_REFUSED = ngettext(
    "{setting} takes one RE2 pattern of at most {n} character.",
    "{setting} takes one RE2 pattern of at most {n} characters.",
)
NO_LETTERS = _("{setting}: {entry} has no letters or digits, so it blocks nothing.")
BLOCKLIST_FULL = ngettext(
    "A server can block at most {n} word or pattern.",
    "A server can block at most {n} words and patterns together.",
)
BLOCKLIST_TOO_LARGE = _(
    "These entries make the server's blocklist too large to compile: remove some."
)
TIER_ACCEPTS = _(
    "A tier must be budgets such as $5/month;50 images/day, and {exempt} (from the rate limit) "
    "or {barred} (from the bot), separated by ;, or {none} to remove the tier"
)
# How show says the newer settings.
IN_CHANNELS = _("in {channels}")
NO_LOG = _("no log")
NONE_OF_OWN = _("none of this server's own")
AND_OPERATORS = ngettext(
    "{entries} (and this bot's own {n}, set by its operator)",
    "{entries} (and this bot's own {n}, set by its operator)",
)
NO_MODERATION_CHECK = _("off: this bot's image service has no moderation check")
BARRED_LIST = _("barred: {members}")
NO_TIERS = _("none")
NO_MODERATION_ROUTE = _(
    "The image service this bot uses has no moderation check (POST /moderations), so "
    "moderation cannot be used on this server; only off is accepted."
)


class SettingRefused(ValueError):
    """A value that is not accepted; the message is the sentence for the manager."""

    @property
    def sentence(self) -> str:
        """The sentence, translatable where it was marked."""
        first = self.args[0] if self.args else None
        return first if isinstance(first, str) else str(self)


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """One server's choices; None: the operator's default."""

    values: Mapping[str, str] = field(default_factory=dict)  # as stored, by setting name
    # Read once from ``values`` (a server's settings are read once per CACHE_SECONDS and
    # consulted on every request): the roles' tiers and the members barred by name.
    _tiers: dict[int, Tier] = field(init=False, repr=False, compare=False)
    _barred: frozenset[int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        tiers, barred = {}, set()
        for name, value in self.values.items():
            if name.startswith(TIER_PREFIX) and name.removeprefix(TIER_PREFIX).isdigit():
                try:
                    tiers[int(name.removeprefix(TIER_PREFIX))] = parse_tier(value)
                except SettingRefused:  # stored by a version that read it: left out
                    continue
            elif name.startswith(BAR_PREFIX) and name.removeprefix(BAR_PREFIX).isdigit():
                barred.add(int(name.removeprefix(BAR_PREFIX)))
        object.__setattr__(self, "_tiers", tiers)
        object.__setattr__(self, "_barred", frozenset(barred))

    def raw(self, setting: Setting) -> str | None:
        return self.values.get(setting.value)

    @property
    def allowed_models(self) -> tuple[str, ...] | None:
        raw = self.raw(Setting.MODELS)
        return tuple(raw.split(",")) if raw else None

    @property
    def default_model(self) -> str | None:
        return self.raw(Setting.DEFAULT_MODEL)

    @property
    def default_quality(self) -> str | None:
        return self.raw(Setting.DEFAULT_QUALITY)

    @property
    def max_images(self) -> int | None:
        raw = self.raw(Setting.MAX_IMAGES)
        return int(raw) if raw and raw.isdigit() else None

    @property
    def member_budget(self) -> tuple[Budget, ...] | None:
        return _budgets(self.raw(Setting.MEMBER_BUDGET))

    @property
    def server_budget(self) -> tuple[Budget, ...] | None:
        return _budgets(self.raw(Setting.SERVER_BUDGET))

    @property
    def channels(self) -> tuple[int, ...] | None:
        raw = self.raw(Setting.CHANNELS)
        return tuple(int(part) for part in raw.split(",")) if raw else None

    @property
    def partial_previews(self) -> bool | None:
        """Stored for the streaming previews, which read it; None: the bot's default."""
        raw = self.raw(Setting.PREVIEWS)
        return None if raw is None else raw == "on"

    @property
    def moderation(self) -> Policy | None:
        raw = self.raw(Setting.MODERATION)
        try:
            return None if raw is None else parse_policy(raw)
        except PolicyRefused:  # stored by an older version: checked as strictly as can be
            return Policy("strict")

    @property
    def age_restricted(self) -> bool:
        """Whether the image service's ``moderation: low`` is asked for in age-restricted
        channels (off unless a manager turns it on)."""
        return self.raw(Setting.AGE_RESTRICTED) == "on"

    @property
    def spoilers(self) -> bool | tuple[int, ...]:
        """True: every result as a spoiler; the channels where they are; False: none."""
        raw = self.raw(Setting.SPOILERS)
        if raw is None or raw == "off":
            return False
        if raw == ALWAYS:
            return True
        return tuple(int(part) for part in raw.split(",") if part.isdigit())

    @property
    def log_channel(self) -> int | None:
        raw = self.raw(Setting.LOG_CHANNEL)
        return int(raw) if raw and raw.isdigit() else None

    @property
    def tiers(self) -> Mapping[int, Tier]:
        """Each role's tier, by role id (a row no longer readable is left out)."""
        return self._tiers

    @property
    def barred_members(self) -> frozenset[int]:
        return self._barred


@dataclass(frozen=True, slots=True)
class Tier:
    """A role's limits on one server: its budgets, whether it is exempt from the rate limit,
    whether it is barred from the bot."""

    budgets: tuple[Budget, ...] = ()
    exempt: bool = False
    barred: bool = False

    def __str__(self) -> str:
        flags = [EXEMPT] * self.exempt + [BARRED] * self.barred
        return ";".join([*(str(budget) for budget in self.budgets), *flags])


def parse_tier(text: str) -> Tier:
    """Read ``$5/month;50 images/day;exempt``; :class:`SettingRefused` naming what is accepted."""
    words = [part.strip().lower() for part in text.split(";") if part.strip()]
    flags = {word for word in words if word in (EXEMPT, BARRED)}
    accepts = TIER_ACCEPTS.format(exempt=EXEMPT, barred=BARRED, none=NO_BUDGET)
    try:
        budgets = parse_budgets(";".join(word for word in words if word not in flags))
    except ValueError as exc:
        why = exc.args[0] if exc.args and isinstance(exc.args[0], str) else str(exc)
        raise SettingRefused(WHY.format(refused=accepts, why=why)) from None
    if not words:
        raise SettingRefused(REFUSED.format(refused=accepts))
    return Tier(tightest(budgets), exempt=EXEMPT in flags, barred=BARRED in flags)


@dataclass(frozen=True, slots=True)
class MemberTier:
    """What applies to one member on one server, from their roles."""

    roles: tuple[int, ...]  # the roles whose tiers apply (none: the server's member budget)
    budgets: tuple[Budget, ...]  # the member's budgets in force, the operator's ceiling included
    exempt: bool = False  # from USER_RATE_LIMIT
    barred: bool = False  # by one of their roles or by name


def _budgets(raw: str | None) -> tuple[Budget, ...] | None:
    if raw is None:
        return None
    try:
        return () if raw == NO_BUDGET else parse_budgets(raw)
    except ValueError:  # stored by an older version in a notation no longer read: the default
        return None


@dataclass(frozen=True, slots=True)
class Rules:
    """What the operator's configuration lets a server choose."""

    offered: tuple[str, ...]  # the models the bot offers, its default first
    default_model: str
    catalog: Mapping[str, ModelSpec]
    max_images: int  # MAX_IMAGES_PER_REQUEST
    default_member_budget: tuple[Budget, ...] = ()  # MEMBER_BUDGET
    default_server_budget: tuple[Budget, ...] = ()  # SERVER_BUDGET
    servers_may_raise_budgets: bool = False  # SERVERS_MAY_RAISE_BUDGETS
    servers_may_exempt_roles: bool = False  # SERVERS_MAY_EXEMPT_ROLES
    blocked_words: tuple[str, ...] = ()  # BLOCKED_WORDS
    moderation_check: str = "off"  # MODERATION_CHECK
    moderations: bool | None = None  # whether the endpoint has /moderations (None: unknown)

    # -- what is in force ----------------------------------------------------------------------

    def allowed(self, chosen: ServerSettings) -> tuple[str, ...]:
        """The models members of this server may choose (never none)."""
        allowed = chosen.allowed_models
        if allowed is None:
            return self.offered
        kept = tuple(name for name in allowed if name in self.offered)
        return kept or self.offered

    def default(self, chosen: ServerSettings) -> str:
        allowed = self.allowed(chosen)
        for name in (chosen.default_model, self.default_model):
            if name in allowed:
                return str(name)
        return allowed[0]

    def cap(self, chosen: ServerSettings) -> int:
        value = chosen.max_images
        return self.max_images if value is None else min(value, self.max_images)

    def member_budget(self, chosen: ServerSettings) -> tuple[Budget, ...]:
        """Each member's budgets in force on this server."""
        return self.budget(Setting.MEMBER_BUDGET, chosen)

    def member_tier(
        self, chosen: ServerSettings, member_id: int, role_ids: Iterable[int]
    ) -> MemberTier:
        """The member's tier on this server (see the module's docstring for "most generous")."""
        tiers = chosen.tiers
        mine = [(role, tiers[role]) for role in role_ids if role in tiers]
        default = self.member_budget(chosen)
        barred = member_id in chosen.barred_members or any(tier.barred for _, tier in mine)
        if not mine:
            return MemberTier((), default, barred=barred)
        fallback = {(budget.images, budget.period): budget for budget in default}
        dimensions = dict.fromkeys(
            [*fallback, *((b.images, b.period) for _, tier in mine for b in tier.budgets)]
        )
        generous: list[Budget] = []
        for dimension in dimensions:
            values = []
            for _role, tier in mine:
                stated = [b for b in tier.budgets if (b.images, b.period) == dimension]
                values.append(stated[0] if stated else fallback.get(dimension))
            present = [value for value in values if value is not None]
            if len(present) == len(values):  # a tier without a budget here: none applies
                generous.append(max(present, key=lambda budget: budget.amount))
        budgets = tuple(generous)
        if not self.servers_may_raise_budgets:
            budgets = tightest((*self.ceiling(Setting.MEMBER_BUDGET), *budgets))
        exempt = self.servers_may_exempt_roles and any(tier.exempt for _, tier in mine)
        return MemberTier(tuple(role for role, _ in mine), budgets, exempt, barred)

    def server_budget(self, chosen: ServerSettings) -> tuple[Budget, ...]:
        """The server's budgets in force as a whole."""
        return self.budget(Setting.SERVER_BUDGET, chosen)

    def budget(self, setting: Setting, chosen: ServerSettings) -> tuple[Budget, ...]:
        """The budgets in force for ``setting`` (member-budget or server-budget) on a server."""
        own = self.own_budget(setting, chosen)
        ceiling = self.ceiling(setting)
        if own is None:
            return ceiling
        if self.servers_may_raise_budgets:
            return own  # the operator's only where the server set none of its own
        return tightest((*ceiling, *own))

    def own_budget(self, setting: Setting, chosen: ServerSettings) -> tuple[Budget, ...] | None:
        """What the server set for ``setting`` (``()``: none); None: nothing, or unreadable."""
        return chosen.member_budget if setting is Setting.MEMBER_BUDGET else chosen.server_budget

    def ceiling(self, setting: Setting) -> tuple[Budget, ...]:
        """The operator's budgets for ``setting``: the default, and the ceiling unless servers
        may raise budgets."""
        if setting is Setting.MEMBER_BUDGET:
            return self.default_member_budget
        return self.default_server_budget

    def above_ceiling(
        self, setting: Setting, chosen: ServerSettings
    ) -> list[tuple[Budget, Budget]]:
        """Each budget the server set above the operator's of the same unit and period, with
        that ceiling (which is what applies); none where servers may raise budgets."""
        own = self.own_budget(setting, chosen)
        if own is None or self.servers_may_raise_budgets:
            return []
        lowest = {
            (budget.images, budget.period): budget for budget in tightest(self.ceiling(setting))
        }
        pairs = [(budget, lowest.get((budget.images, budget.period))) for budget in own]
        return [
            (budget, cap) for budget, cap in pairs if cap is not None and budget.amount > cap.amount
        ]

    def blocklist(self, chosen: ServerSettings) -> blocklists.Blocklist:
        """The operator's words with the server's words and patterns, compiled (cached)."""
        return blocklists.matcher(*self._blocklist_key(chosen))

    def compiled_blocklist(self, chosen: ServerSettings) -> blocklists.Blocklist | None:
        """The list of :meth:`blocklist` if it is compiled already, else None."""
        return blocklists.cached(*self._blocklist_key(chosen))

    def _blocklist_key(self, chosen: ServerSettings) -> tuple[tuple[str, ...], str, str]:
        words = chosen.raw(Setting.BLOCKED_WORDS) or ""
        return self.blocked_words, words, chosen.raw(Setting.BLOCKED_PATTERNS) or ""

    def moderation(self, chosen: ServerSettings) -> Policy:
        """The moderation policy in force: the server's, else the operator's default."""
        return chosen.moderation or parse_policy(self.moderation_check)

    def qualities(self, chosen: ServerSettings) -> tuple[str, ...]:
        """The qualities some allowed model takes, in the catalog's order."""
        names = (q for name in self.allowed(chosen) for q in self.catalog[name].qualities)
        return tuple(dict.fromkeys(names))

    # -- reading what a manager typed ----------------------------------------------------------

    def parse(
        self,
        setting: Setting,
        text: str,
        chosen: ServerSettings,
        channel_exists: Callable[[int], bool] = lambda _id: True,
    ) -> str:
        """The value to store for ``text``; :class:`SettingRefused` naming what is accepted."""
        text = text.strip()
        if setting is Setting.MODELS:
            names = _words(text)
            unknown = [name for name in names if name not in self.offered]
            if not names or unknown:
                raise SettingRefused(
                    MODELS_REFUSED.format(
                        setting=setting_name(setting), models=", ".join(self.offered)
                    )
                )
            return ",".join(dict.fromkeys(names))
        if setting is Setting.DEFAULT_MODEL:
            allowed = self.allowed(chosen)
            if text not in allowed:
                raise SettingRefused(
                    DEFAULT_MODEL_REFUSED.format(
                        setting=setting_name(setting), models=", ".join(allowed)
                    )
                )
            return text
        if setting is Setting.DEFAULT_QUALITY:
            qualities = self.qualities(chosen)
            if text.lower() not in qualities:
                raise SettingRefused(
                    QUALITY_REFUSED.format(
                        setting=setting_name(setting), qualities=", ".join(qualities)
                    )
                )
            return text.lower()
        if setting is Setting.MAX_IMAGES:
            if not text.isdigit() or not 1 <= int(text) <= self.max_images:
                raise SettingRefused(
                    MAX_IMAGES_REFUSED.format(setting=setting_name(setting), most=self.max_images)
                )
            return str(int(text))
        if setting in BUDGETS:
            if text.lower() == NO_BUDGET:
                return NO_BUDGET
            own = not self.servers_may_raise_budgets and self.ceiling(setting)
            accepts = (BUDGET_REFUSED_OWN if own else BUDGET_REFUSED).format(
                setting=setting_name(setting), accepts=BUDGET_ACCEPTS, none=NO_BUDGET
            )
            try:
                budgets = parse_budgets(text)
            except ValueError as exc:
                why = exc.args[0] if exc.args and isinstance(exc.args[0], str) else str(exc)
                raise SettingRefused(WHY.format(refused=accepts, why=why)) from None
            if not budgets:
                raise SettingRefused(REFUSED.format(refused=accepts))
            # Stored as the lowest of each unit and period, which is what holds: a paste of the
            # same budget a hundred times is one, and the answer that repeats it stays short.
            return ";".join(str(budget) for budget in tightest(budgets))
        if setting is Setting.CHANNELS:
            found = [re.fullmatch(r"<#(\d{1,20})>|(\d{1,20})", word) for word in _words(text)]
            ids = [int(match[1] or match[2]) for match in found if match]
            known = all(channel_exists(channel) for channel in ids)
            if not ids or len(ids) < len(found) or not known:
                raise SettingRefused(CHANNELS_REFUSED.format(setting=setting_name(setting)))
            return ",".join(str(channel) for channel in dict.fromkeys(ids))
        if setting in (Setting.PREVIEWS, Setting.AGE_RESTRICTED):
            if text.lower() not in ("on", "off", "true", "false"):
                raise SettingRefused(PREVIEWS_REFUSED.format(setting=setting_name(setting)))
            return "on" if text.lower() in ("on", "true") else "off"
        if setting is Setting.SPOILERS:
            if text.lower() in (ALWAYS, "off"):
                return text.lower()
            try:
                return self.parse(Setting.CHANNELS, text, chosen, channel_exists)
            except SettingRefused:
                raise SettingRefused(
                    SPOILERS_REFUSED.format(setting=setting_name(setting), always=ALWAYS)
                ) from None
        if setting is Setting.LOG_CHANNEL:
            match = re.fullmatch(r"<#(\d{1,20})>|(\d{1,20})", text)
            channel = int(match[1] or match[2]) if match else None
            if channel is None or not channel_exists(channel):
                raise SettingRefused(LOG_CHANNEL_REFUSED.format(setting=setting_name(setting)))
            return str(channel)
        if setting in BLOCKLISTS:
            return self._blocklist_value(setting, text, chosen)
        if setting is Setting.MODERATION:
            try:
                policy = parse_policy(text)
            except PolicyRefused as exc:
                accepts = MODERATION_REFUSED.format(
                    setting=setting_name(setting), categories=", ".join(CATEGORIES)
                )
                refused = REFUSED if exc.why is None else WHY
                raise SettingRefused(refused.format(refused=accepts, why=exc.why)) from None
            if policy.checks and self.moderations is False:
                raise SettingRefused(NO_MODERATION_ROUTE)
            return str(policy)
        # every member is handled
        raise SettingRefused(NOT_A_SETTING.format(setting=setting_name(setting)))

    def _blocklist_value(self, setting: Setting, text: str, chosen: ServerSettings) -> str:
        """The server's list once ``text`` (``+`` entries to add, ``-`` to remove) is applied:
        words and phrases are separated by commas, a pattern is one whole entry."""
        words = setting is Setting.BLOCKED_WORDS
        adding, entries_text = text[:1] == ADD, text[1:].strip()
        if words:
            entries = [e.strip() for e in entries_text.split(",") if e.strip()]
        else:
            entries = [entries_text] if entries_text else []
        takes = BLOCKLIST_REFUSED if words else PATTERN_REFUSED
        most = WORD_CHARS if words else PATTERN_CHARS
        if not entries or any(len(entry) > most or "\n" in entry for entry in entries):
            raise SettingRefused(takes.format(setting=setting_name(setting), n=most))
        current = [e for e in (chosen.raw(setting) or "").splitlines() if e]
        if not adding:
            gone = set(entries)
            return "\n".join(entry for entry in current if entry not in gone)
        for entry in entries:
            if words and blocklists.word_pattern(entry) is None:
                raise SettingRefused(
                    NO_LETTERS.format(setting=setting_name(setting), entry=repr(entry))
                )
            if not words:
                try:
                    blocklists.check_pattern(entry)
                except blocklists.PatternRefused as exc:
                    raise SettingRefused(exc.args[0]) from None
        value = "\n".join(dict.fromkeys((*current, *entries)))
        other = Setting.BLOCKED_PATTERNS if words else Setting.BLOCKED_WORDS
        others = chosen.raw(other) or ""
        if len(value.splitlines()) + len(others.splitlines()) > BLOCKLIST_MOST:
            raise SettingRefused(BLOCKLIST_FULL.format(n=BLOCKLIST_MOST))
        listed = (value, others) if words else (others, value)
        if not blocklists.fits(self.blocked_words, *listed):
            raise SettingRefused(BLOCKLIST_TOO_LARGE)
        return value


def _words(text: str) -> list[str]:
    return [word for word in re.split(r"[\s,;]+", text) if word]


@dataclass(frozen=True, slots=True)
class Change:
    """One row of the settings' record."""

    name: str
    old_value: str | None
    new_value: str | None
    changed_at: dt.datetime
    changed_by: int


class SettingsStore:
    """Reads and changes servers' settings in the bot's database, with a short cache."""

    def __init__(
        self,
        engine: Callable[[], AsyncEngine],
        *,
        cache_seconds: float = CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._engine = engine  # the ledger's: one pool for the bot's database
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._cache: dict[int, tuple[float, ServerSettings]] = {}
        self._reading: dict[int, asyncio.Future[ServerSettings]] = {}
        self._changes: collections.Counter[int] = collections.Counter()  # by this process

    async def get(self, guild_id: int | None) -> ServerSettings:
        """The server's settings, at most ``cache_seconds`` old; a direct message has none."""
        if guild_id is None:
            return ServerSettings()
        cached = self._cache.get(guild_id)
        if cached is not None and cached[0] > self._clock():
            return cached[1]
        # Requests arriving together for a server whose settings are not cached share one read:
        # a burst of /imagine must not become a burst of database round trips before each defer.
        reading = self._reading.get(guild_id)
        if reading is None:
            reading = asyncio.ensure_future(self._read(guild_id, self._changes[guild_id]))
            self._reading[guild_id] = reading
            reading.add_done_callback(lambda _: self._reading.pop(guild_id, None))
        return await asyncio.shield(reading)  # one caller's timeout does not cancel the others'

    def cached(self, guild_id: int) -> ServerSettings | None:
        """The server's settings if this process read them less than ``cache_seconds`` ago,
        without waiting for the database; None: not known now."""
        cached = self._cache.get(guild_id)
        return cached[1] if cached is not None and cached[0] > self._clock() else None

    async def _read(self, guild_id: int, changes_before: int) -> ServerSettings:
        query = select(server_settings.c.name, server_settings.c.value).where(
            server_settings.c.guild_id == guild_id
        )
        async with self._engine().connect() as connection:
            rows = (await connection.execute(query)).all()
        chosen = ServerSettings({str(name): str(value) for name, value in rows})
        if self._changes[guild_id] == changes_before:  # else it may predate this process's change
            self._cache[guild_id] = (self._clock() + self._cache_seconds, chosen)
        return chosen

    async def change(
        self, guild_id: int, setting: Setting | str, value: str | None, *, by: int
    ) -> str | None:
        """Set ``setting`` (a :class:`Setting`, or a tier's or a bar's row name) to ``value``
        (None: back to the default) and record who did it and when; return the value it had
        (None: the default)."""
        now = dt.datetime.now(dt.UTC)
        name = str(setting)
        key = (server_settings.c.guild_id == guild_id) & (server_settings.c.name == name)
        async with self._engine().connect() as connection:
            if connection.dialect.name == "sqlite":
                await connection.execution_options(**{BEGIN_IMMEDIATE: True})
            async with connection.begin():
                # One change of a server's settings at a time: SQLite's BEGIN IMMEDIATE, or on
                # PostgreSQL a lock for the server (a row FOR UPDATE locks nothing where the
                # setting has no row yet, and two first changes would both insert it).
                if connection.dialect.name == "postgresql":
                    await connection.execute(
                        sql("SELECT pg_advisory_xact_lock(:key)"), {"key": _lock_key(guild_id)}
                    )
                old = await connection.scalar(
                    select(server_settings.c.value).where(key).with_for_update()
                )
                if value is None:
                    await connection.execute(delete(server_settings).where(key))
                elif old is None:
                    await connection.execute(
                        insert(server_settings).values(
                            guild_id=guild_id, name=name, value=value,
                            changed_at=now, changed_by=by,
                        )
                    )  # fmt: skip
                else:
                    await connection.execute(
                        update(server_settings)
                        .where(key)
                        .values(value=value, changed_at=now, changed_by=by)
                    )
                await connection.execute(
                    insert(settings_changes).values(
                        guild_id=guild_id, name=name, old_value=old, new_value=value,
                        changed_at=now, changed_by=by,
                    )
                )  # fmt: skip
        self._changes[guild_id] += 1
        self._cache.pop(guild_id, None)  # this process sees its own change at once
        self._reading.pop(guild_id, None)
        return None if old is None else str(old)

    async def last_changes(self, guild_id: int) -> dict[str, Change]:
        """The latest change of each setting that has one."""
        query = (
            select(settings_changes)
            .where(settings_changes.c.guild_id == guild_id)
            .order_by(settings_changes.c.id)
        )
        async with self._engine().connect() as connection:
            rows = (await connection.execute(query)).all()
        latest: dict[str, Change] = {}
        for row in rows:
            latest[row.name] = Change(
                row.name, row.old_value, row.new_value, _utc(row.changed_at), int(row.changed_by)
            )
        return latest


def _utc(value: dt.datetime) -> dt.datetime:
    # SQLite hands back what was stored, in UTC, without its zone.
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def describe(setting: Setting, raw: str | None, rules: Rules, chosen: ServerSettings) -> str:
    """How ``show`` says a setting: its value, or the default in force."""
    if setting is Setting.MODELS:
        return ", ".join(rules.allowed(chosen))
    if setting is Setting.DEFAULT_MODEL:
        return rules.default(chosen)
    if setting is Setting.DEFAULT_QUALITY:
        return raw or EACH_MODELS_OWN
    if setting is Setting.MAX_IMAGES:
        return str(rules.cap(chosen))
    if setting in BUDGETS:
        text = budget_text(rules.budget(setting, chosen))
        if _ceiling_matters(setting, rules, chosen):
            own = budget_text(rules.own_budget(setting, chosen) or (), none=NO_BUDGET)
            ceiling = budget_text(rules.ceiling(setting))
            return OWN_AND_CEILING.format(budgets=text, own=own, ceiling=ceiling)
        return text
    if setting is Setting.CHANNELS:
        return mentioned_channels(chosen.channels or (), separator=" ") or EVERY_CHANNEL
    if setting is Setting.PREVIEWS:
        return {None: BOTS_DEFAULT, True: ON, False: OFF}[chosen.partial_previews]
    if setting is Setting.AGE_RESTRICTED:
        return ON if chosen.age_restricted else OFF
    if setting is Setting.SPOILERS:
        spoilers = chosen.spoilers
        if isinstance(spoilers, tuple):
            return IN_CHANNELS.format(channels=mentioned_channels(spoilers, separator=" "))
        return ALWAYS if spoilers else "off"
    if setting is Setting.LOG_CHANNEL:
        channel = chosen.log_channel
        return NO_LOG if channel is None else f"<#{channel}>"
    if setting in BLOCKLISTS:
        entries = [entry for entry in (raw or "").splitlines() if entry]
        text = summarised(entries) if entries else NONE_OF_OWN
        if setting is Setting.BLOCKED_WORDS and rules.blocked_words:
            text = AND_OPERATORS.format(entries=text, n=len(rules.blocked_words))
        return text
    if setting is Setting.MODERATION:
        if rules.moderations is False:
            return NO_MODERATION_CHECK
        return str(rules.moderation(chosen))
    return raw or DEFAULT


def describe_tiers(chosen: ServerSettings, locale: object = None) -> str:
    """The roles' tiers and the barred members, as ``show`` lists them, in ``locale``."""
    lines = [f"<@&{role}>: {tier}" for role, tier in sorted(chosen.tiers.items())]
    barred = [f"<@{member}>" for member in sorted(chosen.barred_members)]
    if barred:
        lines.append(localize(BARRED_LIST.format(members=summarised(barred, " ")), locale))
    return localize(summarised(lines, "\n"), locale) if lines else NO_TIERS.localized(locale)


def budget_text(budgets: Iterable[Budget], *, none: str = NO_BUDGET_TEXT) -> str:
    return ";".join(str(budget) for budget in budgets) or none


def _ceiling_matters(setting: Setting, rules: Rules, chosen: ServerSettings) -> bool:
    """Whether the server set a budget of its own that the operator's ceiling bounds."""
    own = rules.own_budget(setting, chosen)
    return own is not None and not rules.servers_may_raise_budgets and bool(rules.ceiling(setting))


def budget_changed(
    setting: Setting, value: str, was: str, rules: Rules, chosen: ServerSettings
) -> str:
    """The answer to a manager who set a budget: what they set and, where the operator's
    ceiling changes what applies, that it does and what is in force."""
    own = rules.own_budget(setting, chosen) or ()
    in_force = rules.budget(setting, chosen)
    name = setting_name(setting)
    if not _ceiling_matters(setting, rules, chosen) or in_force == tightest(own):
        return NOW.format(setting=name, value=budget_text(in_force), was=was)
    ceiling = budget_text(rules.ceiling(setting))
    if not own:
        return NONE_AND_CEILING.format(setting=name, none=NO_BUDGET, was=was, ceiling=ceiling)
    above = rules.above_ceiling(setting, chosen)
    if above:
        applies = ABOVE_CEILING.format(
            budgets=", ".join(str(budget) for budget, _cap in above),
            ceilings=", ".join(str(cap) for _budget, cap in above),
            n=len(above),
        )
    else:
        applies = CEILING_AS_WELL.format(ceiling=ceiling)
    return joined(
        [
            NOW.format(setting=name, value=value, was=was),
            applies,
            IN_FORCE.format(budgets=budget_text(in_force)),
        ]
    )


def described_value(setting: Setting, raw: str) -> str:
    """A stored value as an answer shows it (channels are stored as ids: they are mentioned)."""
    if setting in (Setting.CHANNELS, Setting.SPOILERS, Setting.LOG_CHANNEL):
        ids = [int(part) for part in raw.split(",") if part.isdigit()]
        return mentioned_channels(ids, separator=" ") or raw
    if setting in BLOCKLISTS:
        return f"{len(raw.splitlines())} of this server's own"
    return raw


def mentioned_channels(ids: Iterable[int], *, separator: str = ", ") -> str:
    """The channels mentioned, as many as fit :data:`LIST_SHOWN_MAX` characters, then how many
    more there are ("and 52 more")."""
    return summarised([f"<#{channel}>" for channel in ids], separator)


def summarised(items: Sequence[str], separator: str = ", ", most: int = LIST_SHOWN_MAX) -> str:
    """``items`` joined, or as many as fit ``most`` characters with "and N more" after them."""
    joined = separator.join(items)
    if len(joined) <= most:
        return joined
    shown: list[str] = []
    length = 0
    for item in items:
        # Measured in English: a translation of "and N more" is about as long.
        more = f" and {len(items) - len(shown) - 1} more"
        if length + len(separator) + len(item) + len(more) > most:
            break
        shown.append(item)
        length += len(separator) + len(item)
    return AND_MORE.format(items=separator.join(shown), n=len(items) - len(shown))


def _lock_key(guild_id: int) -> int:
    """A 64-bit advisory lock key for one server's settings."""
    name = f"imagine-settings:{guild_id}".encode()
    return int.from_bytes(hashlib.blake2b(name, digest_size=8).digest(), "big", signed=True)
