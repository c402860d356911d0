"""What a posted set of images was made from, kept so that the buttons under it work after a
restart and after any number of messages.

A button's ``custom_id`` holds 100 characters and a prompt up to 32000, so the request is a row
of ``generation_state`` in the bot's database (the ledger's engine, SQLite or PostgreSQL) and
the button carries the row's id. The row holds what the member asked for, resolved (size and
quality as sent), never the pseudonym: each press is sent with the presser's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.images import ImageRequest, PreparedRequest
from bot.store.db.schema import generation_state, usage_ledger
from bot.store.ledger import Ledger

# The optional fields a request may carry (the rest of ImageRequest is named columns).
_OPTION_FIELDS = frozenset(field.name for field in dataclasses.fields(ImageRequest)) - {
    "prompt",
    "model",
    "size",
    "quality",
    "count",
    "user",
}


# Prompt characters of recent requests kept in memory (a few megabytes; 250 prompts of the
# longest, thousands of typical ones).
REMEMBERED_CHARS = 8_000_000
DELETED_REMEMBERED = 10_000  # keys of sets deleted recently, kept in memory

# One write to the table, run inside the transaction it is batched into; what it returns goes
# back to whoever asked for it.
_Write = Callable[[AsyncConnection], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class SavedRequest:
    """A request as it was asked, read back from the database."""

    key: int
    member_id: int  # who asked
    guild_id: int | None
    channel_id: int | None
    prompt: str
    model: str
    size: str
    quality: str
    count: int
    options: dict[str, Any]
    # The messages the images were posted in after the first, which carries the buttons.
    follow_up_ids: tuple[int, ...] = ()
    # Where the first message is (None: not known, or not posted yet), the request's row of the
    # usage ledger, the saved request it was made from and how (a button's action, or a menu),
    # when it was asked, and whether it was posted privately (ephemeral: it has no jump link).
    message_id: int | None = None
    ledger_id: int | None = None
    parent_key: int | None = None
    origin: str | None = None
    created_at: dt.datetime | None = None
    private: bool = False

    def request(
        self, *, user: str, prompt: str | None = None, size: str | None = None
    ) -> ImageRequest:
        """The same request again, for the member whose pseudonym is ``user``, with a new
        prompt or size where given."""
        options = {name: value for name, value in self.options.items() if name in _OPTION_FIELDS}
        return ImageRequest(
            prompt=self.prompt if prompt is None else prompt,
            model=self.model,
            size=size or self.size,
            quality=self.quality,
            count=self.count,
            user=user,
            **options,
        )


class SavedRequests:
    """The ``generation_state`` table, through the ledger's engine (opened and closed by it).

    The requests this process saved most recently are also kept in memory: presses come mostly
    soon after the images are posted, and a press then needs no database read (a read costs
    milliseconds of threads and locks under load, and a press has 3 seconds to be answered).
    A key is never reused, so what is kept never goes stale.

    Writes (saves, and the follow-up messages a set was posted in) are written together: those
    that arrive while one transaction holds the database's write turn go in the next one, so a
    burst of requests costs a few commits, not one each, and the ledger's admissions, which
    share the turn, wait less.
    """

    def __init__(self, ledger: Ledger, *, remembered_chars: int = REMEMBERED_CHARS) -> None:
        self.ledger = ledger
        self._recent: OrderedDict[int, SavedRequest] = OrderedDict()
        self._recent_chars = 0
        self._remembered_chars = remembered_chars
        self._waiting: list[tuple[_Write, asyncio.Future[Any]]] = []
        self._writer: asyncio.Task[None] | None = None
        # Sets deleted by this process, recently: a follow-up of theirs still being posted when
        # Delete was pressed is deleted as it comes.
        self._deleted: OrderedDict[int, None] = OrderedDict()

    def mark_deleted(self, key: int) -> None:
        self._deleted[key] = None
        while len(self._deleted) > DELETED_REMEMBERED:
            self._deleted.popitem(last=False)

    def was_deleted(self, key: int) -> bool:
        return key in self._deleted

    def _remember(self, saved: SavedRequest) -> None:
        if saved.key in self._recent:
            self._recent.move_to_end(saved.key)
            return
        self._recent[saved.key] = saved
        self._recent_chars += len(saved.prompt)
        while self._recent_chars > self._remembered_chars:
            _, oldest = self._recent.popitem(last=False)
            self._recent_chars -= len(oldest.prompt)

    async def save(
        self,
        prepared: PreparedRequest,
        *,
        member_id: int,
        guild_id: int | None,
        channel_id: int | None,
        ledger_id: int | None = None,
        parent_key: int | None = None,
        origin: str | None = None,
        private: bool = False,
    ) -> int:
        """Keep ``prepared`` as asked by ``member_id``; return its key."""
        row = {
            "ledger_id": ledger_id,
            "parent_key": parent_key,
            "origin": origin[:32] if origin else None,
            "private": private,
            "created_at": dt.datetime.now(dt.UTC),
            "guild_id": guild_id,
            "channel_id": channel_id,
            "member_id": member_id,
            "model": prepared.model,
            "prompt": prepared.prompt,
            "size": prepared.size,
            "quality": prepared.quality,
            "image_count": prepared.count,
            "options": json.dumps(prepared.options, sort_keys=True),
        }

        async def insert_row(connection: AsyncConnection) -> int:
            inserted = await connection.execute(
                insert(generation_state).values(row).returning(generation_state.c.id)
            )
            return int(inserted.scalar_one())

        key = int(await self._queue(insert_row))
        self._remember(_saved({**row, "id": key}))
        return key

    async def record_follow_ups(self, key: int, message_ids: tuple[int, ...]) -> None:
        """The set saved under ``key`` was posted in ``message_ids`` too, after its first
        message (all of them so far: each call replaces the last)."""
        recent = self._recent.get(key)
        if recent is not None:  # remembered at once: a press may come before the write ends
            self._recent[key] = dataclasses.replace(recent, follow_up_ids=message_ids)
        values = {"followup_ids": json.dumps(list(message_ids))}

        async def update_row(connection: AsyncConnection) -> None:
            await connection.execute(
                update(generation_state).where(generation_state.c.id == key).values(values)
            )

        await self._queue(update_row)

    def note_message(self, key: int, message_id: int) -> None:
        """Remember at once, where the request is in memory, that its set is in ``message_id``
        (a press may come before the write ends)."""
        recent = self._recent.get(key)
        if recent is not None:
            self._recent[key] = dataclasses.replace(recent, message_id=message_id)

    async def record_message(self, key: int, message_id: int) -> None:
        """The set saved under ``key`` was posted in the message ``message_id`` (its first)."""
        self.note_message(key, message_id)

        async def update_row(connection: AsyncConnection) -> None:
            await connection.execute(
                update(generation_state)
                .where(generation_state.c.id == key)
                .values(message_id=message_id)
            )

        await self._queue(update_row)

    async def _queue(self, write: _Write) -> Any:
        """``write``, in the next transaction the writer commits; what it returned."""
        written: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.append((write, written))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write(), name="saved-requests-writer")
        return await written

    async def _write(self) -> None:
        """Write what waits, a transaction at a time and in the order asked, until none waits."""
        while self._waiting:
            batch, self._waiting = self._waiting, []
            try:
                results = []
                async with self.ledger.write_turn(), self.ledger.engine.begin() as connection:
                    for write, _ in batch:
                        results.append(await write(connection))
            except Exception as exc:
                for _, written in batch:
                    if not written.done():
                        written.set_exception(exc)
                continue
            for (_, written), result in zip(batch, results, strict=True):
                if not written.done():  # its generation may have ended meanwhile
                    written.set_result(result)

    async def load(self, key: int) -> SavedRequest | None:
        """The request kept under ``key``; None when there is none."""
        recent = self._recent.get(key)
        if recent is not None:
            self._recent.move_to_end(key)
            return recent
        async with self.ledger.engine.connect() as connection:
            row = (
                await connection.execute(
                    select(generation_state).where(generation_state.c.id == key)
                )
            ).one_or_none()
        if row is None:
            return None
        saved = _saved(row._mapping)
        self._remember(saved)
        return saved


@dataclass(frozen=True, slots=True)
class Spent:
    """What the ledger says of one request: its cost once settled (else its estimate), how
    it ended, and the image service's id for it."""

    cost: Decimal | None
    estimated: bool  # the cost is the estimate reserved at admission (not settled, or unpriced)
    outcome: str
    service_request_id: str | None


async def spent(saved: SavedRequests, ledger_ids: list[int]) -> dict[int, Spent]:
    """The ledger's rows ``ledger_ids``, by id (those it has)."""
    if not ledger_ids:
        return {}
    table = usage_ledger
    async with saved.ledger.engine.connect() as connection:
        rows = await connection.execute(
            select(
                table.c.id, table.c.cost, table.c.estimated_cost, table.c.outcome,
                table.c.request_id,
            ).where(table.c.id.in_(ledger_ids))
        )  # fmt: skip
        found = rows.all()
    return {
        int(row.id): Spent(
            cost=row.cost if row.cost is not None else row.estimated_cost,
            estimated=row.cost is None,
            outcome=str(row.outcome),
            service_request_id=row.request_id,
        )
        for row in found
    }


async def made_from(saved: SavedRequests, key: int, limit: int) -> list[SavedRequest]:
    """The first ``limit`` requests made from the one saved under ``key``, oldest first."""
    async with saved.ledger.engine.connect() as connection:
        rows = await connection.execute(
            select(generation_state)
            .where(generation_state.c.parent_key == key)
            .order_by(generation_state.c.id)
            .limit(limit)
        )
        return [_saved(row._mapping) for row in rows]


async def member_page(
    saved: SavedRequests,
    member_id: int,
    guild_id: int | None,
    *,
    before: int | None = None,
    after: int | None = None,
    limit: int,
) -> list[SavedRequest]:
    """Up to ``limit`` of the member's requests in one server (None: in DMs), newest first:
    the newest (neither cursor), those older than key ``before``, or those newer than ``after``
    (the page before, for Previous)."""
    table = generation_state
    query = select(table).where(
        table.c.member_id == member_id,
        table.c.guild_id == guild_id if guild_id is not None else table.c.guild_id.is_(None),
    )
    if after is not None:
        query = query.where(table.c.id > after).order_by(table.c.id)
    else:
        if before is not None:
            query = query.where(table.c.id < before)
        query = query.order_by(table.c.id.desc())
    async with saved.ledger.engine.connect() as connection:
        rows = [_saved(row._mapping) for row in await connection.execute(query.limit(limit))]
    return rows[::-1] if after is not None else rows


def _saved(row: Mapping[Any, Any]) -> SavedRequest:
    """A row of ``generation_state`` as a request (its options parsed anew: never shared)."""
    options = json.loads(row["options"])
    follow_ups = json.loads(row.get("followup_ids") or "[]")
    return SavedRequest(
        key=int(row["id"]),
        member_id=int(row["member_id"]),
        guild_id=row["guild_id"],
        channel_id=row["channel_id"],
        prompt=row["prompt"],
        model=row["model"],
        size=row["size"],
        quality=row["quality"],
        count=int(row["image_count"]),
        options=options if isinstance(options, dict) else {},
        follow_up_ids=tuple(int(message_id) for message_id in follow_ups)
        if isinstance(follow_ups, list)
        else (),
        message_id=_optional_int(row.get("message_id")),
        ledger_id=_optional_int(row.get("ledger_id")),
        parent_key=_optional_int(row.get("parent_key")),
        origin=row.get("origin"),
        created_at=_utc(row.get("created_at")),
        private=bool(row.get("private")),
    )


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _utc(value: Any) -> dt.datetime | None:
    """A time read back (SQLite gives it back without its zone: it was written in UTC)."""
    if not isinstance(value, dt.datetime):
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
