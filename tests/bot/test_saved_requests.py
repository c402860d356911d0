"""The requests kept for the buttons, in both databases the bot runs on."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from bot.images import ImageRequest, load_catalog, prepare_request
from bot.requests.saved_requests import SavedRequests
from bot.store.db import migrate, open_engine
from bot.store.ledger import Ledger

pytestmark = pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)

DISCORD_ID = 1_234_567_890_123_456_789  # a snowflake: needs 64 bits


@pytest.fixture
async def saved(database_url: str) -> AsyncIterator[SavedRequests]:
    engine = open_engine(database_url)
    try:
        await migrate(engine)
    finally:
        await engine.dispose()
    ledger = Ledger(database_url)
    await ledger.open()
    yield SavedRequests(ledger)
    await ledger.close()


async def test_a_request_comes_back_as_asked_and_goes_again_with_the_pressers_pseudonym(
    saved: SavedRequests,
) -> None:
    catalog = load_catalog()
    asked = ImageRequest(
        prompt="a flickering candle " * 1600,  # 32000 characters, the longest a model takes
        model="gpt-image-2.5-flare", size="1536x864", quality="high", count=1, user="asker",
        output_format="gif", background="opaque", complexity="low", frame_count=6,
        frame_duration_ms=120,
    )  # fmt: skip
    prepared = prepare_request(asked, catalog["gpt-image-2.5-flare"])

    key = await saved.save(prepared, member_id=DISCORD_ID, guild_id=DISCORD_ID, channel_id=None)
    back = await saved.load(key)

    assert back is not None
    assert (back.member_id, back.guild_id, back.channel_id) == (DISCORD_ID, DISCORD_ID, None)
    again = prepare_request(back.request(user="presser"), catalog["gpt-image-2.5-flare"])
    pseudonyms = {"user": "presser", "safety_identifier": "presser"}
    assert again.body == {**prepared.body, **pseudonyms}
    edited = back.request(user="presser", prompt="a candle", size="3072x1728")
    assert (edited.prompt, edited.size, edited.frame_count) == ("a candle", "3072x1728", 6)


async def test_a_key_that_was_never_saved_finds_nothing(saved: SavedRequests) -> None:
    assert await saved.load(404) is None


async def test_another_process_reads_what_this_one_saved_and_memory_stays_bounded(
    saved: SavedRequests,
) -> None:
    spec = load_catalog()["dall-e-2"]
    prompts = [f"{number} " + "x" * 98 for number in range(5)]  # 100 characters each
    keys = []
    for number, prompt in enumerate(prompts):
        prepared = prepare_request(ImageRequest(prompt=prompt, model=spec.name), spec)
        keys.append(await saved.save(prepared, member_id=number, guild_id=None, channel_id=None))
    elsewhere = SavedRequests(saved.ledger, remembered_chars=250)  # room for two prompts

    read = [await elsewhere.load(key) for key in keys]

    assert [found.prompt if found else None for found in read] == prompts
    assert sum(len(kept.prompt) for kept in elsewhere._recent.values()) <= 250


async def test_saves_at_once_get_each_their_own_key(saved: SavedRequests) -> None:
    spec = load_catalog()["dall-e-2"]
    prompts = [f"request {number}" for number in range(30)]
    prepared = [prepare_request(ImageRequest(prompt=p, model=spec.name), spec) for p in prompts]

    keys = await asyncio.gather(
        *(
            saved.save(request, member_id=number, guild_id=None, channel_id=None)
            for number, request in enumerate(prepared)
        )
    )

    assert len(set(keys)) == 30
    elsewhere = SavedRequests(saved.ledger)
    found = [await elsewhere.load(key) for key in keys]
    assert [(f.prompt, f.member_id) if f else None for f in found] == [
        (prompt, number) for number, prompt in enumerate(prompts)
    ]


async def test_the_follow_ups_a_set_was_posted_in_are_kept_for_this_process_and_the_next(
    saved: SavedRequests,
) -> None:
    spec = load_catalog()["dall-e-2"]
    posted = [
        await saved.save(
            prepare_request(ImageRequest(prompt=f"set {n}", model=spec.name), spec),
            member_id=DISCORD_ID,
            guild_id=DISCORD_ID,
            channel_id=DISCORD_ID,
        )
        for n in range(2)
    ]
    three_messages = posted[1]

    # Each follow-up is recorded as it is posted, with those before it, at once with the others.
    await asyncio.gather(
        saved.record_follow_ups(three_messages, (DISCORD_ID + 1,)),
        saved.record_follow_ups(three_messages, (DISCORD_ID + 1, DISCORD_ID + 2)),
    )

    follow_ups = (DISCORD_ID + 1, DISCORD_ID + 2)
    here = await saved.load(three_messages)
    assert here is not None and here.follow_up_ids == follow_ups
    elsewhere = SavedRequests(saved.ledger)  # a restarted bot has only the database
    found = [await elsewhere.load(key) for key in posted]
    assert [f.follow_up_ids if f else None for f in found] == [(), follow_ups]
