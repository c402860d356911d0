"""/imagine-settings: one subcommand per setting, ``reset`` to go back to the operator's default,
and ``show``; ``role-tier`` and ``bar-member`` set a role's tier or bar one member, recorded like
the other settings. Discord shows the command only to members who may manage the server
(``default_member_permissions``); the handler checks it again, since a server's own command
permissions can open it to others, and a change must come from someone who could make it anyway.
Every answer is private.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

import discord
from discord import app_commands
from discord.ext import commands

from bot.discord_out.replies import clip, fit_content, fit_embed, time_to_acknowledge
from bot.i18n import Text, _, joined, localize, ngettext
from bot.i18n.commands import command_text
from bot.requests.where import where
from bot.services import Services
from bot.store.server_settings import (
    ADD,
    BAR_PREFIX,
    BLOCKLISTS,
    BUDGETS,
    DESCRIPTIONS,
    MAX_BARRED,
    MAX_TIERS,
    NO_BUDGET,
    REMOVE,
    TIER_PREFIX,
    ServerSettings,
    Setting,
    SettingRefused,
    budget_changed,
    describe,
    describe_tiers,
    described_value,
    parse_tier,
    setting_name,
)

if TYPE_CHECKING:
    from bot.app import ImagineBot

log = logging.getLogger(__name__)
T = TypeVar("T")
VALUE = command_text("value")
ADD_OPTION = command_text("add")
REMOVE_OPTION = command_text("remove")

MANAGERS_ONLY = _("Only members who can manage this server can change its /imagine settings.")
SETTINGS_UNAVAILABLE = _("The bot cannot read or save settings right now. Please try again soon.")
THE_DEFAULT = _("the default")
BACK_TO_DEFAULT = _("{setting} is back to the default: {value} (it was {was}).")
NOW = _("{setting} is now {value} (it was {was}).")
SHOW_TITLE = _("/imagine settings on this server")
IS_DEFAULT = _("{value} (default)")
CHANGED_BY = _("{value}\nchanged by {member} {when}")
RESET_CHOICE = _("{setting}: {description}")
NO_SERVER_SETTINGS = _(
    "There are no server settings here: this is not a server that installed the bot, so your "
    "own limits and budget apply. A server's managers change its settings in that server."
)
TOO_MANY_TIERS = ngettext(
    "A server can give tiers to at most {n} role: remove one first.",
    "A server can give tiers to at most {n} roles: remove one first.",
).format(n=MAX_TIERS)
TOO_MANY_BARRED = ngettext(
    "A server can bar at most {n} member one by one: bar a role instead, or lift a bar.",
    "A server can bar at most {n} members one by one: bar a role instead, or lift a bar.",
).format(n=MAX_BARRED)
NOT_EXEMPTED = _(
    "This bot's operator does not let servers exempt roles from its rate limit "
    "(SERVERS_MAY_EXEMPT_ROLES), so it still applies."
)
CEILING_STILL_APPLIES = _(
    "This bot's ceiling of {ceiling} per member, set by its operator, still applies."
)
NO_TIER = _("no tier")
TIER_REMOVED = _("{role} has no tier now (it was {was}).")
TIER_NOW = _("{role}'s tier is now {value} (it was {was}).")
MEMBER_BARRED = _("{member} is barred from this bot on this server.")
BAR_LIFTED = _("{member} is no longer barred (a role's bar still applies).")
ADD_OR_REMOVE = _("{setting} takes either add or remove.")
LIST_CHANGED = ngettext(
    "{setting}: {n} of this server's own (it had {had}): {shown}",
    "{setting}: {n} of this server's own (it had {had}): {shown}",
)
CANNOT_WRITE_LOG = _("⚠️ cannot be written to {problem}")
ROLE_TIERS = _("role tiers")
SHOWN_VALUE_CHARS = 200  # of an old value in an answer, which Discord caps at 2,000 characters


class SettingsCog(commands.Cog, name="Settings"):
    def __init__(self, bot: ImagineBot, services: Services) -> None:
        self.bot = bot
        self.services = services
        self.group = self._build()

    async def cog_load(self) -> None:
        self.bot.tree.add_command(self.group)

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.group.name)

    def _build(self) -> app_commands.Group:
        group = app_commands.Group(
            name=command_text("imagine-settings"),
            description=command_text("How /imagine behaves on this server"),
            default_permissions=discord.Permissions(manage_guild=True),
        )
        offered = [app_commands.Choice(name=name, value=name) for name in self.offered()][:25]
        settings = [
            app_commands.Choice(
                name=command_text(
                    RESET_CHOICE, setting=setting_name(item), description=DESCRIPTIONS[item]
                ),
                value=item.value,
            )
            for item in Setting
        ]

        def described(setting: Setting) -> app_commands.locale_str:
            return command_text(DESCRIPTIONS[setting])

        @group.command(
            name=command_text("show"),
            description=command_text("This server's settings and who changed them"),
        )
        async def show(interaction: discord.Interaction) -> None:
            await self.show(interaction)

        @group.command(name=command_text("models"), description=described(Setting.MODELS))
        @app_commands.rename(value=VALUE)
        @app_commands.describe(value=command_text("Model names separated by commas"))
        async def models(interaction: discord.Interaction, value: str) -> None:
            await self.change(interaction, Setting.MODELS, value)

        @group.command(
            name=command_text("default-model"), description=described(Setting.DEFAULT_MODEL)
        )
        @app_commands.rename(value=VALUE)
        @app_commands.choices(value=offered)
        async def default_model(interaction: discord.Interaction, value: str) -> None:
            await self.change(interaction, Setting.DEFAULT_MODEL, value)

        @group.command(
            name=command_text("default-quality"), description=described(Setting.DEFAULT_QUALITY)
        )
        @app_commands.rename(value=VALUE)
        @app_commands.describe(
            value=command_text("low, medium, high, ... (what the allowed models take)")
        )
        async def default_quality(interaction: discord.Interaction, value: str) -> None:
            await self.change(interaction, Setting.DEFAULT_QUALITY, value)

        @group.command(name=command_text("max-images"), description=described(Setting.MAX_IMAGES))
        @app_commands.rename(value=VALUE)
        async def max_images(
            interaction: discord.Interaction, value: app_commands.Range[int, 1, 10]
        ) -> None:
            await self.change(interaction, Setting.MAX_IMAGES, str(value))

        @group.command(
            name=command_text("member-budget"), description=described(Setting.MEMBER_BUDGET)
        )
        @app_commands.rename(value=VALUE)
        @app_commands.describe(
            value=command_text("Such as $2/day;$20/month;40 images/month, or none")
        )
        async def member_budget(interaction: discord.Interaction, value: str) -> None:
            await self.change(interaction, Setting.MEMBER_BUDGET, value)

        @group.command(
            name=command_text("server-budget"), description=described(Setting.SERVER_BUDGET)
        )
        @app_commands.rename(value=VALUE)
        @app_commands.describe(value=command_text("Such as $50/month;1000 images/month, or none"))
        async def server_budget(interaction: discord.Interaction, value: str) -> None:
            await self.change(interaction, Setting.SERVER_BUDGET, value)

        @group.command(name=command_text("channels"), description=described(Setting.CHANNELS))
        @app_commands.rename(value=VALUE)
        @app_commands.describe(value=command_text("Channels mentioned with #, such as #art #memes"))
        async def channels(interaction: discord.Interaction, value: str) -> None:
            await self.change(interaction, Setting.CHANNELS, value)

        @group.command(name=command_text("previews"), description=described(Setting.PREVIEWS))
        async def previews(interaction: discord.Interaction, on: bool) -> None:
            await self.change(interaction, Setting.PREVIEWS, "on" if on else "off")

        @group.command(
            name=command_text("age-restricted"), description=described(Setting.AGE_RESTRICTED)
        )
        async def age_restricted(interaction: discord.Interaction, on: bool) -> None:
            await self.change(interaction, Setting.AGE_RESTRICTED, "on" if on else "off")

        @group.command(name=command_text("spoilers"), description=described(Setting.SPOILERS))
        @app_commands.rename(value=VALUE)
        @app_commands.describe(value=command_text("always, off, or channels mentioned with #"))
        async def spoilers(interaction: discord.Interaction, value: str) -> None:
            await self.change(interaction, Setting.SPOILERS, value)

        @group.command(name=command_text("log-channel"), description=described(Setting.LOG_CHANNEL))
        @app_commands.rename(value=VALUE)
        @app_commands.describe(value=command_text("One channel mentioned with #, such as #mod-log"))
        async def log_channel(interaction: discord.Interaction, value: str) -> None:
            await self.change(interaction, Setting.LOG_CHANNEL, value)

        @group.command(
            name=command_text("role-tier"),
            description=command_text("A role's budgets, rate-limit exemption or bar"),
        )
        @app_commands.rename(role=command_text("role"), value=VALUE)
        @app_commands.describe(
            value=command_text(
                "Such as $5/month;50 images/day;exempt, or barred, or none to remove the tier"
            )
        )
        async def role_tier(
            interaction: discord.Interaction, role: discord.Role, value: str
        ) -> None:
            await self.change_tier(interaction, role, value)

        @group.command(
            name=command_text("bar-member"),
            description=command_text("Bar one member from the bot, or lift it"),
        )
        @app_commands.rename(member=command_text("member"), barred=command_text("barred"))
        async def bar_member(
            interaction: discord.Interaction, member: discord.Member, barred: bool
        ) -> None:
            await self.bar(interaction, member, barred)

        @group.command(
            name=command_text("blocked-words"), description=described(Setting.BLOCKED_WORDS)
        )
        @app_commands.rename(add=ADD_OPTION, remove=REMOVE_OPTION)
        @app_commands.describe(
            add=command_text("Words or phrases to block, separated by commas"),
            remove=command_text("Words or phrases to block no more, separated by commas"),
        )
        async def blocked_words(
            interaction: discord.Interaction, add: str | None = None, remove: str | None = None
        ) -> None:
            await self.change_list(interaction, Setting.BLOCKED_WORDS, add, remove)

        @group.command(
            name=command_text("blocked-patterns"), description=described(Setting.BLOCKED_PATTERNS)
        )
        @app_commands.rename(add=ADD_OPTION, remove=REMOVE_OPTION)
        @app_commands.describe(
            add=command_text(
                "One regular expression (RE2), matched on the prompt in lower case without accents"
            ),
            remove=command_text("A pattern to block no more, exactly as it was added"),
        )
        async def blocked_patterns(
            interaction: discord.Interaction, add: str | None = None, remove: str | None = None
        ) -> None:
            await self.change_list(interaction, Setting.BLOCKED_PATTERNS, add, remove)

        @group.command(name=command_text("moderation"), description=described(Setting.MODERATION))
        @app_commands.rename(value=VALUE)
        @app_commands.describe(
            value=command_text(
                "off, on, or strict (for children); then any category=score, such as violence=0.6"
            )
        )
        async def moderation(interaction: discord.Interaction, value: str) -> None:
            await self.change(interaction, Setting.MODERATION, value)

        @group.command(
            name=command_text("reset"),
            description=command_text("Put a setting back to the bot's default"),
        )
        @app_commands.rename(setting=command_text("setting"))
        @app_commands.choices(setting=settings)
        async def reset(interaction: discord.Interaction, setting: str) -> None:
            await self.change(interaction, Setting(setting), None)

        return group

    async def change_list(
        self,
        interaction: discord.Interaction,
        setting: Setting,
        add: str | None,
        remove: str | None,
    ) -> None:
        """Add entries to a blocklist, or remove them (one of the two)."""
        if (add is None) == (remove is None):
            if interaction.guild is None or not interaction.permissions.manage_guild:
                await _answer(interaction, MANAGERS_ONLY)
                return
            await _answer(interaction, ADD_OR_REMOVE.format(setting=setting_name(setting)))
            return
        await self.change(
            interaction, setting, ADD + add if add is not None else REMOVE + str(remove)
        )

    def offered(self) -> tuple[str, ...]:
        return self.services.server_rules.offered

    async def change(
        self, interaction: discord.Interaction, setting: Setting, text: str | None
    ) -> None:
        """Check and store one setting (``text`` None: reset it), recording who and when."""
        guild = interaction.guild
        if await _refused_outside_servers(interaction):
            return
        if guild is None or not interaction.permissions.manage_guild:
            await _answer(interaction, MANAGERS_ONLY)
            return
        store, rules = self.services.server_settings, self.services.server_rules

        async def store_it() -> tuple[str | None, str | None, ServerSettings]:
            chosen = await store.get(guild.id)
            value = None
            if text is not None and setting in BLOCKLISTS:
                # The new list is compiled to see that it fits: a fifth of a second for 10,000
                # entries, off the event loop (and then it is compiled for the requests too).
                value = await asyncio.to_thread(rules.parse, setting, text, chosen)
                value = value or None  # emptied: back to the operator's words alone
            elif text is not None:
                value = rules.parse(
                    setting,
                    text,
                    chosen,
                    channel_exists=lambda channel: guild.get_channel_or_thread(channel) is not None,
                )
            old = await store.change(guild.id, setting, value, by=interaction.user.id)
            return value, old, await store.get(guild.id)

        try:
            value, old, now = await _within_patience(interaction, store_it())
        except SettingRefused as refusal:
            await _answer(interaction, refusal.sentence)
            return
        except Exception:
            log.exception("could not change the setting %s of a server", setting.value)
            await _answer(interaction, SETTINGS_UNAVAILABLE)
            return
        pseudonyms = self.services.pseudonyms  # no raw Discord id above DEBUG
        log.info(
            "%s changed %s of %s from %r to %r",
            pseudonyms.for_user(interaction.user.id), setting.value,
            pseudonyms.for_server(guild.id), _loggable(setting, old), _loggable(setting, value),
        )  # fmt: skip
        shown = describe(setting, value, rules, now)
        # Channels are mentioned, as many as fit; any other value stored before is clipped.
        was = THE_DEFAULT if old is None else _clipped(described_value(setting, old), setting)
        name = setting_name(setting)
        answer: str
        if value is None:
            answer = BACK_TO_DEFAULT.format(setting=name, value=shown, was=was)
        elif setting in BLOCKLISTS:
            had = 0 if old is None else len(old.splitlines())
            answer = LIST_CHANGED.format(
                setting=name, n=len(value.splitlines()), had=had, shown=shown
            )
        elif setting in BUDGETS:  # the operator's ceiling may be what applies
            answer = budget_changed(setting, value, was, rules, now)
        else:
            answer = NOW.format(setting=name, value=shown, was=was)
        await _answer(interaction, answer)

    async def show(self, interaction: discord.Interaction) -> None:
        guild = interaction.guild
        if await _refused_outside_servers(interaction):
            return
        if guild is None or not interaction.permissions.manage_guild:
            await _answer(interaction, MANAGERS_ONLY)
            return
        store, rules = self.services.server_settings, self.services.server_rules

        async def read() -> tuple[ServerSettings, dict[str, Any]]:
            return await store.get(guild.id), await store.last_changes(guild.id)

        try:
            chosen, changes = await _within_patience(interaction, read())
        except Exception:
            log.exception("could not read a server's settings")
            await _answer(interaction, SETTINGS_UNAVAILABLE)
            return
        locale = interaction.locale
        embed = discord.Embed(title=SHOW_TITLE.localized(locale))
        problem = self.bot.admission.moderation_log.problem(guild.id)
        for setting in Setting:
            raw = chosen.raw(setting)
            value = describe(setting, raw, rules, chosen)
            change = changes.get(setting.value)
            if raw is None and setting is not Setting.PREVIEWS:
                value = IS_DEFAULT.format(value=value)
            if change is not None:
                when = discord.utils.format_dt(change.changed_at, "R")
                member = f"<@{change.changed_by}>"
                value = CHANGED_BY.format(value=value, member=member, when=when)
            if setting is Setting.LOG_CHANNEL and problem is not None:
                value = joined([value, CANNOT_WRITE_LOG.format(problem=problem)], "\n")
            shown = localize(value, locale)
            embed.add_field(
                name=setting_name(setting).localized(locale), value=clip(shown, 1024), inline=False
            )
        embed.add_field(
            name=ROLE_TIERS.localized(locale),
            value=clip(describe_tiers(chosen, locale), 1024),
            inline=False,
        )
        await _answer(interaction, embed=embed)

    async def change_tier(
        self, interaction: discord.Interaction, role: discord.Role, text: str
    ) -> None:
        """Set (or with ``none`` remove) a role's tier."""
        guild = interaction.guild
        if guild is None or not interaction.permissions.manage_guild:
            await _answer(interaction, MANAGERS_ONLY)
            return
        store, rules = self.services.server_settings, self.services.server_rules
        name = f"{TIER_PREFIX}{role.id}"

        async def store_it() -> tuple[str | None, str | None]:
            chosen = await store.get(guild.id)
            value = None
            if text.strip().lower() != NO_BUDGET:
                value = str(parse_tier(text))
                if name not in chosen.values and len(chosen.tiers) >= MAX_TIERS:
                    raise SettingRefused(TOO_MANY_TIERS)
            return value, await store.change(guild.id, name, value, by=interaction.user.id)

        stored = await _saved(interaction, store_it(), "change a role's tier")
        if stored is None:
            return
        value, old = stored[0]
        pseudonyms = self.services.pseudonyms
        log.info(
            "%s changed a role's tier on %s from %r to %r",
            pseudonyms.for_user(interaction.user.id), pseudonyms.for_server(guild.id), old, value,
        )  # fmt: skip
        was = NO_TIER if old is None else old
        answer: Text
        if value is None:
            answer = TIER_REMOVED.format(role=role.mention, was=was)
        else:
            answer = TIER_NOW.format(role=role.mention, value=value, was=was)
            if "exempt" in value.split(";") and not rules.servers_may_exempt_roles:
                answer = joined([answer, NOT_EXEMPTED])
            ceiling = rules.ceiling(Setting.MEMBER_BUDGET)
            if ceiling and parse_tier(value).budgets and not rules.servers_may_raise_budgets:
                still = CEILING_STILL_APPLIES.format(ceiling=";".join(map(str, ceiling)))
                answer = joined([answer, still])
        await _answer(interaction, answer)

    async def bar(
        self, interaction: discord.Interaction, member: discord.Member, barred: bool
    ) -> None:
        """Bar one member from the bot on this server, or lift the bar."""
        guild = interaction.guild
        if guild is None or not interaction.permissions.manage_guild:
            await _answer(interaction, MANAGERS_ONLY)
            return
        store = self.services.server_settings
        name = f"{BAR_PREFIX}{member.id}"

        async def store_it() -> str | None:
            chosen = await store.get(guild.id)
            if barred and name not in chosen.values and len(chosen.barred_members) >= MAX_BARRED:
                raise SettingRefused(TOO_MANY_BARRED)
            value = "barred" if barred else None
            return await store.change(guild.id, name, value, by=interaction.user.id)

        if await _saved(interaction, store_it(), "bar or lift the bar of a member") is None:
            return
        pseudonyms = self.services.pseudonyms
        log.info(
            "%s %s %s on %s",
            pseudonyms.for_user(interaction.user.id), "barred" if barred else "lifted the bar of",
            pseudonyms.for_user(member.id), pseudonyms.for_server(guild.id),
        )  # fmt: skip
        answer = (MEMBER_BARRED if barred else BAR_LIFTED).format(member=member.mention)
        await _answer(interaction, answer)


def _clipped(value: str, setting: Setting | None = None) -> str:
    """A value stored before, as the answer repeats it: an older version took any length (a
    list of channels is summarised already, "and N more")."""
    if setting in (Setting.CHANNELS, *BLOCKLISTS) or len(value) <= SHOWN_VALUE_CHARS:
        return value
    return value[: SHOWN_VALUE_CHARS - 1] + "…"


def _loggable(setting: Setting, value: str | None) -> str | None:
    """A setting's value for a log line: channels are Discord ids, so only how many."""
    if setting in BLOCKLISTS and value is not None:  # long, and better not repeated in logs
        return f"{len(value.splitlines())} entries"
    if setting not in (Setting.CHANNELS, Setting.SPOILERS, Setting.LOG_CHANNEL) or value is None:
        return value
    if not value[:1].isdigit():  # spoilers: always or off
        return value
    return f"{len([part for part in value.split(',') if part.strip()])} channel(s)"


async def _saved(
    interaction: discord.Interaction, work: Coroutine[Any, Any, T], what: str
) -> tuple[T] | None:
    """``work``'s result (in a 1-tuple), or None once the manager has been told why it was
    not saved: a refusal's sentence, or that the settings are unavailable."""
    try:
        return (await _within_patience(interaction, work),)
    except SettingRefused as refusal:
        await _answer(interaction, refusal.sentence)
    except Exception:
        log.exception("could not %s on a server", what)
        await _answer(interaction, SETTINGS_UNAVAILABLE)
    return None


async def _within_patience(interaction: discord.Interaction, work: Coroutine[Any, Any, T]) -> T:
    """``work``'s result; a slow database gets the interaction deferred (privately) first, so
    that Discord's 3 seconds never run out."""
    task = asyncio.ensure_future(work)
    done, _ = await asyncio.wait({task}, timeout=time_to_acknowledge(interaction))
    if not done:
        await interaction.response.defer(ephemeral=True, thinking=True)
    return await task


async def _answer(
    interaction: discord.Interaction,
    content: str | None = None,
    *,
    embed: discord.Embed | None = None,
) -> None:
    """The private answer, as the reply or, once deferred, as its follow-up, within Discord's
    limits (a value a manager typed can be long: an answer too long would never be shown)."""
    content = None if content is None else fit_content(localize(content, interaction.locale))
    embed = None if embed is None else fit_embed(embed)
    if interaction.response.is_done():
        if embed is None:
            await interaction.followup.send(content or "", ephemeral=True)
        else:
            await interaction.followup.send(content or "", embed=embed, ephemeral=True)
    elif embed is None:
        await interaction.response.send_message(content, ephemeral=True)
    else:
        await interaction.response.send_message(content, embed=embed, ephemeral=True)


async def _refused_outside_servers(interaction: discord.Interaction) -> bool:
    """Outside a server that installed the bot (a DM, a group DM, a user install in another
    server) there are no server settings: the member is told so (True)."""
    if not where(interaction).personal:
        return False
    await interaction.response.send_message(
        NO_SERVER_SETTINGS.localized(interaction.locale), ephemeral=True
    )
    return True
