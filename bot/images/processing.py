"""Processing slots: how many answers are read, decoded, re-encoded and posted at once.

Bytes in memory are bounded where they enter: a request takes a slot once the image service's
response headers have arrived and before its body is read, and keeps it until its images are
posted. The other answers wait in the kernel's socket buffers (aiohttp stops reading a
connection whose buffer is full). Memory is then about the slots times the largest body,
however many requests are in flight upstream.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")
WaitFor = Callable[[Awaitable[object]], Awaitable[object]]

# Bodies above this are parsed in a worker thread. Parsing costs about 0.26 ms a megabyte (the
# base64 is lifted out of the JSON and decoded with SIMD), so below it the hop to a thread, and
# the wait for a free one, cost more than the few milliseconds the loop is held.
OFF_LOOP_THRESHOLD = 8 * 1024 * 1024


async def run_off_loop_if_large(size: int, func: Callable[[], T]) -> T:
    """Run ``func`` in a worker thread when its input is large enough to stall the loop."""
    if size >= OFF_LOOP_THRESHOLD:
        return await asyncio.to_thread(func)
    return func()


async def wait_plainly(awaitable: Awaitable[object]) -> object:
    return await awaitable


class ProcessingSlots:
    def __init__(self, count: int, *, wait: WaitFor = wait_plainly) -> None:
        if count < 1:
            raise ValueError("count must be at least 1")
        self.count = count
        self._semaphore = asyncio.Semaphore(count)
        self._wait = wait
        self.busy = 0  # slots held now
        self.waited = 0  # leases that had to wait for a slot, since start
        self.waiting = 0  # leases waiting for a slot now

    def lease(self) -> Lease:
        """A lease for one request; it takes a slot when the request's answer arrives."""
        return Lease(self)

    async def _take(self) -> None:
        if self._semaphore.locked():
            self.waited += 1
            self.waiting += 1
            try:
                await self._wait(self._semaphore.acquire())
            finally:
                self.waiting -= 1
        else:
            await self._semaphore.acquire()
        self.busy += 1

    def _give_back(self) -> None:
        self.busy -= 1
        self._semaphore.release()


class Lease:
    """One request's claim on a processing slot: held from its answer's headers to its reply."""

    def __init__(self, slots: ProcessingSlots) -> None:
        self._slots = slots
        self.held = False

    async def hold(self) -> None:
        """Take a slot, waiting for one if all are busy; holding one already is fine."""
        if not self.held:
            await self._slots._take()
            self.held = True

    def release(self) -> None:
        """Give the slot back (a retry's back-off, or the reply posted); safe to call twice."""
        if self.held:
            self.held = False
            self._slots._give_back()
