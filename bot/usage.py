"""``python -m bot usage``: what the ledger says was asked for and spent, for a period."""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, case, func, select, true
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.db.schema import usage_ledger
from bot.images.pricing import format_usd

COLUMNS = tuple(column.name for column in usage_ledger.columns)


@dataclass(frozen=True, slots=True)
class Totals:
    key: str  # the model, or the member's Discord id
    requests: int
    images: int
    cost: Decimal  # of the requests whose cost is known
    unknown_cost: int  # requests whose cost is not known (still pending, or no price)


def _period(since: dt.date | None, server: int | None) -> ColumnElement[bool]:
    conditions: list[ColumnElement[bool]] = []
    if since is not None:
        start = dt.datetime.combine(since, dt.time(), tzinfo=dt.UTC)
        conditions.append(usage_ledger.c.requested_at >= start)
    if server is not None:
        conditions.append(usage_ledger.c.guild_id == server)
    return and_(true(), *conditions)


def _totals_by(column: Any, where: ColumnElement[bool]) -> Select[Any]:
    return (
        select(
            column,
            func.count(),
            func.coalesce(func.sum(usage_ledger.c.images_delivered), 0),
            func.coalesce(func.sum(usage_ledger.c.cost), 0),
            func.sum(case((usage_ledger.c.cost.is_(None), 1), else_=0)),
        )
        .where(where)
        .group_by(column)
        .order_by(column)
    )


async def totals(
    engine: AsyncEngine, since: dt.date | None, server: int | None
) -> tuple[list[Totals], list[Totals]]:
    """Totals by model and by member for the period."""
    where = _period(since, server)
    async with engine.connect() as connection:
        by_model = (await connection.execute(_totals_by(usage_ledger.c.model, where))).all()
        by_member = (await connection.execute(_totals_by(usage_ledger.c.member_id, where))).all()
    return [_totals(row) for row in by_model], [_totals(row) for row in by_member]


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
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for row in rows:
            writer.writerow(_cell(value) for value in row)
    return len(rows)


def _cell(value: object) -> object:
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        # SQLite hands back what was stored, in UTC, without its zone: say it is UTC.
        return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).isoformat()
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
