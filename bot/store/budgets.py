"""Budgets: how much a member, and a whole server, may spend per calendar day or month (UTC).

A budget is money (US dollars, from :mod:`bot.images.pricing`) or images. A request reserves its
estimated cost and its image count when its ledger row is inserted at admission; what counts
against a budget is the sum, over the window, of each settled row's cost (its estimate when the
cost is unknown; a ``refused`` row only its settled cost, nothing when the service refused before
generating) and each pending row's estimate, and likewise images delivered or, while pending,
images requested. The check and the insert are one transaction, serialised per member and per
server (see :meth:`bot.store.ledger.Ledger.admitted`), so that simultaneous requests cannot
overspend.

A member's budget counts their requests in that server, so that a server's own budgets stay its
own. Outside every server that installed the bot (a DM, a group DM, a server used through the
member's own install) the request is the member's personal scope (``guild_id`` None,
bot/requests/where.py): MEMBER_BUDGET counts their personal requests as a window of its own, and
no server's budget ever counts them. Anyone may invite the bot to
servers they create, each with a fresh MEMBER_BUDGET and SERVER_BUDGET: the operator's two
bot-wide budgets bound that. USER_BUDGET counts a Discord user's requests in every server and
direct message together, TOTAL_BUDGET every request of the bot. Neither is a server's to change.

Decision: a refusal by TOTAL_BUDGET names the budget but not what the bot has spent: what others
spend, in servers a member may not even see, is not theirs to read.

Decision: where a money budget applies and the model has no known price, the request is refused,
since its cost could not be bounded; an image budget still applies to unpriced models, and rows of
unpriced models recorded before count as nothing towards a money budget.

Decision: an amount is at most :data:`MAX_BUDGET_USD` dollars or :data:`MAX_BUDGET_IMAGES` images,
whoever types it (the operator's budgets, a manager's /imagine-settings):
far above any real budget, and far below what the ledger's money columns (``Numeric(14, 6)``,
under $100,000,000) and their sums hold, so that every figure a budget is compared with or shown
beside stays exact.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from enum import StrEnum

import discord

from bot.i18n import Text, _, money, ngettext


class Period(StrEnum):
    DAY = "day"
    MONTH = "month"

    def start(self, now: dt.datetime) -> dt.datetime:
        """The start of the calendar day or month (UTC) that holds ``now``."""
        day = now.astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        return day if self is Period.DAY else day.replace(day=1)

    def reset(self, now: dt.datetime) -> dt.datetime:
        """When the window holding ``now`` ends: the next midnight, or the next month's first."""
        start = self.start(now)
        if self is Period.DAY:
            return start + dt.timedelta(days=1)
        return (start + dt.timedelta(days=32)).replace(day=1)


class Scope(StrEnum):
    """Whose requests a budget counts. The order is the order their locks are taken in."""

    MEMBER = "member"  # one member's, in one server (or in direct messages)
    SERVER = "server"  # one server's
    USER = "user"  # one Discord user's, in every server and direct message (USER_BUDGET)
    TOTAL = "total"  # every request of the bot (TOTAL_BUDGET)

    @property
    def operators_only(self) -> bool:
        """A budget of the bot as a whole, which no server's settings change."""
        return self in (Scope.USER, Scope.TOTAL)


@dataclass(frozen=True, slots=True)
class Budget:
    """One limit: ``amount`` dollars (``images`` False) or images, per ``period``."""

    amount: Decimal
    period: Period
    images: bool = False

    def describe(self, amount: Decimal | None = None) -> Text:
        """``$2.00``, ``40 images``: this budget's amount, or another in its unit."""
        value = self.amount if amount is None else amount
        if not self.images:
            return money(value)
        return IMAGES.format(n=value)

    def per_period(self) -> Text:
        """``$2.00 per day``, ``40 images per month``."""
        return PER_PERIOD[self.period].format(amount=self.describe())

    def __str__(self) -> str:
        return f"{self.describe()}/{self.period.value}"


IMAGES = ngettext("{n} image", "{n} images")
PER_PERIOD = {Period.DAY: _("{amount} per day"), Period.MONTH: _("{amount} per month")}
RESETS = _("It resets {when}.")
TOTAL_REFUSAL = {
    Period.DAY: _(
        "This bot's budget for everyone is {budget} per day (calendar days, UTC), and what is "
        "left of it does not cover this request, which {needed}. {resets}"
    ),
    Period.MONTH: _(
        "This bot's budget for everyone is {budget} per month (calendar months, UTC), and what "
        "is left of it does not cover this request, which {needed}. {resets}"
    ),
}
ASKS_FOR = _("asks for {amount}")
MAY_COST = _("may cost up to {amount}")
WHOSE = {
    Scope.MEMBER: _("Your budget on this server"),
    Scope.SERVER: _("This server's budget"),
    Scope.USER: _("Your budget on this bot (every server and direct message together)"),
}
REFUSAL = {
    Period.DAY: _(
        "{whose} is {budget} per day (calendar days, UTC): {used} for requests still running, "
        "and {needed}. {resets}"
    ),
    Period.MONTH: _(
        "{whose} is {budget} per month (calendar months, UTC): {used} for requests still "
        "running, and {needed}. {resets}"
    ),
}
IMAGES_USED = ngettext(
    "{amount} is already used or reserved", "{amount} are already used or reserved"
)
MONEY_USED = _("{amount} is already spent or reserved")
REQUEST_ASKS_FOR = _("this request asks for {amount}")
REQUEST_MAY_COST = _("this request may cost up to {amount}")
PRICE_UNKNOWN_BOT = _(
    "This bot limits spending, and the cost of {model} is not known to it, so it cannot be "
    "checked. Until its operator adds its price (IMAGE_MODELS_FILE), pick a model whose price "
    "is known."
)
PRICE_UNKNOWN_SERVER = _(
    "This server limits spending, and the cost of {model} is not known to the bot, so it "
    "cannot be checked. A server admin can add its price (IMAGE_MODELS_FILE) or pick a priced "
    "model."
)

# MEMBER_BUDGET outside every server that installed the bot: a window of its own.
PERSONAL_BUDGET = _("Your personal budget (DMs and servers that have not installed this bot)")
MAX_BUDGET_USD = Decimal(1_000_000)
MAX_BUDGET_IMAGES = Decimal(1_000_000)
BUDGET_ACCEPTS = _(
    "a ;-separated list of budgets such as $2/day;$20/month;40 images/month (an amount in "
    "dollars up to ${most_usd}, or a whole number of images up to {most_images}, per day or per "
    "month)"
).format(most_usd=MAX_BUDGET_USD, most_images=MAX_BUDGET_IMAGES)
NOT_A_BUDGET = _("{part} is not a budget")
OVER_MOST = _("{part} is more than {bound}, the most a budget may be")
SHOWN_CHARS = 40  # of a refused part, repeated in the sentence: a long paste is not echoed whole
_MONEY = re.compile(r"\$\s*(?P<amount>\d+(?:\.\d{1,6})?)\s*/\s*(?P<period>day|month)", re.I)
_IMAGES = re.compile(r"(?P<amount>\d+)\s*images?\s*/\s*(?P<period>day|month)", re.I)


def parse_budgets(text: str) -> tuple[Budget, ...]:
    """Read ``$2/day;$20/month;40 images/month``; raise ValueError naming the part refused."""
    budgets: list[Budget] = []
    for part in (piece.strip() for piece in text.split(";")):
        if not part:
            continue
        match = _MONEY.fullmatch(part) or _IMAGES.fullmatch(part)
        if match is None:
            raise ValueError(NOT_A_BUDGET.format(part=_shown(part)))
        try:
            amount = Decimal(match["amount"])
        except InvalidOperation:  # the patterns allow only digits: a guard, not a path
            raise ValueError(NOT_A_BUDGET.format(part=_shown(part))) from None
        images = match.re is _IMAGES
        most = MAX_BUDGET_IMAGES if images else MAX_BUDGET_USD
        if amount > most:
            # Dollars as a budget is typed ($1,000,000), with the reader's digit grouping.
            bound = IMAGES.format(n=most) if images else Text("${amount}", None, {"amount": most})
            raise ValueError(OVER_MOST.format(part=_shown(part), bound=bound))
        budgets.append(Budget(amount, Period(match["period"].lower()), images=images))
    return tuple(budgets)


def _shown(part: str) -> str:
    return repr(part if len(part) <= SHOWN_CHARS else part[: SHOWN_CHARS - 1] + "…")


def tightest(budgets: Iterable[Budget]) -> tuple[Budget, ...]:
    """The lowest budget of each unit and period, in the order each first appears.

    Budgets of one scope, unit and period count the same requests against the same window, so
    they all hold exactly when the lowest does; budgets of different periods or units all stay."""
    lowest: dict[tuple[bool, Period], Budget] = {}
    for budget in budgets:
        key = (budget.images, budget.period)
        if key not in lowest or budget.amount < lowest[key].amount:
            lowest[key] = budget
    return tuple(lowest.values())


@dataclass(frozen=True, slots=True)
class BudgetRefusal:
    """Why a request was refused: the budget, what was used of it, what this one needed."""

    scope: Scope
    budget: Budget
    used: Decimal
    needed: Decimal
    resets_at: dt.datetime
    personal: bool = False  # in the member's personal scope: DMs, servers without the bot

    def sentence(self) -> Text:
        budget = self.budget
        resets = RESETS.format(when=discord.utils.format_dt(self.resets_at, "R"))
        if self.scope is Scope.TOTAL:  # what everyone else spent is not this member's to read
            needed = (ASKS_FOR if budget.images else MAY_COST).format(
                amount=budget.describe(self.needed)
            )
            return TOTAL_REFUSAL[budget.period].format(
                budget=budget.describe(), needed=needed, resets=resets
            )
        if budget.images:
            used = IMAGES_USED.format(amount=budget.describe(self.used), n=self.used)
            needed = REQUEST_ASKS_FOR.format(amount=budget.describe(self.needed))
        else:
            used = MONEY_USED.format(amount=budget.describe(self.used))
            needed = REQUEST_MAY_COST.format(amount=budget.describe(self.needed))
        return REFUSAL[budget.period].format(
            whose=PERSONAL_BUDGET
            if self.scope is Scope.MEMBER and self.personal
            else WHOSE[self.scope],
            budget=budget.describe(),
            used=used,
            needed=needed,
            resets=resets,
        )


class OverBudget(Exception):
    """The request would exceed a budget; nothing was recorded."""

    def __init__(self, refusal: BudgetRefusal) -> None:
        super().__init__(refusal.sentence())
        self.refusal = refusal

    def sentence(self) -> Text:
        return self.refusal.sentence()


class PriceUnknown(Exception):
    """A money budget applies and the model has no known price; nothing was recorded."""

    def __init__(self, model: str, scope: Scope) -> None:
        self.model = model
        self.scope = scope
        super().__init__(self.sentence())

    def sentence(self) -> Text:
        unknown = PRICE_UNKNOWN_BOT if self.scope.operators_only else PRICE_UNKNOWN_SERVER
        return unknown.format(model=self.model)
