"""/usage: a member's own spend, budgets and recent requests; for the server's managers
(``scope:server``) its totals, top members, models, a chart of 30 days and a CSV of the rows.

Every figure comes from :mod:`bot.store.usage`, the queries ``python -m bot usage`` prints, and what
is
left of a budget from :func:`bot.store.ledger.counted_since`, what the budget check itself counts.
Everything is private (ephemeral). Outside a server that installed the bot (a DM, a group DM, a
user install in another server) a member's own view is their personal scope (bot/requests/where.py)
and ``scope:server`` is refused; in a server, their personal spending this month gets a line.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import io
import logging
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.discord_out.replies import DISCORD_FAILURES, fit_embed
from bot.i18n import Text, _, money, ngettext
from bot.i18n.commands import command_text
from bot.requests.server_admission import role_ids
from bot.requests.where import where
from bot.services import Services
from bot.store.budgets import Budget, Period
from bot.store.ledger import counted_since
from bot.store.server_settings import MemberTier
from bot.store.usage import Totals, daily, ledger_rows, overall, recent, totals, write_csv_to
from bot.store.usage_chart import render_chart

if TYPE_CHECKING:
    from bot.app import ImagineBot

log = logging.getLogger(__name__)

USAGE_UNAVAILABLE = _("The bot cannot read usage right now. Please try again soon.")
MANAGERS_ONLY = _("Only members who can manage this server see its usage.")
YOUR_USAGE = _("Your usage on this server")
SERVER_USAGE = _("This server's usage")
TODAY = _("Today (UTC)")
THIS_MONTH = _("This month (UTC)")
LAST_DAYS = _("Last {n} days (UTC, the chart and the CSV)")
BUDGETS = _("Budgets")
NO_BUDGET = _("No budget on this server.")
LATEST = _("Your latest requests")
NONE_YET = _("None yet.")
NONE = _("None.")
TOP = _("Top members this month")
BY_MODEL = _("By model this month")
YOURS = _("Yours: {line}")
THE_SERVERS = _("The server's: {line}")
YOURS_EVERYWHERE = _("Yours on every server: {line}")
BUDGET_LINE = _("{budget}: {used} used or reserved, {left} left, resets {resets}")
TOTALS = _("{cost} · {images} · {requests}")
IMAGES = ngettext("{n} image", "{n} images")
REQUESTS = ngettext("{n} request", "{n} requests")
UNKNOWN_COST = _("{totals} ({n} of unknown cost or still running)")
REQUEST_LINE = ngettext(
    "{when} {model} {size} {quality} {n} image: {outcome}, {cost}",
    "{when} {model} {size} {quality} {n} images: {outcome}, {cost}",
)
COST_UNKNOWN = _("cost unknown")
# How each ledger outcome reads in a member's list of requests.
OUTCOMES = {
    "pending": _("pending"),
    "delivered": _("delivered"),
    "refused": _("refused"),
    "failed": _("failed"),
    "cancelled": _("cancelled"),
    "abandoned": _("abandoned"),
}
NO_SERVER_HERE = _(
    "This is not a server that installed the bot, so there is no server usage here: "
    "/usage shows your personal spending."
)
PERSONAL_TITLE = _("Your personal usage (DMs, group DMs, servers without the bot)")
PERSONAL_FIELD = _("Personal (DMs and servers without the bot)")
THIS_MONTH_TOTALS = _("This month: {totals}")
YOURS_PERSONAL = _("Yours (personal): {line}")
YOURS_ANYWHERE = _("Yours everywhere: {line}")
NO_PERSONAL_BUDGET = _("No personal budget.")
YOUR_TIER = _("Your tier")
BARRED_HERE = _("Barred from this bot on this server by its managers.")
NO_TIER = _("None: this server's budget for each member applies.")
ROLES_TIER = _("{roles} (the most generous of your roles' tiers applies)")
ROLES_TIER_EXEMPT = _(
    "{roles} (the most generous of your roles' tiers applies), exempt from the rate limit"
)
CHART_DAYS = 30
TOP_MEMBERS = 10
RECENT_REQUESTS = 10
CHART_FILE = "usage-30-days.png"
CSV_FILE = "usage-30-days.csv"
CHART_DESCRIPTION = _("Cost and images per day")
CSV_TOO_LARGE = _(
    "The CSV is too large to attach here: the operator can write it with "
    "python -m bot usage --server {guild_id} --csv FILE"
)
FIELD_MAX = 1024  # Discord's longest embed field value


class UsageCog(commands.Cog, name="Usage"):
    def __init__(self, bot: ImagineBot, services: Services) -> None:
        self.bot = bot
        self.services = services
        self.command = self._build()

    async def cog_load(self) -> None:
        self.bot.tree.add_command(self.command)

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.command.name)

    def _build(self) -> app_commands.Command[Any, ..., None]:
        @app_commands.command(
            name=command_text("usage"),
            description=command_text("What you have spent on images here"),
        )
        @app_commands.rename(scope=command_text("scope"))
        @app_commands.describe(
            scope=command_text("Yours, or (for its managers) the whole server's")
        )
        @app_commands.choices(
            scope=[
                app_commands.Choice(name=command_text("mine"), value="mine"),
                app_commands.Choice(
                    name=command_text("server (managers: chart and CSV)"), value="server"
                ),
            ]
        )
        async def usage(interaction: discord.Interaction, scope: str = "mine") -> None:
            if scope == "server":
                await self.server_usage(interaction)
            else:
                await self.member_usage(interaction)

        return usage

    # -- a member's own --------------------------------------------------------------------------

    async def member_usage(self, interaction: discord.Interaction) -> None:
        guild_id = where(interaction).guild_id  # None: the member's personal scope
        # Several queries: a busy database must not outlast Discord's 3 seconds to answer.
        await interaction.response.defer(ephemeral=True, thinking=True)
        try:
            if guild_id is None:
                embed = await self._personal_embed(interaction.user.id, interaction.locale)
            else:
                embed = await self._member_embed(
                    guild_id, interaction.user.id, interaction.locale, role_ids(interaction.user)
                )
        except Exception:
            log.exception("could not read a member's usage")
            await interaction.edit_original_response(
                content=USAGE_UNAVAILABLE.localized(interaction.locale)
            )
            return
        await interaction.edit_original_response(embed=fit_embed(embed))

    async def _member_embed(
        self,
        guild_id: int,
        member_id: int,
        locale: discord.Locale,
        roles: tuple[int, ...] = (),
    ) -> discord.Embed:
        engine = self.services.ledger.engine
        now = discord.utils.utcnow()  # the clock the rows are stamped with
        today = await overall(engine, Period.DAY.start(now), guild_id, member_id)
        month = await overall(engine, Period.MONTH.start(now), guild_id, member_id)
        embed = discord.Embed(title=YOUR_USAGE.localized(locale))
        embed.add_field(
            name=TODAY.localized(locale), value=_totals_line(today, locale), inline=False
        )
        embed.add_field(
            name=THIS_MONTH.localized(locale), value=_totals_line(month, locale), inline=False
        )
        chosen = await self.services.server_settings.get(guild_id)
        rules = self.services.server_rules
        tier = rules.member_tier(chosen, member_id, roles)
        embed.add_field(
            name=YOUR_TIER.localized(locale), value=_clip(_tier_line(tier, locale)), inline=False
        )
        lines = []
        # USER_BUDGET counts the member's requests in every server and direct message; the
        # bot's TOTAL_BUDGET is not shown: what everyone else spends is not theirs to read.
        for whose, budgets, member, every_server in (
            (YOURS, tier.budgets, member_id, False),
            (THE_SERVERS, rules.server_budget(chosen), None, False),
            (YOURS_EVERYWHERE, self.services.ledger.user_budget, member_id, True),
        ):
            for budget in budgets:
                line = await self._budget_line(budget, guild_id, member, now, every_server)
                lines.append(whose.format(line=line).localized(locale))
        budget_lines = "\n".join(lines) or NO_BUDGET.localized(locale)
        embed.add_field(name=BUDGETS.localized(locale), value=_clip(budget_lines), inline=False)
        rows = await recent(engine, guild_id, member_id, RECENT_REQUESTS)
        latest = "\n".join(_request_line(row).localized(locale) for row in rows)
        embed.add_field(
            name=LATEST.localized(locale),
            value=_clip(latest or NONE_YET.localized(locale)),
            inline=False,
        )
        personal = await overall(engine, Period.MONTH.start(now), None, member_id, personal=True)
        if personal.requests:
            embed.add_field(
                name=PERSONAL_FIELD.localized(locale),
                value=THIS_MONTH_TOTALS.format(totals=_totals_line(personal, locale)).localized(
                    locale
                ),
                inline=False,
            )
        return embed

    async def _personal_embed(self, member_id: int, locale: discord.Locale) -> discord.Embed:
        """The member's personal scope: what they spent outside every server that installed
        the bot (DMs, group DMs, servers where they use their own install), and its budgets."""
        engine = self.services.ledger.engine
        ledger = self.services.ledger
        now = discord.utils.utcnow()
        since_day, since_month = Period.DAY.start(now), Period.MONTH.start(now)
        today = await overall(engine, since_day, None, member_id, personal=True)
        month = await overall(engine, since_month, None, member_id, personal=True)
        embed = discord.Embed(title=PERSONAL_TITLE.localized(locale))
        embed.add_field(
            name=TODAY.localized(locale), value=_totals_line(today, locale), inline=False
        )
        embed.add_field(
            name=THIS_MONTH.localized(locale), value=_totals_line(month, locale), inline=False
        )
        lines = []
        for whose, budgets, every_server in (
            (YOURS_PERSONAL, ledger.member_budget, False),
            (YOURS_ANYWHERE, ledger.user_budget, True),
        ):
            for budget in budgets:
                line = await self._budget_line(budget, None, member_id, now, every_server)
                lines.append(whose.format(line=line).localized(locale))
        budget_lines = "\n".join(lines) or NO_PERSONAL_BUDGET.localized(locale)
        embed.add_field(name=BUDGETS.localized(locale), value=_clip(budget_lines), inline=False)
        rows = await recent(engine, None, member_id, RECENT_REQUESTS, personal=True)
        latest = "\n".join(_request_line(row).localized(locale) for row in rows)
        embed.add_field(
            name=LATEST.localized(locale),
            value=_clip(latest or NONE_YET.localized(locale)),
            inline=False,
        )
        return embed

    async def _budget_line(
        self,
        budget: Budget,
        guild_id: int | None,
        member_id: int | None,
        now: dt.datetime,
        every_server: bool,
    ) -> Text:
        async with self.services.ledger.engine.connect() as connection:
            used = await counted_since(
                connection,
                budget.period.start(now),
                guild_id,
                member_id,
                images=budget.images,
                every_server=every_server,
            )
        left = max(budget.amount - used, Decimal(0))
        resets = discord.utils.format_dt(budget.period.reset(now), "R")
        return BUDGET_LINE.format(
            budget=budget.per_period(),
            used=budget.describe(used),
            left=budget.describe(left),
            resets=resets,
        )

    # -- the server's, for its managers --------------------------------------------------------

    async def server_usage(self, interaction: discord.Interaction) -> None:
        if where(interaction).personal or interaction.guild_id is None:
            await interaction.response.send_message(
                NO_SERVER_HERE.localized(interaction.locale), ephemeral=True
            )
            return
        if not interaction.permissions.manage_guild:
            await interaction.response.send_message(
                MANAGERS_ONLY.localized(interaction.locale), ephemeral=True
            )
            return
        # The chart is drawn in a worker thread and the rows read: acknowledge first.
        await interaction.response.defer(ephemeral=True, thinking=True)
        try:
            locale = interaction.locale
            embed, chart, table = await self._server_report(interaction.guild_id, locale)
            described = CHART_DESCRIPTION.localized(locale)
            files = [discord.File(io.BytesIO(chart), CHART_FILE, description=described)]
            if len(chart) + len(table) <= interaction.filesize_limit:
                files.append(discord.File(io.BytesIO(table), CSV_FILE))
            else:
                too_large = CSV_TOO_LARGE.format(guild_id=str(interaction.guild_id))
                embed.set_footer(text=too_large.localized(locale))
            await interaction.edit_original_response(embed=fit_embed(embed), attachments=files)
        except Exception:
            log.exception("could not report a server's usage")
            with contextlib.suppress(*DISCORD_FAILURES):
                await interaction.edit_original_response(
                    content=USAGE_UNAVAILABLE.localized(interaction.locale),
                    embed=None,
                    attachments=[],
                )

    async def _server_report(
        self, guild_id: int, locale: discord.Locale
    ) -> tuple[discord.Embed, bytes, bytes]:
        """The server's report: its embed, the chart (PNG) and the CSV of its rows."""
        engine = self.services.ledger.engine
        now = discord.utils.utcnow()  # the clock the rows are stamped with
        first_day = now.date() - dt.timedelta(days=CHART_DAYS - 1)
        month_start = Period.MONTH.start(now)
        embed = discord.Embed(title=SERVER_USAGE.localized(locale))
        for name, since in (
            (TODAY, Period.DAY.start(now)),
            (THIS_MONTH, month_start),
            (LAST_DAYS.format(n=CHART_DAYS), first_day),
        ):
            line = _totals_line(await overall(engine, since, guild_id), locale)
            embed.add_field(name=name.localized(locale), value=line, inline=False)
        by_model, by_member = await totals(engine, month_start, guild_id)
        top = sorted(by_member, key=lambda row: (-row.cost, -row.requests))[:TOP_MEMBERS]
        none = NONE.localized(locale)
        embed.add_field(
            name=TOP.localized(locale),
            value=_clip(
                "\n".join(f"<@{row.key}>: {_totals_line(row, locale)}" for row in top) or none
            ),
            inline=False,
        )
        models = sorted(by_model, key=lambda row: (-row.cost, -row.requests))
        embed.add_field(
            name=BY_MODEL.localized(locale),
            value=_clip(
                "\n".join(f"{row.key}: {_totals_line(row, locale)}" for row in models) or none
            ),
            inline=False,
        )
        days = await daily(engine, first_day, now.date(), guild_id)
        chart = await asyncio.to_thread(render_chart, days)
        rows = await ledger_rows(engine, first_day, guild_id)
        table = await asyncio.to_thread(_csv_bytes, rows)  # a busy server has tens of thousands
        embed.set_image(url=f"attachment://{CHART_FILE}")
        return embed, chart, table


def _csv_bytes(rows: Any) -> bytes:
    text = io.StringIO()
    write_csv_to(text, rows)
    return text.getvalue().encode()


def _totals_line(totals: Totals, locale: discord.Locale) -> str:
    line = TOTALS.format(
        cost=money(totals.cost),
        images=IMAGES.format(n=totals.images),
        requests=REQUESTS.format(n=totals.requests),
    )
    if totals.unknown_cost:
        line = UNKNOWN_COST.format(totals=line, n=totals.unknown_cost)
    return line.localized(locale)


def _request_line(row: Any) -> Text:
    at = row.requested_at if row.requested_at.tzinfo else row.requested_at.replace(tzinfo=dt.UTC)
    cost = money(Decimal(str(row.cost))) if row.cost is not None else COST_UNKNOWN
    return REQUEST_LINE.format(
        when=discord.utils.format_dt(at, "R"),
        model=row.model,
        size=row.size,
        quality=row.quality,
        n=row.images_requested,
        outcome=OUTCOMES.get(row.outcome, row.outcome),
        cost=cost,
    )


def _tier_line(tier: MemberTier, locale: object = None) -> str:
    """Which tier a member is on: their roles' (the most generous applies), or the server's."""
    if tier.barred:
        return BARRED_HERE.localized(locale)
    if not tier.roles:
        return NO_TIER.localized(locale)
    roles = " ".join(f"<@&{role}>" for role in tier.roles)
    return (ROLES_TIER_EXEMPT if tier.exempt else ROLES_TIER).format(roles=roles).localized(locale)


def _clip(text: str) -> str:
    if len(text) <= FIELD_MAX:
        return text
    return text[: text.rfind("\n", 0, FIELD_MAX - 2)] + "\n…"
