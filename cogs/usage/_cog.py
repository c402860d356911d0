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
from bot.images.pricing import format_usd
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

USAGE_UNAVAILABLE = "The bot cannot read usage right now. Please try again soon."
MANAGERS_ONLY = "Only members who can manage this server see its usage."
NO_SERVER_HERE = (
    "This is not a server that installed the bot, so there is no server usage here: "
    "/usage shows your personal spending."
)
PERSONAL_TITLE = "Your personal usage (DMs, group DMs, servers without the bot)"
PERSONAL_FIELD = "Personal (DMs and servers without the bot)"
CHART_DAYS = 30
TOP_MEMBERS = 10
RECENT_REQUESTS = 10
CHART_FILE = "usage-30-days.png"
CSV_FILE = "usage-30-days.csv"
CHART_DESCRIPTION = "Cost and images per day"
CSV_TOO_LARGE = (
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
        @app_commands.command(name="usage", description="What you have spent on images here")
        @app_commands.describe(scope="Yours, or (for its managers) the whole server's")
        @app_commands.choices(
            scope=[
                app_commands.Choice(name="mine", value="mine"),
                app_commands.Choice(name="server (managers: chart and CSV)", value="server"),
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
                embed = await self._personal_embed(interaction.user.id)
            else:
                embed = await self._member_embed(
                    guild_id, interaction.user.id, role_ids(interaction.user)
                )
        except Exception:
            log.exception("could not read a member's usage")
            await interaction.edit_original_response(content=USAGE_UNAVAILABLE)
            return
        await interaction.edit_original_response(embed=fit_embed(embed))

    async def _member_embed(
        self, guild_id: int, member_id: int, roles: tuple[int, ...] = ()
    ) -> discord.Embed:
        engine = self.services.ledger.engine
        now = discord.utils.utcnow()  # the clock the rows are stamped with
        today = await overall(engine, Period.DAY.start(now), guild_id, member_id)
        month = await overall(engine, Period.MONTH.start(now), guild_id, member_id)
        embed = discord.Embed(title="Your usage on this server")
        embed.add_field(name="Today (UTC)", value=_totals_line(today), inline=False)
        embed.add_field(name="This month (UTC)", value=_totals_line(month), inline=False)
        chosen = await self.services.server_settings.get(guild_id)
        rules = self.services.server_rules
        tier = rules.member_tier(chosen, member_id, roles)
        embed.add_field(name="Your tier", value=_clip(_tier_line(tier)), inline=False)
        lines = []
        # USER_BUDGET counts the member's requests in every server and direct message; the
        # bot's TOTAL_BUDGET is not shown: what everyone else spends is not theirs to read.
        for whose, budgets, member, every_server in (
            ("Yours", tier.budgets, member_id, False),
            ("The server's", rules.server_budget(chosen), None, False),
            ("Yours on every server", self.services.ledger.user_budget, member_id, True),
        ):
            for budget in budgets:
                line = await self._budget_line(budget, guild_id, member, now, every_server)
                lines.append(f"{whose}: {line}")
        budget_lines = "\n".join(lines) or "No budget on this server."
        embed.add_field(name="Budgets", value=_clip(budget_lines), inline=False)
        rows = await recent(engine, guild_id, member_id, RECENT_REQUESTS)
        embed.add_field(
            name="Your latest requests",
            value=_clip("\n".join(_request_line(row) for row in rows) or "None yet."),
            inline=False,
        )
        personal = await overall(engine, Period.MONTH.start(now), None, member_id, personal=True)
        if personal.requests:
            embed.add_field(
                name=PERSONAL_FIELD, value=f"This month: {_totals_line(personal)}", inline=False
            )
        return embed

    async def _personal_embed(self, member_id: int) -> discord.Embed:
        """The member's personal scope: what they spent outside every server that installed
        the bot (DMs, group DMs, servers where they use their own install), and its budgets."""
        engine = self.services.ledger.engine
        ledger = self.services.ledger
        now = discord.utils.utcnow()
        since_day, since_month = Period.DAY.start(now), Period.MONTH.start(now)
        today = await overall(engine, since_day, None, member_id, personal=True)
        month = await overall(engine, since_month, None, member_id, personal=True)
        embed = discord.Embed(title=PERSONAL_TITLE)
        embed.add_field(name="Today (UTC)", value=_totals_line(today), inline=False)
        embed.add_field(name="This month (UTC)", value=_totals_line(month), inline=False)
        lines = []
        for whose, budgets, every_server in (
            ("Yours (personal)", ledger.member_budget, False),
            ("Yours everywhere", ledger.user_budget, True),
        ):
            for budget in budgets:
                line = await self._budget_line(budget, None, member_id, now, every_server)
                lines.append(f"{whose}: {line}")
        embed.add_field(
            name="Budgets", value=_clip("\n".join(lines) or "No personal budget."), inline=False
        )
        rows = await recent(engine, None, member_id, RECENT_REQUESTS, personal=True)
        embed.add_field(
            name="Your latest requests",
            value=_clip("\n".join(_request_line(row) for row in rows) or "None yet."),
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
    ) -> str:
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
        return (
            f"{budget.describe()} per {budget.period.value}: {budget.describe(used)} used or "
            f"reserved, {budget.describe(left)} left, resets {resets}"
        )

    # -- the server's, for its managers --------------------------------------------------------

    async def server_usage(self, interaction: discord.Interaction) -> None:
        if where(interaction).personal or interaction.guild_id is None:
            await interaction.response.send_message(NO_SERVER_HERE, ephemeral=True)
            return
        if not interaction.permissions.manage_guild:
            await interaction.response.send_message(MANAGERS_ONLY, ephemeral=True)
            return
        # The chart is drawn in a worker thread and the rows read: acknowledge first.
        await interaction.response.defer(ephemeral=True, thinking=True)
        try:
            embed, chart, table = await self._server_report(interaction.guild_id)
            files = [discord.File(io.BytesIO(chart), CHART_FILE, description=CHART_DESCRIPTION)]
            if len(chart) + len(table) <= interaction.filesize_limit:
                files.append(discord.File(io.BytesIO(table), CSV_FILE))
            else:
                embed.set_footer(text=CSV_TOO_LARGE.format(guild_id=interaction.guild_id))
            await interaction.edit_original_response(embed=fit_embed(embed), attachments=files)
        except Exception:
            log.exception("could not report a server's usage")
            with contextlib.suppress(*DISCORD_FAILURES):
                await interaction.edit_original_response(
                    content=USAGE_UNAVAILABLE, embed=None, attachments=[]
                )

    async def _server_report(self, guild_id: int) -> tuple[discord.Embed, bytes, bytes]:
        """The server's report: its embed, the chart (PNG) and the CSV of its rows."""
        engine = self.services.ledger.engine
        now = discord.utils.utcnow()  # the clock the rows are stamped with
        first_day = now.date() - dt.timedelta(days=CHART_DAYS - 1)
        month_start = Period.MONTH.start(now)
        embed = discord.Embed(title="This server's usage")
        for name, since in (
            ("Today (UTC)", Period.DAY.start(now)),
            ("This month (UTC)", month_start),
            (f"Last {CHART_DAYS} days (UTC, the chart and the CSV)", first_day),
        ):
            line = _totals_line(await overall(engine, since, guild_id))
            embed.add_field(name=name, value=line, inline=False)
        by_model, by_member = await totals(engine, month_start, guild_id)
        top = sorted(by_member, key=lambda row: (-row.cost, -row.requests))[:TOP_MEMBERS]
        embed.add_field(
            name="Top members this month",
            value=_clip("\n".join(f"<@{row.key}>: {_totals_line(row)}" for row in top) or "None."),
            inline=False,
        )
        models = sorted(by_model, key=lambda row: (-row.cost, -row.requests))
        embed.add_field(
            name="By model this month",
            value=_clip("\n".join(f"{row.key}: {_totals_line(row)}" for row in models) or "None."),
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


def _totals_line(totals: Totals) -> str:
    requests = "1 request" if totals.requests == 1 else f"{totals.requests} requests"
    images = "1 image" if totals.images == 1 else f"{totals.images} images"
    line = f"{format_usd(totals.cost)} · {images} · {requests}"
    if totals.unknown_cost:
        line += f" ({totals.unknown_cost} of unknown cost or still running)"
    return line


def _request_line(row: Any) -> str:
    at = row.requested_at if row.requested_at.tzinfo else row.requested_at.replace(tzinfo=dt.UTC)
    cost = format_usd(Decimal(str(row.cost))) if row.cost is not None else "cost unknown"
    return (
        f"{discord.utils.format_dt(at, 'R')} {row.model} {row.size} {row.quality} "
        f"{row.images_requested} image(s): {row.outcome}, {cost}"
    )


def _tier_line(tier: MemberTier) -> str:
    """Which tier a member is on: their roles' (the most generous applies), or the server's."""
    if tier.barred:
        return "Barred from this bot on this server by its managers."
    if not tier.roles:
        return "None: this server's budget for each member applies."
    roles = " ".join(f"<@&{role}>" for role in tier.roles)
    line = f"{roles} (the most generous of your roles' tiers applies)"
    return line + (", exempt from the rate limit" if tier.exempt else "")


def _clip(text: str) -> str:
    if len(text) <= FIELD_MAX:
        return text
    return text[: text.rfind("\n", 0, FIELD_MAX - 2)] + "\n…"
