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

A settlement the database does not take (it went away, or hangs) is kept in memory and written
again, with growing pauses, until the database answers: meanwhile the row stays ``pending``, so
its estimate stays reserved against the budgets (never an overspend), and once written the
reservation is settled or released. Writing a settlement twice writes the same values: nothing is
counted twice. The spend metric counts a settlement when the database takes it, whichever
attempt that is: once. A process stopped before the database came back leaves those rows
``pending`` and logs their ids.

A process that dies mid-request (``kill -9``) cannot settle its rows. Each process holds a lease
(``ledger_leases``: an owner and an expiry on the database's clock, renewed every quarter of
:data:`LEASE_SECONDS` by a keeper loop) and writes its rows under it (``owner``); just before a
request is sent to the image service its row records so (``sent_at``). Once a lease has expired,
any other process (the keeper's loop, and every start) settles that owner's pending rows as
``abandoned``, in one statement, so each is settled once whoever looks: a row that may have been
sent at an unknown cost (its estimate stays counted against the budgets: it may have been billed),
one never sent at 0. A row is only written under a lease with half its time left (see
:class:`_Lease`), so a live process that reaches the database never has its rows taken; one cut
off for longer may, and when it is back its own settlement replaces the abandoned one, and
:meth:`Ledger.sending` refuses to send a request whose row is no longer pending.

Whether the ledger can take a request now is asked by writing, not reading (``check_writable``,
for the health check): a row is inserted as an admission inserts one, then deleted, in one
committed transaction. A database on a full disk, or read-only, answers ``SELECT 1`` all the same
while it refuses every request.

Budgets (:mod:`bot.store.budgets`) are checked where the row is inserted, in the same transaction:
on
PostgreSQL after taking a transaction-scoped advisory lock per member and per server, per user
(USER_BUDGET) and one for the whole bot (TOTAL_BUDGET), on SQLite in a ``BEGIN IMMEDIATE``
transaction, so that neither simultaneous requests in one process nor several processes sharing
the database can overspend. A lock is taken only where a budget of its scope applies (the
default, no budget, takes none), in the order of :class:`~bot.store.budgets.Scope` (so two
admissions
never wait on each other in a cycle), each just before its budget is checked: the bot-wide lock,
which every admission waits its turn for, is held only for its own sum, the insert and the
commit, and a request another budget refuses never takes it.

SQLite has one write lock per file, and every statement through aiosqlite is a round trip to its
thread and back through the event loop: two hundred admissions at once, each in its own
transaction, took seconds under load. On SQLite the writes of this process are therefore
committed in groups by one writer task: whatever is waiting when it is free goes into one
transaction, its budgets read once per member and server and counted on in memory, its rows
inserted in one statement. PostgreSQL takes each request in a transaction of its own, concurrent
on the pool, serialised per member and server by the advisory locks.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any

import discord.utils
from discord.ext import tasks
from sqlalchemy import (
    ColumnElement,
    Double,
    and_,
    bindparam,
    case,
    delete,
    exists,
    func,
    insert,
    literal_column,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, async_sessionmaker

from bot.images import PreparedRequest
from bot.images.pricing import SIX_PLACES, estimate_cost, settle_cost, token_count
from bot.images.text import PreparedText, text_estimate, text_settle
from bot.observability.metrics import Metrics
from bot.store.budgets import Budget, BudgetRefusal, OverBudget, PriceUnknown, Scope
from bot.store.db import (
    BEGIN_IMMEDIATE,
    DATABASE_FAILURES,
    DatabaseUnavailable,
    describe_failure,
    open_engine,
)
from bot.store.db.schema import MONEY, ledger_leases, usage_ledger

log = logging.getLogger(__name__)

# What a row records: an image request, or a text model's (describe, enhance: no images, priced
# per token by bot/images/text.py).
Priced = PreparedRequest | PreparedText

REQUEST_ID_CHARS = 100  # the column's width; the engine already bounds request ids to this
# Seconds between attempts to write settlements the database did not take: short at first (a
# restart takes seconds), then no more than twice a minute while it stays away.
SETTLE_RETRY_FIRST = 0.5
SETTLE_RETRY_LONGEST = 30.0
SETTLE_ATTEMPT_TIMEOUT = 10.0  # seconds for one attempt; a hanging database is tried again later
SETTLE_AT_CLOSE_TIMEOUT = 5.0  # seconds for a last attempt when the bot stops
# The most writes committed in one transaction: a group stays a few milliseconds of SQLite's time.
GROUP_LIMIT = 500
# Seconds a process's lease lasts unless renewed. It is renewed every quarter of that; once it
# has expired, another process settles the rows it left pending (a process killed mid-request).
LEASE_SECONDS = 60.0
# A pending row written before migration 0006 names no process: it is settled as abandoned once
# older than any request of an earlier version can still be running (15 minutes at most).
OWNERLESS_PENDING_AGE = dt.timedelta(hours=1)


class Outcome(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    REFUSED = "refused"
    FAILED = "failed"
    CANCELLED = "cancelled"
    ABANDONED = "abandoned"  # its process is gone; settled by another (see _Lease)


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
        text = token_count(details.get("text_tokens"))
        image = token_count(details.get("image_tokens"))
        if text is None and image is None:
            text = token_count(usage.get("input_tokens"))  # no breakdown: a prompt is all text
        return cls(
            input_text=text, input_image=image, output=token_count(usage.get("output_tokens"))
        )


def _priced(price: Any, what: str) -> Decimal | None:
    """A price from bot.images.pricing; its failure leaves the cost unknown, not the row."""
    try:
        value = price()
    except Exception:
        log.exception("could not work out the %s of a generation; recorded as unknown", what)
        return None
    return value if isinstance(value, Decimal) else None


def _estimate(prepared: Priced) -> Decimal | None:
    if isinstance(prepared, PreparedText):
        return text_estimate(prepared)
    return estimate_cost(prepared)


def _settle_cost(
    prepared: Priced, usage: Mapping[str, Any] | None, returned: int, previews: int
) -> Decimal | None:
    if isinstance(prepared, PreparedText):
        return text_settle(prepared, usage)
    return settle_cost(prepared, usage, returned, previews=previews)


def _lock_key(scope: Scope, guild_id: int | None, member_id: int | None = None) -> int:
    """A 64-bit advisory lock key for one member in one server, one server, one user (guild
    None) or the whole bot (both None)."""
    name = f"imagine-budget:{scope.value}:{guild_id}:{member_id}".encode()
    return int.from_bytes(hashlib.blake2b(name, digest_size=8).digest(), "big", signed=True)


_pending = usage_ledger.c.outcome == Outcome.PENDING.value
# What a row counts against a money budget: a pending row its estimate; a refused row its settled
# cost (nothing when the service refused before generating); any other its cost, or its estimate
# where the cost is unknown (an answer that never arrived may still have been billed).
COUNTED_COST: ColumnElement[Any] = case(
    (_pending, usage_ledger.c.estimated_cost),
    (usage_ledger.c.outcome == Outcome.REFUSED.value, usage_ledger.c.cost),
    else_=func.coalesce(usage_ledger.c.cost, usage_ledger.c.estimated_cost),
)
COUNTED_IMAGES: ColumnElement[Any] = case(
    (_pending, usage_ledger.c.images_requested), else_=usage_ledger.c.images_delivered
)


class Ledger:
    """Writes the usage ledger; ``open`` before use, ``close`` at the end.

    ``metrics``: where the spend of every settlement is counted, once, when it is written (a
    settlement kept for later counts when the database takes it), and the rows this process
    settles for processes that are gone."""

    def __init__(
        self,
        url: str,
        *,
        member_budget: tuple[Budget, ...] = (),
        server_budget: tuple[Budget, ...] = (),
        user_budget: tuple[Budget, ...] = (),
        total_budget: tuple[Budget, ...] = (),
        metrics: Metrics | None = None,
    ) -> None:
        """``member_budget``, ``server_budget``: the defaults a server's settings may replace;
        ``user_budget``, ``total_budget``: the operator's bot-wide budgets, which none does."""
        self.url = url
        self.member_budget = member_budget
        self.server_budget = server_budget
        self.user_budget = user_budget
        self.total_budget = total_budget
        self.metrics = metrics
        self._engine: AsyncEngine | None = None
        self._sessions: async_sessionmaker[Any] | None = None
        self._sqlite = make_url(url).get_backend_name() == "sqlite"
        self._lease = _Lease(self._sqlite)
        self._group_commit: _GroupCommit | None = None
        self._write_turn = asyncio.Lock()  # SQLite: one writer of this process at a time
        # Settlements not yet written, by row id; a row settled again replaces its values.
        self._unsettled: dict[int, _Unwritten] = {}
        self._retrying: asyncio.Task[None] | None = None
        self._keeper: tasks.Loop[Any] | None = None  # renews the lease, settles the abandoned
        self._keeper_failing = False

    @property
    def is_open(self) -> bool:
        return self._engine is not None

    @property
    def owner(self) -> str:
        """The lease this process's rows are written under."""
        return self._lease.owner

    def write_turn(self) -> contextlib.AbstractAsyncContextManager[object]:
        """Held by anything else that writes to this database from this process (the buttons'
        saved requests): on SQLite, writers take turns with the ledger's group commit rather
        than fall into SQLite's busy wait."""
        return self._write_turn if self._sqlite else contextlib.nullcontext()

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            raise RuntimeError("the ledger is not open")
        return self._engine

    async def open(self) -> None:
        """Take this process's lease and settle the rows of processes that are gone; raise
        :class:`~bot.store.db.DatabaseUnavailable` if the database does not take the lease."""
        self._engine = open_engine(self.url)
        self._sessions = async_sessionmaker(self._engine, expire_on_commit=False)
        if self._sqlite:
            self._group_commit = _GroupCommit(self._engine, self._write_turn, self._lease)
        try:
            await self._renew_lease()
            await self.settle_abandoned()
        except DATABASE_FAILURES as exc:
            await self._engine.dispose()
            self._engine = self._sessions = self._group_commit = None
            raise DatabaseUnavailable(describe_failure(self.url, exc)) from None
        # A discord.ext.tasks loop, the framework's way of doing periodic work (and one its test
        # harness knows to be waiting on purpose between runs).
        self._keeper = _Keeper(self._keep_lease, seconds=LEASE_SECONDS / 4)
        self._keeper.start()

    async def close(self) -> None:
        keeping = self._keeper.get_task() if self._keeper is not None else None
        for task in (keeping, self._retrying):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._keeper = self._retrying = None
        if self._unsettled and self._sessions is not None:
            try:
                async with asyncio.timeout(SETTLE_AT_CLOSE_TIMEOUT):
                    await self._write_unsettled()
            except Exception as exc:  # still away: said below, row by row
                log.warning("a last attempt to settle failed (%s)", type(exc).__name__)
        if self._unsettled:
            log.error(
                "the usage ledger could not settle row(s) %s before stopping: they stay pending, "
                "their estimates reserved against the budgets, until another process (or this "
                "one started again) settles them as abandoned once this one's lease has expired",
                ", ".join(map(str, sorted(self._unsettled))),
            )
        if self._group_commit is not None:
            await self._group_commit.close()  # what is waiting is written first
            self._group_commit = None
        if self._engine is not None:
            # The lease is left to expire: whatever this process could not settle is then
            # settled by the next to look, and the lease's row is deleted with it.
            await self._engine.dispose()
            self._engine = None
            self._sessions = None

    @property
    def unsettled(self) -> frozenset[int]:
        """The rows whose settlement the database has not taken yet."""
        return frozenset(self._unsettled)

    async def check_writable(self) -> None:
        """Write a row as an admission does, and delete it, in one committed transaction: raise
        what the database raises when it cannot take a request now. Nobody else sees the row."""
        engine = self.engine
        snowflake = 2**62  # as many digits as a Discord id
        # No smaller than an admission's row: where the database has room for this one, it has
        # room for a request's (on a full disk, space frees and fills a row at a time).
        probe = {
            "requested_at": dt.datetime.now(dt.UTC),
            "guild_id": snowflake,
            "channel_id": snowflake,
            "member_id": snowflake,
            "kind": "generate",
            "model": "health-check-of-the-usage-ledger-write-path",
            "size": "1024x1024",
            "quality": "medium",
            "images_requested": 10,
            "images_delivered": 0,
            "outcome": Outcome.PENDING.value,
            "estimated_cost": Decimal("999.123456"),
        }
        async with self.write_turn(), engine.connect() as connection:
            if self._sqlite:  # as the group commit begins: with the write lock
                await connection.execution_options(**{BEGIN_IMMEDIATE: True})
            async with connection.begin():
                inserted = await connection.execute(
                    insert(usage_ledger).values(probe).returning(usage_ledger.c.id)
                )
                row_id = inserted.scalar_one()
                await connection.execute(delete(usage_ledger).where(usage_ledger.c.id == row_id))

    async def admitted(
        self,
        prepared: Priced,
        *,
        member_id: int,
        guild_id: int | None,
        channel_id: int | None,
        at: dt.datetime | None = None,
        chosen_budgets: tuple[tuple[Budget, ...], tuple[Budget, ...]] | None = None,
        context: str = "guild",
        installation: str = "guild",
    ) -> int:
        """Record an admitted request as pending, with its estimated cost; return its row id.
        ``chosen_budgets``: the member's and the server's budgets of this server (its settings), in
        place of the defaults the ledger was made with; the user's and the bot's always apply.
        ``guild_id`` None: the member's personal scope (a DM, a group DM, a server that did not
        install the bot), whose MEMBER_BUDGET is a window of its own; ``context`` and
        ``installation`` say which (bot/requests/where.py).

        Raises :class:`~bot.store.budgets.OverBudget` or :class:`~bot.store.budgets.PriceUnknown`
        when a
        budget refuses it (nothing is recorded), else what the database raises: in every case the
        caller then does not take the request."""
        if self._engine is None:
            raise RuntimeError("the ledger is not open")
        at = at or dt.datetime.now(dt.UTC)
        estimate = _priced(lambda: _estimate(prepared), "estimated cost")
        row = {
            "requested_at": at,
            "guild_id": guild_id,
            "channel_id": channel_id,
            "member_id": member_id,
            "kind": prepared.kind,
            "model": prepared.model,
            "size": prepared.size,
            "quality": prepared.quality,
            "images_requested": prepared.count,
            "images_delivered": 0,
            "outcome": Outcome.PENDING.value,
            "estimated_cost": estimate,
            "owner": self._lease.owner,
            "context": context,
            "installation": installation,
        }
        budgets = self._budgets(guild_id, chosen_budgets)
        _priced_where_needed(budgets, prepared, estimate)
        if self._group_commit is not None:
            return await self._group_commit.admit(_Admission(row, budgets, prepared, estimate))
        renewed_from = None
        async with self._engine.connect() as connection, connection.begin():
            locked: set[Scope] = set()
            for scope, budget in budgets:  # in the order of Scope: see the module's docstring
                if scope not in locked:
                    await self._lock(connection, scope, member_id, guild_id)
                    locked.add(scope)
                used = await _used(connection, scope, budget, member_id, guild_id, at)
                needed = _needed(budget, prepared, estimate)
                refusal = _refusal(scope, budget, used, needed, at, personal=guild_id is None)
                if refusal is not None:
                    raise OverBudget(refusal)
            if not self._lease.fresh():  # in the row's transaction: never a row without a lease
                renewed_from = await self._lease.take(connection)
            inserted = await connection.execute(
                insert(usage_ledger).values(row).returning(usage_ledger.c.id)
            )
            row_id = int(inserted.scalar_one())
        if renewed_from is not None:
            self._lease.renewed(renewed_from)
        return row_id

    async def check_budgets(
        self,
        prepared: Priced,
        *,
        member_id: int,
        guild_id: int | None,
        at: dt.datetime | None = None,
        chosen_budgets: tuple[tuple[Budget, ...], tuple[Budget, ...]] | None = None,
    ) -> None:
        """Raise what :meth:`admitted` would raise for a budget's refusal of ``prepared`` now,
        recording nothing: for an edit, before its files are downloaded. :meth:`admitted`
        decides in the end (two requests checked at once may both pass here)."""
        budgets = self._budgets(guild_id, chosen_budgets)
        if not budgets:
            return
        at = at or dt.datetime.now(dt.UTC)
        estimate = _priced(lambda: _estimate(prepared), "estimated cost")
        _priced_where_needed(budgets, prepared, estimate)
        async with self.engine.connect() as connection:  # a read (SQLite: WAL, no lock)
            await _within(connection, budgets, prepared, estimate, member_id, guild_id, at)

    def has_budgets(
        self,
        guild_id: int | None,
        chosen: tuple[tuple[Budget, ...], tuple[Budget, ...]] | None = None,
        *,
        money: bool = False,
    ) -> bool:
        """Whether a budget applies to requests in ``guild_id`` (``chosen``: its server's, as
        :meth:`admitted` takes them): only then may an admission be refused for anything but the
        database failing. ``money``: a budget in money (only it bounds what a request that makes
        no images, describe or enhance, costs)."""
        budgets = self._budgets(guild_id, chosen)
        return any(not budget.images for _, budget in budgets) if money else bool(budgets)

    def _budgets(
        self,
        guild_id: int | None,
        chosen: tuple[tuple[Budget, ...], tuple[Budget, ...]] | None = None,
    ) -> list[tuple[Scope, Budget]]:
        """The budgets a request in ``guild_id`` is checked against (a direct message has no
        server's), in the order of :class:`~bot.store.budgets.Scope`."""
        member, server = chosen or (self.member_budget, self.server_budget)
        server = server if guild_id is not None else ()
        return [
            (scope, budget)
            for scope, budgets in (
                (Scope.MEMBER, member),
                (Scope.SERVER, server),
                (Scope.USER, self.user_budget),
                (Scope.TOTAL, self.total_budget),
            )
            for budget in budgets
        ]

    @staticmethod
    async def _lock(
        connection: AsyncConnection, scope: Scope, member_id: int, guild_id: int | None
    ) -> None:
        """Wait for, and hold until the transaction ends, the lock of ``scope``'s budgets."""
        if connection.dialect.name != "postgresql":
            return  # SQLite: BEGIN IMMEDIATE already holds the only write lock
        key = _lock_key(scope, *_whose(scope, member_id, guild_id))
        await connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})

    async def sending(self, row_id: int) -> bool:
        """Record that the request of ``row_id`` is about to be sent to the image service: from
        here on, if this process dies, its row is settled at its reserved estimate rather than
        released. False: the row is no longer pending (another process settled it as abandoned
        while this one could not renew its lease), and the request must not be sent."""
        if self._engine is None:
            raise RuntimeError("the ledger is not open")
        if self._group_commit is not None:
            return await self._group_commit.mark_sent(_Sent(row_id))
        async with self._engine.begin() as connection:
            marked = await connection.execute(_mark_sent([row_id]))
            return marked.first() is not None

    async def settle(
        self,
        row_id: int,
        outcome: Outcome,
        prepared: Priced,
        *,
        images_returned: int | None = None,
        images_delivered: int = 0,
        request_id: str | None = None,
        usage: Mapping[str, Any] | None = None,
        previews_returned: int = 0,
        sent: bool = True,
    ) -> Decimal | None:
        """Record how an admitted request ended; return its settled cost (None: unknown).

        ``images_returned``: how many images the service sent back (None: no answer arrived),
        which with ``usage`` (and the ``previews_returned`` a stream carried) settles the cost; a
        request the service refused generated nothing, and one never ``sent`` cost nothing (its
        reservation against the budgets is released).
        The cost is counted in the metrics once the database has taken the settlement."""
        if self._sessions is None:
            raise RuntimeError("the ledger is not open")
        if outcome is Outcome.REFUSED:
            images_returned = 0
        cost = None
        if not sent:
            cost = Decimal(0)
        elif images_returned is not None:
            returned = images_returned
            cost = _priced(
                lambda: _settle_cost(prepared, usage, returned, previews_returned), "cost"
            )
        values = _settled(
            outcome,
            images_delivered=images_delivered,
            request_id=request_id[:REQUEST_ID_CHARS] if request_id else None,
            tokens=Tokens.from_usage(usage),
            cost=cost,
        )
        unwritten = _Unwritten(values, prepared.model)
        self._unsettled[row_id] = unwritten
        try:
            await self._write_settlement(row_id, unwritten)
        except BaseException:  # a failure, or the caller's timeout: written later in any case
            self._retry_later()
            raise
        return cost

    async def _write_settlement(self, row_id: int, unwritten: _Unwritten) -> None:
        if self._sessions is None:
            raise RuntimeError("the ledger is not open")
        values = unwritten.values
        if self._group_commit is not None:
            await self._group_commit.settle(_Settlement(row_id, values))
        else:
            async with self._sessions.begin() as session:
                await session.execute(
                    update(usage_ledger).where(usage_ledger.c.id == row_id).values(values)
                )
        # Counted by whichever write takes it off the list: an attempt given up on that the
        # database took anyway, and the retry that writes it again, count it once between them.
        if self._unsettled.get(row_id) is unwritten:  # not settled anew meanwhile
            del self._unsettled[row_id]
            if self.metrics is not None:
                self.metrics.spent(unwritten.model, values["cost"])

    async def _write_unsettled(self) -> None:
        """Write every settlement kept for later; one that fails does not hold up the others
        (the first failure is raised once all were tried)."""
        failure: Exception | None = None
        for row_id, unwritten in list(self._unsettled.items()):
            try:
                await self._write_settlement(row_id, unwritten)
            except Exception as exc:
                failure = failure or exc
        if failure is not None:
            raise failure

    def _retry_later(self) -> None:
        if self._retrying is None or self._retrying.done():
            self._retrying = asyncio.create_task(self._retry(), name="ledger-settle-retry")

    async def _retry(self) -> None:
        pause = SETTLE_RETRY_FIRST
        while self._unsettled:
            await asyncio.sleep(pause)
            try:
                async with asyncio.timeout(SETTLE_ATTEMPT_TIMEOUT):
                    await self._write_unsettled()
            except Exception as exc:
                log.warning(
                    "the usage ledger still cannot settle %d row(s) (%s); trying again in %.0fs",
                    len(self._unsettled),
                    type(exc).__name__,
                    min(pause * 2, SETTLE_RETRY_LONGEST),
                )
                pause = min(pause * 2, SETTLE_RETRY_LONGEST)
            else:
                log.info("the usage ledger settled the rows it could not settle before")

    # -- the lease: rows left pending by a process that is gone ---------------------------------

    async def _renew_lease(self) -> None:
        """Extend this process's lease, or take it again if it had expired (said once)."""
        async with self.write_turn(), self.engine.begin() as connection:
            asked = time.monotonic()
            clock = _database_clock(self._sqlite)
            extended = await connection.execute(
                update(ledger_leases)
                .where(
                    ledger_leases.c.owner == self._lease.owner, ledger_leases.c.expires_at > clock
                )
                .values(expires_at=clock + LEASE_SECONDS)
            )
            lost = extended.rowcount == 0 and self._lease.taken
            if extended.rowcount == 0:
                asked = await self._lease.take(connection)
        self._lease.renewed(asked)
        if lost:
            log.warning(
                "this process's lease on its ledger rows had expired (it could not reach the "
                "database for over %.0fs): another process may have settled its pending rows as "
                "abandoned; its own settlements replace those",
                LEASE_SECONDS,
            )

    async def _keep_lease(self) -> None:
        """One run of the keeper: renew the lease, settle what processes that are gone left."""
        if self._keeper is not None and self._keeper.current_loop == 0:
            return  # open() has just done both
        try:
            async with asyncio.timeout(SETTLE_ATTEMPT_TIMEOUT):
                await self._renew_lease()
                await self.settle_abandoned()
        except Exception as exc:
            if not self._keeper_failing:
                log.warning(
                    "the usage ledger cannot renew this process's lease (%s); trying again "
                    "every %.0fs",
                    type(exc).__name__,
                    LEASE_SECONDS / 4,
                )
            self._keeper_failing = True
        else:
            if self._keeper_failing:
                log.info("the usage ledger renewed this process's lease again")
            self._keeper_failing = False

    async def settle_abandoned(self) -> list[int]:
        """Settle the rows left pending by processes that are gone (their lease expired, or rows
        older than :data:`OWNERLESS_PENDING_AGE` that name none) as abandoned; return their ids.

        A row whose request may have reached the image service (``sent_at`` set, or a row that
        does not say) is settled at an unknown cost, so that its reserved estimate keeps counting
        against the budgets (never less than it may have cost); one never sent, at 0."""
        clock = _database_clock(self._sqlite)
        ledger = usage_ledger.c
        alive = exists().where(
            ledger_leases.c.owner == ledger.owner, ledger_leases.c.expires_at > clock
        )
        cutoff = dt.datetime.now(dt.UTC) - OWNERLESS_PENDING_AGE
        async with self.write_turn(), self.engine.begin() as connection:
            # The leases first: on PostgreSQL their rows stay locked until this commits, so a
            # process coming back waits, then takes a new lease for the rows it writes next.
            gone = await connection.execute(
                delete(ledger_leases)
                .where(ledger_leases.c.expires_at <= clock, ledger_leases.c.owner != self.owner)
                .returning(ledger_leases.c.owner, ledger_leases.c.process)
            )
            processes = {owner: process for owner, process in gone}
            settled = await connection.execute(
                update(usage_ledger)
                .where(
                    ledger.outcome == Outcome.PENDING.value,
                    or_(
                        and_(ledger.owner.is_not(None), ledger.owner != self.owner, ~alive),
                        and_(ledger.owner.is_(None), ledger.requested_at < cutoff),
                    ),
                )
                .values(
                    outcome=Outcome.ABANDONED.value,
                    settled_at=dt.datetime.now(dt.UTC),
                    cost=case(
                        (and_(ledger.owner.is_not(None), ledger.sent_at.is_(None)), Decimal(0)),
                        else_=None,
                    ),
                )
                .returning(ledger.id, ledger.owner, ledger.kind, ledger.model, ledger.cost)
            )
            rows = list(settled.all())
        self._report_abandoned(rows, processes)
        return sorted(row.id for row in rows)

    def _report_abandoned(self, rows: list[Any], processes: dict[str, str]) -> None:
        by_owner: dict[str | None, list[Any]] = {}
        for row in rows:
            by_owner.setdefault(row.owner, []).append(row)
            if self.metrics is not None:
                self.metrics.request(Outcome.ABANDONED.value, _command(row.kind))
                self.metrics.spent(row.model, row.cost)
        for owner, settled in by_owner.items():
            if owner is None:
                who = "an earlier version of the bot"
            else:
                who = f"process {processes.get(owner, owner)}, whose lease expired"
            sent = sum(1 for row in settled if row.cost is None)
            log.warning(
                "settled %d row(s) left pending by %s, as abandoned: %d may have been sent "
                "(their estimates stay counted), %d were not (released); row(s) %s",
                len(settled),
                who,
                sent,
                len(settled) - sent,
                ", ".join(str(row.id) for row in sorted(settled, key=lambda row: row.id)),
            )


class _Keeper(tasks.Loop[Any]):
    """The lease's keeper: a discord.ext.tasks loop that waits its interval from the end of each
    run on the event loop's monotonic clock.

    ``tasks.loop`` schedules run n at the first run's time plus n intervals on the wall clock: a
    host clock stepped back an hour (NTP correcting a host that booted with a wrong clock) left
    the lease unrenewed for the hour, and other processes abandoned this one's live rows (its
    waiting requests refused their turn); stepped forward a day, it renewed the lease 5,760 times
    back to back, a database write each."""

    def __init__(self, keep: Callable[[], Coroutine[Any, Any, None]], *, seconds: float) -> None:
        super().__init__(
            keep,
            seconds=seconds,
            minutes=0,
            hours=0,
            time=discord.utils.MISSING,
            count=None,
            reconnect=False,
            name="ledger-lease",
        )

    def _try_sleep_until(self, when: dt.datetime) -> asyncio.Future[Any]:
        # Whenever it was meant to wake: an interval from now (the wait itself is monotonic).
        interval = dt.timedelta(seconds=self.seconds or 0)
        waited: asyncio.Future[Any] = super()._try_sleep_until(discord.utils.utcnow() + interval)
        return waited


def _command(kind: str) -> str:
    """What the metrics count a row's request under (see Generation.command)."""
    return kind if kind in ("edit", "describe", "enhance") else "imagine"


def _database_clock(sqlite_database: bool) -> ColumnElement[float]:
    """Now, in seconds since the epoch, on the database's clock (every process shares it)."""
    if sqlite_database:
        return literal_column("((julianday('now') - 2440587.5) * 86400.0)", Double)
    return literal_column("CAST(EXTRACT(EPOCH FROM clock_timestamp()) AS DOUBLE PRECISION)", Double)


def _mark_sent(row_ids: list[int]) -> Any:
    """Mark rows still pending as sent; returns the ids it marked."""
    return (
        update(usage_ledger)
        .where(usage_ledger.c.id.in_(row_ids), usage_ledger.c.outcome == Outcome.PENDING.value)
        .values(sent_at=dt.datetime.now(dt.UTC))
        .returning(usage_ledger.c.id)
    )


class _Lease:
    """This process's claim on the rows it admits: a row in ``ledger_leases`` that it renews.

    Its expiry is on the database's clock, so that processes on several hosts agree on it. A
    row is written only while its lease has at least half its time left: this process renews
    it every quarter, and an admission that finds it older (the renewals failing) takes it again
    in the row's own transaction, so that no other process can see the row without a live lease.
    Another process settles a row only once its lease has expired: a process that reaches the
    database never has its rows taken."""

    def __init__(self, sqlite_database: bool) -> None:
        self.owner = uuid.uuid4().hex
        self.process = f"{socket.gethostname()} pid {os.getpid()}"[:200]
        self._sqlite = sqlite_database
        self._fresh_until = float("-inf")  # time.monotonic()
        self.taken = False

    def fresh(self) -> bool:
        """Whether the lease has at least half its time left."""
        return time.monotonic() < self._fresh_until

    async def take(self, connection: AsyncConnection) -> float:
        """Take (or extend) the lease in ``connection``'s transaction; return when it was asked,
        for :meth:`renewed` once that transaction has committed."""
        asked = time.monotonic()
        values = {
            "owner": self.owner,
            "expires_at": _database_clock(self._sqlite) + LEASE_SECONDS,
            "process": self.process,
        }
        dialect = sqlite if self._sqlite else postgresql
        statement = dialect.insert(ledger_leases).values(values)
        await connection.execute(
            statement.on_conflict_do_update(
                index_elements=[ledger_leases.c.owner],
                set_={"expires_at": statement.excluded.expires_at},
            )
        )
        return asked

    def renewed(self, asked: float) -> None:
        # The database read its clock after ``asked``: the lease runs at least until then plus
        # LEASE_SECONDS (both clocks run at the same rate); admissions leave half of it unused.
        self._fresh_until = max(self._fresh_until, asked + LEASE_SECONDS / 2)
        self.taken = True


@dataclass(slots=True)
class _Unwritten:
    """A settlement not yet taken by the database, and what the metrics count once it is."""

    values: dict[str, Any]
    model: str


def _whose(scope: Scope, member_id: int, guild_id: int | None) -> tuple[int | None, int | None]:
    """The server (None: direct messages, or every server) and the member (None: everyone) whose
    requests a budget of ``scope`` counts; for USER and TOTAL, the server is None."""
    if scope is Scope.MEMBER:
        return guild_id, member_id
    if scope is Scope.SERVER:
        return guild_id, None
    if scope is Scope.USER:
        return None, member_id
    return None, None


async def _used(
    connection: AsyncConnection,
    scope: Scope,
    budget: Budget,
    member_id: int,
    guild_id: int | None,
    at: dt.datetime,
) -> Decimal:
    """What the ledger counts against ``budget`` in its period so far."""
    guild, member = _whose(scope, member_id, guild_id)
    return await counted_since(
        connection,
        budget.period.start(at),
        guild,
        member,
        images=budget.images,
        every_server=scope.operators_only,
    )


def _needed(budget: Budget, prepared: Priced, estimate: Decimal | None) -> Decimal:
    return Decimal(prepared.count) if budget.images else (estimate or Decimal(0))


def _refusal(
    scope: Scope,
    budget: Budget,
    used: Decimal,
    needed: Decimal,
    at: dt.datetime,
    *,
    personal: bool = False,
) -> BudgetRefusal | None:
    """Whether ``budget`` leaves room for ``needed`` beside ``used``; the refusal when not.
    ``personal``: the request is in the member's personal scope (no server's)."""
    if used + needed <= budget.amount:
        return None
    return BudgetRefusal(scope, budget, used, needed, budget.period.reset(at), personal=personal)


def _priced_where_needed(
    budgets: list[tuple[Scope, Budget]], prepared: Priced, estimate: Decimal | None
) -> None:
    """A money budget cannot count a request whose price is unknown: PriceUnknown."""
    if any(not budget.images for _, budget in budgets) and estimate is None:
        scope = next(scope for scope, budget in budgets if not budget.images)
        raise PriceUnknown(prepared.model, scope)


async def _within(
    connection: AsyncConnection,
    budgets: list[tuple[Scope, Budget]],
    prepared: Priced,
    estimate: Decimal | None,
    member_id: int,
    guild_id: int | None,
    at: dt.datetime,
) -> None:
    """Raise OverBudget where a budget has no room for the request beside what it counts."""
    for scope, budget in budgets:
        used = await _used(connection, scope, budget, member_id, guild_id, at)
        needed = _needed(budget, prepared, estimate)
        refusal = _refusal(scope, budget, used, needed, at, personal=guild_id is None)
        if refusal is not None:
            raise OverBudget(refusal)


def _new_future() -> asyncio.Future[Any]:
    return asyncio.get_running_loop().create_future()


@dataclass(eq=False)
class _Admission:
    row: dict[str, Any]
    budgets: list[tuple[Scope, Budget]]
    prepared: Priced
    estimate: Decimal | None
    written: asyncio.Future[int] = field(default_factory=lambda: _new_future())

    def key(self, scope: Scope, budget: Budget) -> tuple[object, ...]:
        """What a budget's total is kept under within one group."""
        whose = _whose(scope, self.row["member_id"], self.row["guild_id"])
        return (scope, budget, *whose, budget.period.start(self.row["requested_at"]))


@dataclass(eq=False)
class _Settlement:
    row_id: int
    values: dict[str, Any]
    written: asyncio.Future[None] = field(default_factory=lambda: _new_future())


@dataclass(eq=False)
class _Sent:
    """A row whose request is about to be sent; True once marked, False if no longer pending."""

    row_id: int
    written: asyncio.Future[bool] = field(default_factory=lambda: _new_future())


_Write = _Admission | _Settlement | _Sent


_SETTLE_MANY = (
    update(usage_ledger)
    .where(usage_ledger.c.id == bindparam("row_id"))
    .values({name: bindparam(name) for name in ("settled_at", "outcome", "images_delivered",
             "request_id", "input_text_tokens", "input_image_tokens", "output_tokens", "cost")})
)  # fmt: skip


class _GroupCommit:
    """One writer task for SQLite: the writes waiting when it is free go in one transaction.

    The writer runs while there is something to write and ends when nothing is left, so an idle
    ledger holds no task."""

    def __init__(self, engine: AsyncEngine, write_turn: asyncio.Lock, lease: _Lease) -> None:
        self._engine = engine
        self._write_turn = write_turn
        self._lease = lease
        self._waiting: list[_Write] = []
        self._writer: asyncio.Task[None] | None = None

    async def admit(self, admission: _Admission) -> int:
        self._submit(admission)
        return await admission.written

    async def settle(self, settlement: _Settlement) -> None:
        self._submit(settlement)
        await settlement.written

    async def mark_sent(self, sent: _Sent) -> bool:
        self._submit(sent)
        return await sent.written

    async def close(self) -> None:
        if self._writer is not None:
            await self._writer  # what is waiting is written first

    def _submit(self, write: _Write) -> None:
        self._waiting.append(write)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_groups(), name="ledger-group-commit")

    async def _write_groups(self) -> None:
        while self._waiting:
            group = self._waiting[:GROUP_LIMIT]
            del self._waiting[:GROUP_LIMIT]
            writes = [w for w in group if not w.written.done()]  # not given up on
            if not writes:
                continue
            try:
                await self._write(writes)
            except Exception as exc:  # every write of the group failed with it
                for write in writes:
                    if not write.written.done():
                        write.written.set_exception(exc)
            except asyncio.CancelledError:
                for write in [*writes, *self._waiting]:
                    write.written.cancel()
                raise

    async def _write(self, writes: list[_Write]) -> None:
        admissions = [w for w in writes if isinstance(w, _Admission)]
        settlements = [w for w in writes if isinstance(w, _Settlement)]
        sending = [w for w in writes if isinstance(w, _Sent)]
        taken: list[_Admission] = []
        refused: list[tuple[_Admission, OverBudget]] = []
        marked: set[int] = set()
        renewed_from = None
        async with self._write_turn, self._engine.connect() as connection:
            if any(a.budgets for a in admissions):
                await connection.execution_options(**{BEGIN_IMMEDIATE: True})
            async with connection.begin():
                if settlements:
                    await connection.execute(
                        _SETTLE_MANY, [{"row_id": s.row_id, **s.values} for s in settlements]
                    )
                if sending:
                    result = await connection.execute(_mark_sent([w.row_id for w in sending]))
                    marked = set(map(int, result.scalars()))
                if admissions and not self._lease.fresh():  # see _Lease
                    renewed_from = await self._lease.take(connection)
                totals: dict[tuple[object, ...], Decimal] = {}
                for admission in admissions:
                    refusal = await self._within_budgets(connection, admission, totals)
                    if refusal is not None:
                        refused.append((admission, OverBudget(refusal)))
                    else:
                        taken.append(admission)
                ids: list[int] = []
                if taken:
                    inserted = await connection.execute(
                        insert(usage_ledger).returning(
                            usage_ledger.c.id, sort_by_parameter_order=True
                        ),
                        [a.row for a in taken],
                    )
                    ids = [int(row_id) for row_id in inserted.scalars()]
        if renewed_from is not None:
            self._lease.renewed(renewed_from)
        for settlement in settlements:
            if not settlement.written.done():
                settlement.written.set_result(None)
        for sent in sending:
            if not sent.written.done():
                sent.written.set_result(sent.row_id in marked)
        for admission, over in refused:
            if not admission.written.done():
                admission.written.set_exception(over)
        for admission, row_id in zip(taken, ids, strict=True):
            if admission.written.done():  # its request gave up waiting: it was never sent
                self._submit(_Settlement(row_id, _settled(Outcome.CANCELLED, cost=Decimal(0))))
            else:
                admission.written.set_result(row_id)

    @staticmethod
    async def _within_budgets(
        connection: AsyncConnection,
        admission: _Admission,
        totals: dict[tuple[object, ...], Decimal],
    ) -> BudgetRefusal | None:
        """Check ``admission`` against its budgets, counting what this group took before it;
        when it fits, count it too."""
        row = admission.row
        needs = []
        for scope, budget in admission.budgets:
            key = admission.key(scope, budget)
            if key not in totals:
                totals[key] = await _used(
                    connection,
                    scope,
                    budget,
                    row["member_id"],
                    row["guild_id"],
                    row["requested_at"],
                )
            needed = _needed(budget, admission.prepared, admission.estimate)
            refusal = _refusal(
                scope,
                budget,
                totals[key],
                needed,
                row["requested_at"],
                personal=row["guild_id"] is None,
            )
            if refusal is not None:
                return refusal
            needs.append((key, needed))
        for key, needed in needs:
            totals[key] += needed
        return None


def _settled(
    outcome: Outcome,
    *,
    images_delivered: int = 0,
    request_id: str | None = None,
    tokens: Tokens = Tokens(),
    cost: Decimal | None,
) -> dict[str, Any]:
    """The columns a settlement writes (those of ``_SETTLE_MANY``)."""
    return {
        "settled_at": dt.datetime.now(dt.UTC),
        "outcome": outcome.value,
        "images_delivered": images_delivered,
        "request_id": request_id,
        "input_text_tokens": tokens.input_text,
        "input_image_tokens": tokens.input_image,
        "output_tokens": tokens.output,
        "cost": cost,
    }


async def counted_since(
    connection: AsyncConnection,
    since: dt.datetime,
    guild_id: int | None,
    member_id: int | None,
    *,
    images: bool,
    every_server: bool = False,
) -> Decimal:
    """What counts against a budget since ``since``: dollars spent or reserved (``images``:
    images delivered or reserved), in ``guild_id`` (None: direct messages; with
    ``every_server``, in every server and direct message, and ``guild_id`` is not read), by
    ``member_id`` (None: every member)."""
    counted = COUNTED_IMAGES if images else COUNTED_COST
    query = select(func.coalesce(func.sum(counted), 0, type_=MONEY)).where(
        usage_ledger.c.requested_at >= since
    )
    if not every_server:
        query = query.where(
            usage_ledger.c.guild_id == guild_id
            if guild_id is not None
            else usage_ledger.c.guild_id.is_(None)
        )
    if member_id is not None:
        query = query.where(usage_ledger.c.member_id == member_id)
    total = await connection.scalar(query)
    # SQLite sums NUMERIC as a float: rounded back to the ledger's millionths of a dollar.
    used = Decimal(str(total or 0))
    return used.to_integral_value() if images else used.quantize(SIX_PLACES)
