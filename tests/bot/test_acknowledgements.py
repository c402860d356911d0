"""Acknowledgements first: a request acknowledged during a burst starts nothing more until the
others are acknowledged, half a second at most; a request that ends unacknowledged (refused,
failed) stops counting."""

from __future__ import annotations

import asyncio

from bot.requests.acknowledgements import AcknowledgementsFirst


async def test_a_request_acknowledged_waits_for_the_others_of_the_burst() -> None:
    burst = AcknowledgementsFirst(longest_wait=30)
    first, second, third = burst.started(), burst.started(), burst.started()
    first.done()

    waiting = asyncio.ensure_future(burst.after_the_others())
    await asyncio.sleep(0.05)
    assert not waiting.done()
    second.done()
    await asyncio.sleep(0.05)
    assert not waiting.done()
    third.done()  # acknowledged, or ended without (refused): either way no longer waited for
    await asyncio.wait_for(waiting, 5)


async def test_a_request_never_acknowledged_holds_the_others_back_no_longer_than_the_bound() -> (
    None
):
    burst = AcknowledgementsFirst(longest_wait=0.1)
    burst.started()  # never acknowledged
    acknowledged = burst.started()
    acknowledged.done()

    await asyncio.wait_for(burst.after_the_others(), 5)  # returns; the bound's figure: 0.1 s

    assert burst.waiting == 1


async def test_with_none_waiting_nothing_waits_and_a_request_counts_once() -> None:
    burst = AcknowledgementsFirst(longest_wait=30)
    await asyncio.wait_for(burst.after_the_others(), 1)
    alone = burst.started()
    alone.done()
    alone.done()  # the acknowledgement, then the job's end
    assert burst.waiting == 0
    await asyncio.wait_for(burst.after_the_others(), 1)
