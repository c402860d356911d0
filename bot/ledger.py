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
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import insert, update
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from bot.db import open_engine
from bot.db.schema import usage_ledger
from bot.images import PreparedRequest
from bot.images.pricing import estimate_cost, settle_cost

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


class Ledger:
    """Writes the usage ledger; ``open`` before use, ``close`` at the end."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._engine: AsyncEngine | None = None
        self._sessions: async_sessionmaker[Any] | None = None

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
        Raises what the database raises: the caller then does not take the request."""
        if self._sessions is None:
            raise RuntimeError("the ledger is not open")
        row = {
            "requested_at": at or dt.datetime.now(dt.UTC),
            "guild_id": guild_id,
            "channel_id": channel_id,
            "member_id": member_id,
            "model": prepared.model,
            "size": prepared.size,
            "quality": prepared.quality,
            "images_requested": prepared.count,
            "images_delivered": 0,
            "outcome": Outcome.PENDING.value,
            "estimated_cost": _priced(lambda: estimate_cost(prepared), "estimated cost"),
        }
        async with self._sessions.begin() as session:
            inserted = await session.execute(
                insert(usage_ledger).values(row).returning(usage_ledger.c.id)
            )
            return int(inserted.scalar_one())

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
    ) -> None:
        """Record how an admitted request ended. ``images_returned``: how many images the
        service sent back (None: no answer arrived), which with ``usage`` settles the cost;
        a request the service refused generated nothing."""
        if self._sessions is None:
            raise RuntimeError("the ledger is not open")
        if outcome is Outcome.REFUSED:
            images_returned = 0
        cost = None
        if images_returned is not None:
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
        async with self._sessions.begin() as session:
            await session.execute(
                update(usage_ledger).where(usage_ledger.c.id == row_id).values(values)
            )
