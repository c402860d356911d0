"""The usage ledger: one row per generation request admitted, written before anything is spent.

A row is inserted when a request is admitted (valid and within the member's limits) with the
outcome ``pending`` and the estimated cost, and settled when the request ends: ``delivered``,
``refused`` (the image service refused before generating: an invalid request, a safety block, a
model it does not serve, quota, the key), ``failed`` (anything else, upstream or on Discord) or
``cancelled`` (shutdown, or the interaction token's lifetime). A request whose row cannot be
written is not taken: spend is never unrecorded.

The member is stored as the raw Discord user id, not the pseudonym sent to the image API: the
ledger stays in the operator's own database, never leaves for the image service, and budgets
per member need a key that stays the same when USER_ID_SECRET changes.

Budgets (:mod:`bot.budgets`) are checked where the row is inserted, in the same transaction: on
PostgreSQL after taking a transaction-scoped advisory lock per member and per server, on SQLite in
a ``BEGIN IMMEDIATE`` transaction, so that neither simultaneous requests in one process nor
several processes sharing the database can overspend.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, case, func, insert, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, async_sessionmaker

from bot.budgets import Budget, BudgetRefusal, OverBudget, PriceUnknown, Scope
from bot.db import BEGIN_IMMEDIATE, open_engine
from bot.db.schema import MONEY, usage_ledger
from bot.images import PreparedRequest
from bot.images.pricing import SIX_PLACES, estimate_cost, settle_cost

log = logging.getLogger(__name__)

REQUEST_ID_CHARS = 100  # the column's width; the engine already bounds request ids to this


class Outcome(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    REFUSED = "refused"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class Tokens:
    """The usage tokens an answer reported; None where it did not say."""

    input_text: int | None = None
    input_image: int | None = None
    output: int | None = None

    @classmethod
    def from_usage(cls, usage: Mapping[str, Any] | None) -> Tokens:
        """Read from the image service's ``usage`` object, which is not trusted: a count that
        is not a whole number of zero or more is left out."""
        if not usage:
            return cls()
        details = usage.get("input_tokens_details")
        details = details if isinstance(details, Mapping) else {}
        text = _count(details.get("text_tokens"))
        image = _count(details.get("image_tokens"))
        if text is None and image is None:
            text = _count(usage.get("input_tokens"))  # no breakdown: a prompt is all text
        return cls(input_text=text, input_image=image, output=_count(usage.get("output_tokens")))


def _count(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**31:
        return value
    return None


def _priced(price: Any, what: str) -> Decimal | None:
    """A price from bot.images.pricing; its failure leaves the cost unknown, not the row."""
    try:
        value = price()
    except Exception:
        log.exception("could not work out the %s of a generation; recorded as unknown", what)
        return None
    return value if isinstance(value, Decimal) else None


def _lock_key(scope: Scope, guild_id: int | None, member_id: int | None = None) -> int:
    """A 64-bit advisory lock key for one member in one server, or one server."""
    name = f"imagine-budget:{scope.value}:{guild_id}:{member_id}".encode()
    return int.from_bytes(hashlib.blake2b(name, digest_size=8).digest(), "big", signed=True)


_pending = usage_ledger.c.outcome == Outcome.PENDING.value
# What a row counts against a money budget: a pending row its estimate; a refused row its settled
# cost (nothing when the service refused before generating); any other its cost, or its estimate
# where the cost is unknown (an answer that never arrived may still have been billed).
_COUNTED_COST: ColumnElement[Any] = case(
    (_pending, usage_ledger.c.estimated_cost),
    (usage_ledger.c.outcome == Outcome.REFUSED.value, usage_ledger.c.cost),
    else_=func.coalesce(usage_ledger.c.cost, usage_ledger.c.estimated_cost),
)
_COUNTED_IMAGES: ColumnElement[Any] = case(
    (_pending, usage_ledger.c.images_requested), else_=usage_ledger.c.images_delivered
)


class Ledger:
    """Writes the usage ledger; ``open`` before use, ``close`` at the end."""

    def __init__(
        self,
        url: str,
        *,
        member_budget: tuple[Budget, ...] = (),
        server_budget: tuple[Budget, ...] = (),
    ) -> None:
        self.url = url
        self.member_budget = member_budget
        self.server_budget = server_budget
        self._engine: AsyncEngine | None = None
        self._sessions: async_sessionmaker[Any] | None = None
        # SQLite has one write lock per file; writers of this process that contend for it fall
        # into SQLite's busy wait, which backs off for up to seconds (admissions under load took
        # 20 s). They take turns here instead, each write a few milliseconds.
        self._sqlite = make_url(url).get_backend_name() == "sqlite"
        self._write_turn = asyncio.Lock()

    def _writing(self) -> contextlib.AbstractAsyncContextManager[object]:
        return self._write_turn if self._sqlite else contextlib.nullcontext()

    def write_turn(self) -> contextlib.AbstractAsyncContextManager[object]:
        """Held by anything else that writes to this database from this process (the buttons'
        saved requests): on SQLite, writers take turns rather than fall into the busy wait."""
        return self._writing()

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            raise RuntimeError("the ledger is not open")
        return self._engine

    async def open(self) -> None:
        self._engine = open_engine(self.url)
        self._sessions = async_sessionmaker(self._engine, expire_on_commit=False)

    async def close(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None
            self._sessions = None

    async def admitted(
        self,
        prepared: PreparedRequest,
        *,
        member_id: int,
        guild_id: int | None,
        channel_id: int | None,
        at: dt.datetime | None = None,
    ) -> int:
        """Record an admitted request as pending, with its estimated cost; return its row id.

        Raises :class:`~bot.budgets.OverBudget` or :class:`~bot.budgets.PriceUnknown` when a
        budget refuses it (nothing is recorded), else what the database raises: in every case the
        caller then does not take the request."""
        if self._engine is None:
            raise RuntimeError("the ledger is not open")
        at = at or dt.datetime.now(dt.UTC)
        estimate = _priced(lambda: estimate_cost(prepared), "estimated cost")
        row = {
            "requested_at": at,
            "guild_id": guild_id,
            "channel_id": channel_id,
            "member_id": member_id,
            "model": prepared.model,
            "size": prepared.size,
            "quality": prepared.quality,
            "images_requested": prepared.count,
            "images_delivered": 0,
            "outcome": Outcome.PENDING.value,
            "estimated_cost": estimate,
        }
        budgets = self._budgets(guild_id)
        if any(not budget.images for _, budget in budgets) and estimate is None:
            scope = next(scope for scope, budget in budgets if not budget.images)
            raise PriceUnknown(prepared.model, scope)
        async with self._writing(), self._engine.connect() as connection:
            if budgets and connection.dialect.name == "sqlite":
                await connection.execution_options(**{BEGIN_IMMEDIATE: True})
            async with connection.begin():
                if budgets:
                    await self._lock(connection, member_id, guild_id)
                    for scope, budget in budgets:
                        refusal = await _check(
                            connection, scope, budget, member_id, guild_id, at, prepared, estimate
                        )
                        if refusal is not None:
                            raise OverBudget(refusal)
                inserted = await connection.execute(
                    insert(usage_ledger).values(row).returning(usage_ledger.c.id)
                )
                return int(inserted.scalar_one())

    def _budgets(self, guild_id: int | None) -> list[tuple[Scope, Budget]]:
        """The budgets a request in ``guild_id`` is checked against (a direct message has no
        server's)."""
        server = self.server_budget if guild_id is not None else ()
        return [(Scope.MEMBER, budget) for budget in self.member_budget] + [
            (Scope.SERVER, budget) for budget in server
        ]

    @staticmethod
    async def _lock(connection: AsyncConnection, member_id: int, guild_id: int | None) -> None:
        if connection.dialect.name != "postgresql":
            return  # SQLite: BEGIN IMMEDIATE already holds the only write lock
        # Always member, then server: two admissions never wait on each other in a cycle.
        keys = [_lock_key(Scope.MEMBER, guild_id, member_id)]
        if guild_id is not None:
            keys.append(_lock_key(Scope.SERVER, guild_id))
        for key in keys:
            await connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})

    async def settle(
        self,
        row_id: int,
        outcome: Outcome,
        prepared: PreparedRequest,
        *,
        images_returned: int | None = None,
        images_delivered: int = 0,
        request_id: str | None = None,
        usage: Mapping[str, Any] | None = None,
        sent: bool = True,
    ) -> None:
        """Record how an admitted request ended. ``images_returned``: how many images the
        service sent back (None: no answer arrived), which with ``usage`` settles the cost;
        a request the service refused generated nothing, and one never ``sent`` cost nothing
        (its reservation against the budgets is released)."""
        if self._sessions is None:
            raise RuntimeError("the ledger is not open")
        if outcome is Outcome.REFUSED:
            images_returned = 0
        cost = None
        if not sent:
            cost = Decimal(0)
        elif images_returned is not None:
            returned = images_returned
            cost = _priced(lambda: settle_cost(prepared, usage, returned), "cost")
        tokens = Tokens.from_usage(usage)
        values = {
            "settled_at": dt.datetime.now(dt.UTC),
            "outcome": outcome.value,
            "images_delivered": images_delivered,
            "request_id": request_id[:REQUEST_ID_CHARS] if request_id else None,
            "input_text_tokens": tokens.input_text,
            "input_image_tokens": tokens.input_image,
            "output_tokens": tokens.output,
            "cost": cost,
        }
        async with self._writing(), self._sessions.begin() as session:
            await session.execute(
                update(usage_ledger).where(usage_ledger.c.id == row_id).values(values)
            )


async def _check(
    connection: AsyncConnection,
    scope: Scope,
    budget: Budget,
    member_id: int,
    guild_id: int | None,
    at: dt.datetime,
    prepared: PreparedRequest,
    estimate: Decimal | None,
) -> BudgetRefusal | None:
    """Whether ``budget`` leaves room for this request; the refusal when it does not."""
    counted = _COUNTED_IMAGES if budget.images else _COUNTED_COST
    query = select(func.coalesce(func.sum(counted), 0, type_=MONEY)).where(
        usage_ledger.c.requested_at >= budget.period.start(at),
        usage_ledger.c.guild_id == guild_id
        if guild_id is not None
        else usage_ledger.c.guild_id.is_(None),
    )
    if scope is Scope.MEMBER:
        query = query.where(usage_ledger.c.member_id == member_id)
    total = await connection.scalar(query)
    # SQLite sums NUMERIC as a float: rounded back to the ledger's millionths of a dollar.
    used = Decimal(str(total or 0))
    used = used.to_integral_value() if budget.images else used.quantize(SIX_PLACES)
    needed = Decimal(prepared.count) if budget.images else (estimate or Decimal(0))
    if used + needed <= budget.amount:
        return None
    return BudgetRefusal(scope, budget, used, needed, budget.period.reset(at))
