"""What the ledger says was asked for and spent: one set of queries for the operator's
``python -m bot usage`` and the members' and managers' ``/usage``.

The CSV is opened in spreadsheets, and some of its text comes from outside (the image service's
``x-request-id``): every text cell that a spreadsheet would read as a formula (OWASP's CSV
injection rule: one beginning with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return) is
written with a single quote before it, so it shows as the text it is.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import ColumnElement, Select, and_, case, func, select, true
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.images.pricing import format_usd
from bot.store.db.schema import usage_ledger

COLUMNS = tuple(column.name for column in usage_ledger.columns)


@dataclass(frozen=True, slots=True)
class Totals:
    key: str  # the model, or the member's Discord id
    requests: int
    images: int
    cost: Decimal  # of the requests whose cost is known
    unknown_cost: int  # requests whose cost is not known (still pending, or no price)


def _period(
    since: dt.date | dt.datetime | None,
    server: int | None,
    member: int | None = None,
    *,
    personal: bool = False,
) -> ColumnElement[bool]:
    """Rows from ``since`` (a day: from its midnight UTC) in one server (``personal``: in the
    members' personal scope, outside every server that installed the bot), of one member."""
    conditions: list[ColumnElement[bool]] = []
    if since is not None:
        start = (
            since
            if isinstance(since, dt.datetime)
            else dt.datetime.combine(since, dt.time(), tzinfo=dt.UTC)
        )
        conditions.append(usage_ledger.c.requested_at >= start)
    if personal:
        conditions.append(usage_ledger.c.guild_id.is_(None))
    elif server is not None:
        conditions.append(usage_ledger.c.guild_id == server)
    if member is not None:
        conditions.append(usage_ledger.c.member_id == member)
    return and_(true(), *conditions)


def _aggregates() -> list[ColumnElement[Any]]:
    """Requests, images delivered, known cost, requests of unknown cost."""
    return [
        func.count(),
        func.coalesce(func.sum(usage_ledger.c.images_delivered), 0),
        func.coalesce(func.sum(usage_ledger.c.cost), 0),
        func.sum(case((usage_ledger.c.cost.is_(None), 1), else_=0)),
    ]


def _totals_by(column: Any, where: ColumnElement[bool]) -> Select[Any]:
    return select(column, *_aggregates()).where(where).group_by(column).order_by(column)


async def totals(
    engine: AsyncEngine, since: dt.date | dt.datetime | None, server: int | None
) -> tuple[list[Totals], list[Totals]]:
    """Totals by model and by member for the period."""
    where = _period(since, server)
    async with engine.connect() as connection:
        by_model = (await connection.execute(_totals_by(usage_ledger.c.model, where))).all()
        by_member = (await connection.execute(_totals_by(usage_ledger.c.member_id, where))).all()
    return [_totals(row) for row in by_model], [_totals(row) for row in by_member]


async def overall(
    engine: AsyncEngine,
    since: dt.date | dt.datetime | None,
    server: int | None,
    member: int | None = None,
    *,
    personal: bool = False,
) -> Totals:
    """The period's totals, in one server (or ``personal``), of one member (key ``all``)."""
    query = select(*_aggregates()).where(_period(since, server, member, personal=personal))
    async with engine.connect() as connection:
        row = (await connection.execute(query)).one()
    return _totals(("all", *row))


async def recent(
    engine: AsyncEngine, server: int | None, member: int, limit: int = 10, *, personal: bool = False
) -> list[Any]:
    """A member's latest requests in one server (or ``personal``), newest first."""
    query = (
        select(usage_ledger)
        .where(_period(None, server, member, personal=personal))
        .order_by(usage_ledger.c.id.desc())
        .limit(limit)
    )
    async with engine.connect() as connection:
        return list((await connection.execute(query)).all())


@dataclass(frozen=True, slots=True)
class Day:
    day: dt.date
    requests: int
    images: int
    cost: Decimal


async def daily(
    engine: AsyncEngine, since: dt.date, until: dt.date, server: int | None
) -> list[Day]:
    """Requests, images delivered and known cost per day (UTC) from ``since`` to ``until``,
    every day listed (a day without requests with zeros)."""
    requested = usage_ledger.c.requested_at
    async with engine.connect() as connection:
        # SQLite keeps the time as UTC text; PostgreSQL's date follows the session's time zone.
        postgresql = connection.dialect.name == "postgresql"
        day = func.date(func.timezone("UTC", requested) if postgresql else requested)
        query = (
            select(
                day,
                func.count(),
                func.coalesce(func.sum(usage_ledger.c.images_delivered), 0),
                func.coalesce(func.sum(usage_ledger.c.cost), 0),
            )
            .where(_period(since, server))
            .group_by(day)
        )
        rows = (await connection.execute(query)).all()
    found = {
        (value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value))): row
        for value, *row in rows
    }
    days = []
    for offset in range((until - since).days + 1):
        when = since + dt.timedelta(days=offset)
        requests, images, cost = found.get(when, (0, 0, 0))
        days.append(Day(when, int(requests), int(images), Decimal(str(cost))))
    return days


def _totals(row: Sequence[Any]) -> Totals:
    key, requests, images, cost, unknown = row
    return Totals(str(key), int(requests), int(images), Decimal(str(cost)), int(unknown or 0))


async def ledger_rows(
    engine: AsyncEngine, since: dt.date | None, server: int | None
) -> list[Sequence[Any]]:
    """The period's rows, oldest first."""
    query = select(usage_ledger).where(_period(since, server)).order_by(usage_ledger.c.id)
    async with engine.connect() as connection:
        return list((await connection.execute(query)).all())


def write_csv(path: Path, rows: list[Sequence[Any]]) -> int:
    """Write ``rows`` to ``path`` with a header; return how many."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        return write_csv_to(handle, rows)


def write_csv_to(handle: TextIO, rows: list[Sequence[Any]]) -> int:
    """Write ``rows`` with a header to an open text file; return how many."""
    writer = csv.writer(handle)
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow(_cell(value) for value in row)
    return len(rows)


# What makes a spreadsheet read a cell as a formula (OWASP, CSV injection): such a cell is
# written with a single quote before it, which spreadsheets show as text.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: object) -> object:
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        # SQLite hands back what was stored, in UTC, without its zone: say it is UTC.
        return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).isoformat()
    if isinstance(value, str):
        # Every text cell, not only those known to come from outside (the image service's
        # request id, a model named in a catalog file): a cell is text, never a formula.
        return "'" + value if value.startswith(FORMULA_STARTS) else value
    return value


def table(title: str, rows: list[Totals]) -> list[str]:
    width = max([len(title), *(len(row.key) for row in rows)])
    lines = [f"{title:<{width}}  {'requests':>8}  {'images':>6}  {'cost':>12}  unknown cost"]
    for row in rows:
        lines.append(
            f"{row.key:<{width}}  {row.requests:>8}  {row.images:>6}  "
            f"{format_usd(Decimal(row.cost)):>12}  {row.unknown_cost}"
        )
    return lines
