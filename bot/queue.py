"""A global cap on generations in flight, with a first-come, first-served queue.

Each waiter's ticket holds its current position, so the bot can show it to the people waiting.
How a waiter waits for its turn is handed in (``wait``): by default it simply awaits it; a test
harness that must know why the bot is idle (simcord) passes one that declares the wait.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager


class Ticket:
    """One request's place in the queue."""

    def __init__(self) -> None:
        self.admitted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.position = 0  # 1 = next in line; 0 = admitted


WaitForTurn = Callable[[Awaitable[None]], Awaitable[object]]


async def wait_plainly(turn: Awaitable[None]) -> None:
    await turn


class GenerationQueue:
    def __init__(self, capacity: int, *, wait: WaitForTurn = wait_plainly) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._wait = wait
        self.in_flight = 0
        self._waiting: deque[Ticket] = deque()

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
