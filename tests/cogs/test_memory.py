"""Memory bounded by the processing slots, not by the members at once: through the real bot, a
request that has posted its images keeps none of their bytes, whatever still holds it up."""

from __future__ import annotations

import asyncio
import tracemalloc
from typing import Any

import pytest
from simcord.backend.cdn import CdnStore

from tests.cogs.support import declare_generation_waits, finish
from tests.fakes.images_api import FakeImagesAPI, incompressible_png

pytestmark = pytest.mark.simcord(settle_timeout=5.0)
SLOTS = 2
MEMBERS = 8


@pytest.fixture(autouse=True)
def uploads_kept_as_a_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    """simcord keeps each upload as the very bytes object the bot posted (a BytesIO shares its
    bytes): it keeps a copy here, so that what the bot holds is told from what Discord keeps."""
    real = CdnStore.store_attachment

    def store(
        self: Any, attachment_id: int, channel_id: int, filename: str, data: bytes, *rest: Any
    ) -> Any:
        return real(self, attachment_id, channel_id, filename, bytes(bytearray(data)), *rest)

    monkeypatch.setattr(CdnStore, "store_attachment", store)


def held_by_the_engine(snapshot: tracemalloc.Snapshot) -> int:
    """Bytes still allocated where the image engine made them (the answers' decoded images);
    simcord's own copy of each upload is made elsewhere and is not counted."""
    engine = snapshot.filter_traces([tracemalloc.Filter(True, "*/bot/images/*")])
    return sum(stat.size for stat in engine.statistics("filename"))


@pytest.mark.parametrize("bot_overrides", [{"processing_slots": SLOTS, "partial_images": 0}])
async def test_requests_delivered_while_the_ledger_is_slow_keep_no_image_bytes(
    simcord_env: Any, guild: Any, channel: Any, images_api: FakeImagesAPI
) -> None:
    """Eight members' images posted while the ledger's settlements are held up (a burst, or a
    slow database): what the bot keeps of the answers is bounded by the slots, not by the
    requests waiting on the ledger (before: every delivered request kept its image until its
    row was settled, eight images here, N in a burst)."""
    image = incompressible_png(600, 600)  # about 1 MB
    images_api.image_bytes = image
    declare_generation_waits(simcord_env)
    ledger = simcord_env.bot.services.ledger
    real_settle = ledger.settle
    go_on = asyncio.Event()
    waiting: list[int] = []

    async def slow_settle(*args: Any, **kwargs: Any) -> Any:
        waiting.append(1)
        await simcord_env.external_wait(go_on.wait(), reason="a slow database")
        return await real_settle(*args, **kwargs)

    ledger.settle = slow_settle
    tracemalloc.start()
    try:
        results = [
            await member.slash(channel, "imagine", prompt=f"cat {i}")
            for i, member in enumerate(
                guild.add_member(simcord_env.create_user(f"member{n}")) for n in range(MEMBERS)
            )
        ]
        for _ in range(200):
            if len(waiting) == MEMBERS:
                break
            await simcord_env.advance_time(0.25)
            await asyncio.sleep(0.01)
        held = held_by_the_engine(tracemalloc.take_snapshot())
    finally:
        tracemalloc.stop()
        go_on.set()
    await finish(simcord_env)
    assert len(waiting) == MEMBERS  # every request delivered, each waiting on the ledger
    assert all(len(result.response.attachments) == 1 for result in results)
    # What the slots may hold, plus one answer that may still be in the processing room when the
    # snapshot is taken, plus the engine's own small objects (its sentences: about 11 kB).
    # Measured: 2.17 MB or 3.26 MB (16 runs); 8.66 MB when every delivered request kept its bytes.
    bound = (SLOTS + 1) * len(image) + 64 * 1024
    assert held <= bound, f"{held:,} bytes held for {MEMBERS} requests"
