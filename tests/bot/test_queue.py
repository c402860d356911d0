"""The global cap on generations in flight and its first-come, first-served line."""

from __future__ import annotations

import asyncio

import pytest

from bot.requests.queue import GenerationQueue, Ticket


async def test_never_more_than_capacity_in_flight_and_first_come_first_served() -> None:
    queue = GenerationQueue(3)
    peak = 0
    order: list[int] = []
    release = asyncio.Event()

    async def job(number: int) -> None:
        nonlocal peak
        async with queue.slot():
            peak = max(peak, queue.in_flight)
            order.append(number)
            await release.wait()

    tasks = [asyncio.create_task(job(n)) for n in range(20)]
    await asyncio.sleep(0.01)
    assert queue.in_flight == 3
    assert queue.waiting == 17
    release.set()
    await asyncio.gather(*tasks)
    assert peak == 3
    assert order == list(range(20))
    assert (queue.in_flight, queue.waiting) == (0, 0)


async def test_positions_move_as_the_line_moves() -> None:
    queue = GenerationQueue(1)
    tickets: list[Ticket] = []
    gates = [asyncio.Event() for _ in range(3)]

    async def job(number: int) -> None:
        async with queue.slot(on_queued=tickets.append):
            await gates[number].wait()

    tasks = [asyncio.create_task(job(n)) for n in range(3)]
    await asyncio.sleep(0.01)
    assert [t.position for t in tickets] == [1, 2]
    gates[0].set()
    await asyncio.sleep(0.01)
    assert [t.position for t in tickets] == [0, 1]
    gates[1].set()
    gates[2].set()
    await asyncio.gather(*tasks)


async def test_a_cancelled_waiter_leaves_the_line_and_frees_nothing_it_did_not_hold() -> None:
    queue = GenerationQueue(1)
    tickets: list[Ticket] = []
    hold = asyncio.Event()

    async def job() -> None:
        async with queue.slot(on_queued=tickets.append):
            await hold.wait()

    first, second, third = (asyncio.create_task(job()) for _ in range(3))
    await asyncio.sleep(0.01)
    second.cancel()
    await asyncio.sleep(0.01)
    assert queue.waiting == 1
    assert tickets[1].position == 1  # the third moved up
    hold.set()
    await asyncio.gather(first, third)
    with pytest.raises(asyncio.CancelledError):
        await second
    assert (queue.in_flight, queue.waiting) == (0, 0)


async def test_cancelled_just_as_admitted_gives_the_slot_back() -> None:
    queue = GenerationQueue(1)

    async def job() -> None:
        async with queue.slot():
            raise AssertionError("a cancelled request must not run")

    async with queue.slot():
        second = asyncio.create_task(job())
        await asyncio.sleep(0.01)
        assert queue.waiting == 1
    # Leaving the slot admitted the second request; it is cancelled before it runs again.
    second.cancel()
    with pytest.raises(asyncio.CancelledError):
        await second
    assert (queue.in_flight, queue.waiting) == (0, 0)
    async with queue.slot():
        assert queue.in_flight == 1


# -- the adaptive limit ----------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_429_halves_the_limit_and_successes_raise_it_again() -> None:
    clock = Clock()
    queue = GenerationQueue(256, clock=clock)
    queue.in_flight = 40  # as if forty requests were out when the service pushed back
    queue.record(429, {})
    assert queue.capacity == 20
    clock.now += 10
    queue.record(429, {})
    assert queue.capacity == 10
    clock.now += 10
    for _ in range(5):
        queue.record(200, {})
    assert queue.capacity == 15
    queue.in_flight = 0
    for _ in range(1000):
        queue.record(200, {})
    assert queue.capacity == 256  # never above what was configured


async def test_one_burst_of_429s_is_one_cut_and_earlier_successes_do_not_undo_it() -> None:
    clock = Clock()
    queue = GenerationQueue(256, clock=clock)
    queue.in_flight = 64
    answers = [429] * 8 + [200] * 56
    for status in answers:  # the whole burst arrives within a second
        queue.record(status, {})
        clock.now += 0.01
    assert queue.capacity == 32
    for status in reversed(answers):  # the other order ends the same
        queue.record(status, {})
        clock.now += 0.01
    clock.now += 10
    queue.in_flight = 64
    queue.record(429, {})
    assert queue.capacity == 16


async def test_an_odd_rate_limit_header_is_ignored() -> None:
    queue = GenerationQueue(8)
    queue.in_flight = 3
    queue.record(200, {"x-ratelimit-remaining-requests": "\u00b2"})
    queue.record(200, {"x-ratelimit-remaining-requests": "lots"})
    assert queue.capacity == 8


async def test_a_nearly_spent_rate_limit_stops_the_growth() -> None:
    queue = GenerationQueue(256)
    queue.in_flight = 7
    queue.record(200, {"x-ratelimit-remaining-requests": "1"})
    assert queue.capacity == 7
    queue.record(200, {"x-ratelimit-remaining-requests": "500"})
    assert queue.capacity == 8
    queue.record(400, {})  # a refusal says nothing about the service's capacity
    assert queue.capacity == 8


async def test_requests_wait_while_the_limit_is_low_and_go_when_it_recovers() -> None:
    clock = Clock()
    queue = GenerationQueue(4, clock=clock)
    queue.in_flight = 2
    queue.record(429, {})  # down to 1, with two still out
    queue.in_flight = 0
    started: list[int] = []
    release = asyncio.Event()

    async def one(index: int) -> None:
        async with queue.slot():
            started.append(index)
            await release.wait()

    tasks = [asyncio.create_task(one(i)) for i in range(3)]
    await asyncio.sleep(0.01)
    assert (started, queue.waiting, queue.waited) == ([0], 2, 2)
    clock.now += 10
    queue.record(200, {})  # a success after the cut settled: the limit grows to 2
    await asyncio.sleep(0.01)
    assert started == [0, 1]
    release.set()
    await asyncio.gather(*tasks)
    assert started == [0, 1, 2]
