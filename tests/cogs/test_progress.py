"""Live progress in the reply, through simcord: previews from a stream, replaced by the images;
a failure mid-stream told privately; the time elapsed where the model does not stream."""

from __future__ import annotations

import asyncio
import io
from typing import Any, cast

import pytest
from PIL import Image

from bot.discord_out.progress import EditBudget, ProgressDisplay
from tests.cogs.support import Gate, private_reply, uploaded
from tests.fakes.images_api import (
    FakeImagesAPI,
    api_error,
    error_event,
    incompressible_png,
    make_image,
    partial_event,
    stream,
)


def edits_of_the_reply(env: Any) -> list[dict[str, Any]]:
    """What each edit of a deferred reply sent Discord, in order."""
    return [
        r.json
        for r in env.http_requests
        if r.method == "PATCH" and r.path.endswith("/messages/@original")
    ]


def filenames(edit: dict[str, Any]) -> list[str] | None:
    """The attachments an edit set (None: it left them as they were)."""
    attachments = edit.get("attachments")
    return None if attachments is None else [a["filename"] for a in attachments]


def asked_for_previews(images_api: FakeImagesAPI) -> dict[str, int]:
    """Each request's prompt, and the partial images it asked the service for (0: not streamed)."""
    asked = {}
    for request in images_api.generation_requests:
        body = request.body
        assert body.get("stream", False) == ("partial_images" in body)
        asked[body["prompt"]] = body.get("partial_images", 0)
    return asked


def stored(env: Any, filename: str) -> list[bytes]:
    """Every upload of that name simcord's CDN received."""
    blobs = env.backend.cdn._blobs
    return [data for url, data in blobs.items() if url.endswith("/" + filename)]


async def test_previews_show_in_the_reply_and_the_images_replace_them(
    simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI
) -> None:
    images_api.stream_pause = 0.2  # the service sends the partial images a moment apart

    result = await alice.slash(channel, "imagine", prompt="a red fox", model="gpt-image-1.5")

    body = images_api.generation_requests[0].body
    assert (body["stream"], body["partial_images"]) == (True, 2)
    edits = edits_of_the_reply(simcord_env)
    # First a preview (the second came within 1.5 s of it: dropped, not queued), then the image.
    assert [filenames(edit) for edit in edits] == [["preview.jpg"], ["imagine-1.png"]]
    assert edits[0]["content"].startswith("🎨 Generating…")
    assert edits[0]["content"].endswith("(preview 1 of 2)")
    assert edits[0]["attachments"][0]["description"]  # alt text
    (preview,) = stored(simcord_env, "preview.jpg")
    with Image.open(io.BytesIO(preview)) as image:
        assert (image.format, image.size) == ("JPEG", (512, 512))  # of a 1024x1024 partial
    # The reply holds the images alone: no preview, no progress text.
    reply = result.response
    assert [a.filename for a in reply.attachments] == ["imagine-1.png"]
    assert await uploaded(reply) == images_api.served
    assert not reply.content


async def test_previews_give_their_room_back_once_shown_or_replaced(
    simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI
) -> None:
    """A preview holds room outside the processing slots (its bytes are kept until shown):
    shown, dropped for a newer one, or left when the images come, it gives the room back."""
    images_api.stream_pause = 0.2
    images_api.partial_bytes = incompressible_png(300, 300)  # 360 KB of base64 each
    result = await alice.slash(channel, "imagine", prompt="a red fox", model="gpt-image-1.5")
    assert result.response.attachments
    edits = edits_of_the_reply(simcord_env)
    assert [filenames(edit) for edit in edits] == [["preview.jpg"], ["imagine-1.png"]]
    room = simcord_env.bot.admission.processing.room
    assert room.peak >= len(images_api.partial_bytes)
    assert room.used == 0


async def test_an_error_event_mid_stream_is_told_privately_and_the_preview_goes(
    simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI
) -> None:
    images_api.push(
        stream(
            partial_event(make_image(1024, 1024, shade=4), 0),
            error_event("Blocked.", "image_generation_user_error", "moderation_blocked"),
            pause=0.2,
        )
    )

    result = await alice.slash(channel, "imagine", prompt="a fox", model="gpt-image-1.5")

    assert private_reply(result).content == (
        "The image service's safety system blocked this prompt or its result. Try rephrasing it."
    )
    edits = edits_of_the_reply(simcord_env)
    assert filenames(edits[0]) == ["preview.jpg"]
    assert filenames(edits[-1]) == []  # the preview cleared before the reply went
    assert [m for m in channel.history() if m.author.bot] == []


async def test_a_model_that_does_not_stream_shows_the_time_elapsed(
    simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI
) -> None:
    gate = Gate(simcord_env)  # the image service takes its time
    result = await alice.slash(channel, "imagine", prompt="a fox", model="dall-e-3")

    await simcord_env.advance_time(5)
    assert result.response.content == "🎨 Generating… 5 s"
    await simcord_env.advance_time(3)
    assert result.response.content == "🎨 Generating… 5 s"  # every 5 seconds, not more often
    await simcord_env.advance_time(2)
    assert result.response.content == "🎨 Generating… 10 s"

    gate.open(0)
    await simcord_env.settle()
    assert "stream" not in images_api.generation_requests[0].body
    assert [a.filename for a in result.response.attachments] == ["imagine-1.png"]
    assert not result.response.content
    progress = [e for e in edits_of_the_reply(simcord_env) if filenames(e) is None]
    assert [e["content"] for e in progress] == ["🎨 Generating… 5 s", "🎨 Generating… 10 s"]


@pytest.mark.parametrize("bot_overrides", [{"partial_images": 0}])
async def test_previews_off_asks_for_no_stream_and_counts_the_seconds(
    simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI
) -> None:
    gate = Gate(simcord_env)
    result = await alice.slash(channel, "imagine", prompt="a fox", model="gpt-image-1.5")
    await simcord_env.advance_time(5)
    assert result.response.content == "🎨 Generating… 5 s"
    gate.open(0)
    await simcord_env.settle()
    body = images_api.generation_requests[0].body
    assert "stream" not in body and "partial_images" not in body
    assert [a.filename for a in result.response.attachments] == ["imagine-1.png"]


async def test_many_requests_share_one_budget_of_edits(
    simcord_env: Any, guild: Any, channel: Any, images_api: FakeImagesAPI
) -> None:
    """Twenty requests waiting at once: the bot's ten edits a second are shared out, the rest
    wait their turn (the longest waiting first), so every reply still moves."""
    budget: EditBudget = simcord_env.bot.services.edits
    gate = Gate(simcord_env)
    members = [guild.add_member(simcord_env.create_user(f"member{i}")) for i in range(20)]
    results = [
        await member.slash(channel, "imagine", prompt="a fox", model="dall-e-3")
        for member in members
    ]
    assert len(gate.opened) == 20

    await simcord_env.advance_time(5)
    updated = [r for r in results if r.response.content]
    assert len(updated) == budget.burst  # the budget's burst, not one edit per request
    for _ in range(8):
        await simcord_env.advance_time(0.5)
    assert all(r.response.content.startswith("🎨 Generating…") for r in results)
    assert budget.refused  # the budget did say no, and the rest were updated in turn

    for index in range(20):
        gate.open(index)
    await simcord_env.settle()
    assert all(r.response.attachments for r in results)


async def test_the_budget_never_pays_for_more_than_its_rate() -> None:
    budget = EditBudget(rate=10, burst=3)
    assert [budget.try_take() for _ in range(4)] == [True, True, True, False]
    await asyncio.sleep(0.11)
    assert [budget.try_take() for _ in range(2)] == [True, False]
    assert (budget.spent, budget.refused) == (4, 2)


@pytest.mark.parametrize("bot_overrides", [{"processing_slots": 1}])
async def test_once_the_images_have_arrived_no_preview_is_made_while_they_wait_for_a_slot(
    simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI
) -> None:
    """The image comes right behind its preview while the only processing slot is busy (a
    burst): the request waits for the slot with its image in hand and spends no encoding and
    no edit on progress meanwhile; the image replaces the deferred reply once it has a slot."""
    busy = simcord_env.bot.services.processing.lease()
    await busy.hold()
    result = await alice.slash(channel, "imagine", prompt="a red fox", model="gpt-image-1.5")
    await simcord_env.advance_time(6)  # long enough for a preview and a time-elapsed edit
    assert images_api.generation_requests and not result.response.attachments
    # Before: the preview (and the time elapsed) edited in while the image waited for its slot.
    assert edits_of_the_reply(simcord_env) == []
    busy.release()
    await simcord_env.settle()
    assert [filenames(edit) for edit in edits_of_the_reply(simcord_env)] == [["imagine-1.png"]]


async def test_a_burst_asks_for_previews_only_while_the_budget_can_show_them(
    simcord_env: Any, guild: Any, channel: Any, images_api: FakeImagesAPI
) -> None:
    """Eight members at once, when the budget can show seven previews over a generation (half
    of 10 edits a second, generations taking 1.5 s lately): the first three ask for their two
    previews, the fourth for the one left, the others for none (no stream, nothing paid for
    previews never seen), and their replies count the seconds."""
    budget: EditBudget = simcord_env.bot.services.edits
    budget.generation_seconds = 1.5
    gate = Gate(simcord_env)
    members = [guild.add_member(simcord_env.create_user(f"member{i}")) for i in range(8)]
    results = [
        await member.slash(channel, "imagine", prompt=f"fox {i}", model="gpt-image-1.5")
        for i, member in enumerate(members)
    ]
    assert budget.previews_held == 7

    await simcord_env.advance_time(5)
    assert [r.response.content for r in results] == ["🎨 Generating… 5 s"] * 8
    for index in range(8):
        gate.open(index)
    await simcord_env.settle()

    asked = asked_for_previews(images_api)
    assert [asked[f"fox {i}"] for i in range(8)] == [2, 2, 2, 1, 0, 0, 0, 0]  # before: all 2
    assert all(r.response.attachments for r in results)
    assert budget.previews_held == 0
    withheld = simcord_env.bot.metrics.registry.get_sample_value("imagine_previews_withheld_total")
    assert withheld == 1 + 4 * 2


async def test_previews_are_asked_for_again_once_the_requests_holding_them_end(
    simcord_env: Any, alice: Any, bob: Any, channel: Any, images_api: FakeImagesAPI
) -> None:
    """The budget has room for one request's previews: while it runs, the next gets none; once
    it ends (here refused by the service: however it ends), a new request has them again; and a
    request cancelled by a shutdown gives them back too."""
    budget: EditBudget = simcord_env.bot.services.edits
    budget.generation_seconds = 0.4  # two previews within half of 10 edits a second
    gate = Gate(simcord_env)
    images_api.push(api_error(400, "image_generation_user_error", "moderation_blocked"))
    refused = await alice.slash(channel, "imagine", prompt="fox 1", model="gpt-image-1.5")
    withheld = await bob.slash(channel, "imagine", prompt="fox 2", model="gpt-image-1.5")
    gate.open(0)
    await simcord_env.settle()
    assert "safety system" in private_reply(refused).content
    assert budget.previews_held == 0

    again = await alice.slash(channel, "imagine", prompt="fox 3", model="gpt-image-1.5")
    gate.open(1)
    gate.open(2)
    await simcord_env.settle()
    assert withheld.response.attachments and again.response.attachments
    asked = asked_for_previews(images_api)
    assert (asked["fox 1"], asked["fox 2"], asked["fox 3"]) == (2, 0, 2)

    cancelled = await bob.slash(channel, "imagine", prompt="fox 4", model="gpt-image-1.5")
    assert budget.previews_held == 2
    draining = asyncio.ensure_future(simcord_env.bot.admission.drain(0.2))
    await simcord_env.settle()
    await draining
    assert "your request was cancelled" in private_reply(cancelled).content
    assert budget.previews_held == 0


class StubDisplay:
    """What the budget's scheduler sees of a display: when it is due, and whether a preview
    waits; records the order it was given its edits in."""

    def __init__(self, name: str, due: float, preview: bool, edited: list[str]) -> None:
        self.name, self.due, self.preview_waiting, self._edited = name, due, preview, edited

    def due_at(self) -> float:
        return float("inf") if self.name in self._edited else self.due

    def edit_now(self) -> None:
        self._edited.append(self.name)


async def test_a_waiting_preview_is_shown_before_the_time_elapsed_in_other_replies() -> None:
    """Under a burst every reply's time-elapsed update is overdue: a preview that has arrived
    (paid for by its member, and lost once the next comes) is edited in first, not after them."""
    edited: list[str] = []

    class Stop(Exception):
        pass

    async def one_pass(sleep: Any) -> None:
        sleep.close()
        raise Stop

    budget = EditBudget(rate=10, burst=2, wait=one_pass, clock=lambda: 100.0)
    for index in range(6):
        budget._displays.append(StubDisplay(f"elapsed {index}", 90.0 + index, False, edited))  # type: ignore[arg-type]
    budget._displays.append(StubDisplay("preview", 99.0, True, edited))  # type: ignore[arg-type]

    with pytest.raises(Stop):
        await budget._schedule()

    assert edited == ["preview", "elapsed 0"]  # before: ["elapsed 0", "elapsed 1"]


async def test_a_set_of_images_holds_previews_for_each_image(
    simcord_env: Any, guild: Any, channel: Any, images_api: FakeImagesAPI
) -> None:
    """The stream carries its partial images per image: a set of four with two each is eight.
    With room for seven, the first set asks for one each (four), the next for none."""
    budget: EditBudget = simcord_env.bot.services.edits
    budget.generation_seconds = 1.5  # room for 7 previews
    gate = Gate(simcord_env)
    members = [guild.add_member(simcord_env.create_user(f"member{i}")) for i in range(2)]
    for i, member in enumerate(members):
        await member.slash(channel, "imagine", prompt=f"fox {i}", model="gpt-image-1.5", count=4)
    assert budget.previews_held == 4  # before: 2 + 2, for sets that stream 8 each

    for index in range(2):
        gate.open(index)
    await simcord_env.settle()
    asked = asked_for_previews(images_api)
    assert [asked["fox 0"], asked["fox 1"]] == [1, 0]  # before: [2, 2]
    assert budget.previews_held == 0


class StubPartial:
    """What the display does with a partial image: keeps it, or gives its room back."""

    def __init__(self) -> None:
        self.released = False

    def release(self) -> None:
        self.released = True

    def droppable(self, _: Any) -> None:
        pass


async def test_a_stream_carrying_more_partial_images_than_asked_for_shows_none_of_the_rest() -> (
    None
):
    """A service that sends partial images without end: those past what the request asked
    for are let go at once, and never replace the one waiting to be shown."""
    budget = EditBudget(rate=0.001, burst=1)
    assert budget.try_take()  # spent: nothing below is edited in at once
    display = ProgressDisplay(cast(Any, None), budget, previews=2, most=2)
    partials = [StubPartial() for _ in range(5)]

    for partial in partials:
        display.offer(cast(Any, partial))

    # The second replaced the first; the three extra went at once. Before: the fifth waited.
    assert [partial.released for partial in partials] == [True, False, True, True, True]
    assert display.preview_waiting
