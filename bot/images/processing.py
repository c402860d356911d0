"""Processing slots: how many answers are read, decoded, re-encoded and posted at once; and the
room: how many bytes all the requests without a slot may hold between them.

Bytes in memory are bounded where they enter: a request takes a slot once the image service's
response headers have arrived and before its body is read, and keeps it until its images are
posted. The other answers wait in the kernel's socket buffers: a request stops reading its
connection while it waits for a slot or room (left to itself, aiohttp would read on to 128 KiB
and a read of 256 KiB past it), so a request waiting for its slot holds a socket, and the few
bytes it had received before it began to wait (measured with 48 hostile answers waiting: 148 KiB
a request, 524 KiB before; ``tests/images/test_processing.py``).

Two things must be held before there is a slot to hold them: a stream's previews (they arrive
while the image is still being made, a minute before its slot is needed) and an edit's input
images (downloaded from Discord before the request is sent, and sent again by a retry). Both
draw on the room, one budget of bytes shared by every request: :data:`ROOM_PER_SLOT` per slot
(64 MiB for 8 slots). Where it has no room for what it must hold, a request waits, reading
nothing more (the rest stays in the socket, or on Discord's CDN), for room or for a slot,
whichever comes first; with a slot, it needs no room: the slot covers what it holds. A global
budget rather than a small cap per request, because a preview is as large as its image (1-3 MB
at 1024x1024): with a small cap, every stream would take its slot at its first preview and hold
it idle for the rest of the generation. So, whatever the image service sends and however many
requests are in flight::

    memory ~ slots x (the largest response + an edit's inputs) + the room (slots x 8 MiB)
             + requests in flight x what came with their headers (under 256 KiB)

Slots and room are handed out first come, first served; a request waiting for both is in both
lines and takes whichever it is given first. Some room is only lent: a preview waiting to be
shown is let go, oldest first, before anyone has to wait for room (previews are a courtesy; a
stream that finds no room for a new one reads past it, see :mod:`bot.images.streaming`).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")
WaitFor = Callable[[Awaitable[object]], Awaitable[object]]

# Bodies above this are parsed in a worker thread. Parsing costs about 0.26 ms a megabyte (the
# base64 is lifted out of the JSON and decoded with SIMD), so below it the hop to a thread, and
# the wait for a free one, cost more than the few milliseconds the loop is held.
OFF_LOOP_THRESHOLD = 8 * 1024 * 1024
# Bytes all the requests without a slot may hold between them, per processing slot.
ROOM_PER_SLOT = 8 * 1024 * 1024
_SLOT = -1  # what a wait resolves to when it was given a slot (else: the bytes of room given)


async def run_off_loop_if_large(size: int, func: Callable[[], T]) -> T:
    """Run ``func`` in a worker thread when its input is large enough to stall the loop."""
    if size >= OFF_LOOP_THRESHOLD:
        return await asyncio.to_thread(func)
    return func()


async def wait_plainly(awaitable: Awaitable[object]) -> object:
    return await awaitable


class Room:
    """Bytes held outside the processing slots, by every request together: at most ``total``."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.used = 0
        self.peak = 0  # the most used at once, since start
        self.dropped = 0  # grants taken back to make room, since start
        self._line: deque[tuple[asyncio.Future[int], int]] = deque()
        # Grants whose bytes may be let go to make room (previews waiting to be shown), oldest
        # first, with what lets them go.
        self._droppable: dict[Grant, Callable[[], None]] = {}

    def grant(self) -> Grant:
        """An empty grant on this room, for one request's bytes."""
        return Grant(self)

    def _waiting(self) -> bool:
        while self._line and self._line[0][0].done():  # taken elsewhere, or given up
            self._line.popleft()
        return bool(self._line)

    def _take_now(self, size: int) -> bool:
        """Take ``size`` bytes if they are free and nobody waits for room (no overtaking)."""
        if self._waiting():
            return False
        self._make_space(size)
        if self.used + size > self.total:
            return False
        self._use(size)
        return True

    def _make_space(self, size: int) -> None:
        """Let droppable grants go, oldest first, until ``size`` more bytes fit (or none is
        left): what must be read comes before a preview nobody has looked at yet."""
        while self.used + size > self.total and self._droppable:
            grant = next(iter(self._droppable))
            drop = self._droppable.pop(grant)
            self.used -= grant.size
            grant.size = 0
            self.dropped += 1
            drop()

    def _use(self, size: int) -> None:
        self.used += size
        self.peak = max(self.peak, self.used)

    def _give_back(self, size: int) -> None:
        self.used -= size
        self._admit()

    def _admit(self) -> None:
        while self._waiting():
            turn, size = self._line[0]
            self._make_space(size)
            if self.used + size > self.total:
                return  # first come, first served: the next waits its turn too
            self._line.popleft()
            self._use(size)
            turn.set_result(size)


class Grant:
    """Room granted to one request: ``size`` bytes, given back by :meth:`release` (or shrunk
    and grown as what the request holds changes)."""

    def __init__(self, room: Room) -> None:
        self.room = room
        self.size = 0

    def __repr__(self) -> str:
        return f"Grant({self.size:,} bytes)"

    def resize(self, size: int) -> bool:
        """Cover ``size`` bytes now, if the room allows (shrinking always does)."""
        if size <= self.size:
            if size < self.size:
                extra, self.size = self.size - size, size
                self.room._give_back(extra)
            return True
        if not self.room._take_now(size - self.size):
            return False
        self.size = size
        return True

    def droppable(self, drop: Callable[[], None]) -> None:
        """Its bytes may be let go when the room runs short: ``drop`` is then called (it must
        let go of them at once), and the room is taken back, before anyone waits for room."""
        if self.size:
            self.room._droppable[self] = drop

    def keep(self) -> None:
        """No longer droppable (a preview being shown)."""
        self.room._droppable.pop(self, None)

    def split(self, size: int) -> Grant:
        """A grant of its own for ``size`` of these bytes (as many as this one covers), handed
        on with them: the rest stays here."""
        part = Grant(self.room)
        part.size = min(size, self.size)
        self.size -= part.size
        return part

    def release(self) -> None:
        self.keep()
        self.resize(0)


class ProcessingSlots:
    def __init__(
        self, count: int, *, wait: WaitFor = wait_plainly, room: int | None = None
    ) -> None:
        """``room``: bytes that may be held outside the slots (None: ROOM_PER_SLOT each)."""
        if count < 1:
            raise ValueError("count must be at least 1")
        self.count = count
        self.room = Room(count * ROOM_PER_SLOT if room is None else room)
        self._wait = wait
        self._line: deque[asyncio.Future[int]] = deque()
        self.busy = 0  # slots held now
        self.waited = 0  # leases that had to wait for a slot (or room), since start
        self.waiting = 0  # leases waiting for a slot (or room) now

    def lease(self) -> Lease:
        """A lease for one request; it takes a slot when the request's answer arrives."""
        return Lease(self)

    def _queued(self) -> bool:
        while self._line and self._line[0].done():
            self._line.popleft()
        return bool(self._line)

    async def _take(self, room_for: int | None = None) -> int:
        """A slot (:data:`_SLOT`), waiting for one if all are busy; with ``room_for``, or that
        many bytes of room (returned), whichever is free first."""
        if self.busy < self.count and not self._queued():
            self.busy += 1
            return _SLOT
        turn: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._line.append(turn)
        if room_for is not None:
            self.room._line.append((turn, room_for))
            self.room._admit()
            if turn.done():  # the room had it, for the first in its line
                return turn.result()
        self.waited += 1
        self.waiting += 1
        try:
            await self._wait(turn)
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():  # given, then cancelled: give it back
                self._give(turn.result())
            self._admit()
            self.room._admit()  # this wait may have been first in the room's line
            raise
        finally:
            self.waiting -= 1
        if turn.result() == _SLOT:
            self.room._admit()  # its place in the room's line was holding up the others
        return turn.result()

    def _give(self, granted: int) -> None:
        if granted == _SLOT:
            self._give_back()
        else:
            self.room._give_back(granted)

    def _give_back(self) -> None:
        self.busy -= 1
        self._admit()

    def _admit(self) -> None:
        while self.busy < self.count and self._queued():
            self.busy += 1
            self._line.popleft().set_result(_SLOT)


class Lease:
    """One request's claim on a processing slot: held from its answer's headers to its reply,
    and on the room for what it holds before then."""

    def __init__(self, slots: ProcessingSlots) -> None:
        self._slots = slots
        self.held = False
        # Kept through a retry's back-off and past the reply, until close(): the slot stands in
        # for room the request's inputs could not get.
        self.pinned = False
        self._kept: list[Grant] = []

    def grant(self) -> Grant:
        """An empty grant on the room (see :meth:`cover`)."""
        return self._slots.room.grant()

    async def hold(self) -> None:
        """Take a slot, waiting for one if all are busy; holding one already is fine."""
        if not self.held:
            await self._slots._take()
            self.held = True

    async def cover(self, grant: Grant, size: int) -> None:
        """Make ``grant`` cover ``size`` bytes that this request holds without a slot: at once
        where the room has them, else once it has, or once a slot is free, whichever comes
        first. With a slot (held already, or given first), the grant is released: the slot
        covers what the request holds."""
        if not self.held and grant.resize(size):
            return
        if not self.held:
            slots = self._slots
            extra = size - grant.size
            granted = await slots._take(extra if extra <= slots.room.total else None)
            if granted == _SLOT:
                self.held = True
            else:
                grant.size += granted
                return
        grant.release()

    async def keep(self, size: int) -> None:
        """Room for ``size`` bytes held until :meth:`close` (an edit's input images, sent again
        by a retry), or a slot kept as long where the slot comes first."""
        grant = self.grant()
        await self.cover(grant, size)
        if self.held:
            self.pinned = True
        else:
            self._kept.append(grant)

    def release(self) -> None:
        """Give the slot back (a retry's back-off, or the reply posted), unless it is pinned;
        safe to call twice."""
        if self.held and not self.pinned:
            self.held = False
            self._slots._give_back()

    def close(self) -> None:
        """The request is over: everything goes back, pinned slot and kept room too."""
        self.pinned = False
        for grant in self._kept:
            grant.release()
        self._kept.clear()
        self.release()
