"""How many requests may wait on the image service at once, with a first-come, first-served queue.

A request waiting on the image service costs a socket, not memory, so the limit is set by what
the service allows, not by the bot: it starts at ``capacity`` (hundreds by default), halves when
the service answers 429, stops growing while its ``x-ratelimit-remaining-requests`` header says
it is nearly spent, and climbs back by one for each success. A request waits in line only when
the service is the bottleneck. Memory is bounded elsewhere (processing slots, bot/images).

Each waiter's ticket holds its current position, so the bot can show it to the people waiting.
How a waiter waits for its turn is handed in (``wait``): by default it simply awaits it; a test
harness that must know why the bot is idle (simcord) passes one that declares the wait.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager

log = logging.getLogger(__name__)

REMAINING_HEADER = "x-ratelimit-remaining-requests"
_ASCII_NUMBER = re.compile(r"[0-9]{1,9}")  # str.isdigit() also takes "²", which int() refuses


class Ticket:
    """One request's place in the queue."""

    def __init__(self) -> None:
        self.admitted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.position = 0  # 1 = next in line; 0 = admitted


WaitForTurn = Callable[[Awaitable[None]], Awaitable[object]]


async def wait_plainly(turn: Awaitable[None]) -> None:
    await turn


# After a cut, answers to requests sent before it keep arriving for about one generation's
# time: further 429s within this many seconds are the same push-back, not a new one, and
# successes within it do not undo the cut.
SETTLE_SECONDS = 5.0


class GenerationQueue:
    def __init__(
        self,
        capacity: int,
        *,
        wait: WaitForTurn = wait_plainly,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._clock = clock
        self._last_cut = -math.inf
        self.max_capacity = capacity
        self.capacity = capacity  # the limit in force: lowered when the service pushes back
        self._wait = wait
        self.in_flight = 0
        self.waited = 0  # requests that had to wait in line, since start
        self._waiting: deque[Ticket] = deque()

    def record(self, status: int, headers: Mapping[str, str]) -> None:
        """What the image service answered one attempt (the engine calls this for each)."""
        now = self._clock()
        settling = now - self._last_cut < SETTLE_SECONDS
        if status == 429:
            if settling:
                return  # the same push-back as the cut just made
            lowered = max(1, min(self.capacity, max(self.in_flight, 1)) // 2)
            self._last_cut = now
            if lowered < self.capacity:
                log.warning(
                    "the image service is rate-limiting: at most %d request(s) in flight now "
                    "(was %d)",
                    lowered,
                    self.capacity,
                )
                self.capacity = lowered
            return
        if not 200 <= status < 300:
            return
        remaining = headers.get(REMAINING_HEADER, "").strip()
        if _ASCII_NUMBER.fullmatch(remaining) and int(remaining) <= 1:
            # Nearly spent: no more than are already out until the service's window resets.
            self.capacity = max(1, min(self.capacity, self.in_flight))
            return
        if self.capacity < self.max_capacity and not settling:
            self.capacity += 1
            self._admit_next()

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def _renumber(self) -> None:
        for position, ticket in enumerate(self._waiting, start=1):
            ticket.position = position

    def _admit_next(self) -> None:
        while self._waiting and self.in_flight < self.capacity:
            ticket = self._waiting.popleft()
            ticket.position = 0
            if ticket.admitted.done():
                continue  # its waiter was cancelled and cleans up after itself
            self.in_flight += 1
            ticket.admitted.set_result(None)
        self._renumber()

    @asynccontextmanager
    async def slot(self, on_queued: Callable[[Ticket], None] | None = None) -> AsyncIterator[None]:
        """Hold one of the ``capacity`` slots; waits in line when all are taken.

        ``on_queued`` is called once, synchronously, with the ticket when the request has to wait.
        """
        if self.in_flight < self.capacity and not self._waiting:
            self.in_flight += 1
        else:
            self.waited += 1
            ticket = Ticket()
            self._waiting.append(ticket)
            self._renumber()
            if on_queued is not None:
                on_queued(ticket)
            try:
                await self._wait(ticket.admitted)
            except asyncio.CancelledError:
                if ticket in self._waiting:
                    self._waiting.remove(ticket)
                elif not ticket.admitted.cancelled():
                    self.in_flight -= 1  # admitted and cancelled at once: give the slot back
                self._admit_next()
                raise
        try:
            yield
        finally:
            self.in_flight -= 1
            self._admit_next()
