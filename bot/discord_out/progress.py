"""Live progress in the deferred reply while an image is made: previews, or the time elapsed.

Where the request streams, each partial image the service sends becomes a small JPEG (WebP when
it has transparency), made off the event loop, shown in the reply until the images replace it.
Otherwise, and until the first preview, the reply counts the seconds ("🎨 Generating… 20 s").
A preview's bytes hold room outside the processing slots (bot/images/processing.py) until it is
shown, replaced or no longer wanted: each of those releases it at once. One waiting to be shown
is dropped where a stream needs the room for what it must read (previews are a courtesy; the
images are the request).

Edits are throttled twice so that Discord's rate limits are never provoked, however many
requests run: each message is edited at most once every :data:`MIN_EDIT_INTERVAL` seconds, and
every progress edit of the bot draws on one shared :class:`EditBudget`. Nothing queues: a preview
that arrives while the last one is still fresh replaces the one waiting (only the newest is ever
shown), and an update the budget cannot pay for waits its turn with the others: a preview that
has arrived first, then the longest waiting.

One task per bot (the budget's) keeps the time for every display: a request adds no timer of its
own, whatever the number of requests in flight.

Previews are asked for only while the budget can show them. Each partial image is billed (100
image output tokens, paid by the member) and sent as large as the image, so one the budget cannot
show is money and bytes for nothing: under a burst nearly all would be replaced before shown.
At admission, before the request is priced, :meth:`EditBudget.hold_previews` grants a request
the previews that fit: those held by the requests in flight plus its own must stay within
:data:`PREVIEW_SHARE` of the edits the budget pays for over a typical generation (half: the
other half keeps the time in the other replies and their place in line). A request held from
admission, not from its display's start, so that a burst admitted in one second does not see
an empty budget; it gives them back when its images arrive or it ends otherwise (one
:class:`PreviewHold`, released once whatever the path). An over-budget request gets what still
fits, down to none: the simplest rule that uses the budget fully; none means no stream at all,
the reply counting the seconds as with ``PARTIAL_IMAGES=0``, and no preview's tokens reserved
or charged. The typical generation is measured: a moving average of how long streamed displays
ran until their images came.
"""

from __future__ import annotations

import asyncio
import functools
import io
import logging
import time
import warnings
from collections.abc import Callable

import discord
from PIL import Image

from bot.discord_out.delivery import run_in_encoder
from bot.discord_out.replies import Replies
from bot.i18n import _
from bot.images.processing import WaitFor, wait_plainly
from bot.images.streaming import PartialImage

log = logging.getLogger(__name__)

PREVIEW_LONG_SIDE = 512  # pixels
PREVIEW_QUALITY = 70
MIN_EDIT_INTERVAL = 1.5  # seconds between two edits of one message
ELAPSED_INTERVAL = 5.0  # seconds between elapsed-time updates
# Discord allows a bot 50 requests a second in all; progress may use a fifth of them, so the
# acknowledgements, images and answers always have room.
EDITS_PER_SECOND = 10.0
EDIT_BURST = 10
TICK = 0.25  # seconds: the longest a due update waits for the scheduler to look again
EARLY = 0.001  # seconds: a timer that fires this early is on time (float rounding)
STOP_WAIT = 5.0  # seconds an edit under way may take to finish once the images are ready
PREVIEW_ALT_TEXT = _("A rough preview of the image being generated.")
GENERATING_FOR = _("🎨 Generating… {seconds} s")
GENERATING_PREVIEW = _("🎨 Generating… {seconds} s (preview {shown} of {previews})")
# The share of the budget previews may count on: the rest is for the time elapsed in the other
# replies and the place in line of queued requests, which draw on the same budget.
PREVIEW_SHARE = 0.5
# Seconds a streamed generation takes, before any has been measured: gpt-image-1 (the default
# model) takes 20-30 s for a 1024x1024 image at medium quality; 25 s sits in the middle.
TYPICAL_GENERATION = 25.0
# Each measurement counts within these bounds (seconds): a stream stuck for minutes, or a gateway
# answering at once, must not open the gate to every request or close it for long.
MEASURED_RANGE = (5.0, 120.0)
SMOOTHING = 0.2  # the weight of the newest measurement in the moving average


class EditBudget:
    """A token bucket for progress edits, shared by every request of one bot, and the one task
    that tells each request's display when an edit is due."""

    def __init__(
        self,
        rate: float = EDITS_PER_SECOND,
        burst: int = EDIT_BURST,
        *,
        wait: WaitFor = wait_plainly,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``wait``: how the scheduler sleeps until the next update is due, and an edit waits for
        its preview to be made (a test harness that must know why the bot is idle passes one
        that declares the wait). ``clock``: seconds, the clock the loop's timers follow (a test
        harness with a clock of its own passes it)."""
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self.rate = rate
        self.burst = burst
        self.wait = wait
        self.clock = clock
        self._tokens = float(burst)
        self._updated: float | None = None
        self.spent = 0  # edits paid for, since start
        self.refused = 0  # edits put off for want of budget, since start
        self._displays: list[ProgressDisplay] = []
        self._scheduler: asyncio.Task[None] | None = None
        self.generation_seconds = TYPICAL_GENERATION  # a streamed generation, lately
        self.previews_held = 0  # previews asked for by the requests admitted and not yet done

    # -- previews: asked for only while they can be shown ------------------------------------

    def preview_capacity(self) -> int:
        """Previews the budget can show over a typical generation, within its share."""
        return int(self.rate * self.generation_seconds * PREVIEW_SHARE)

    def hold_previews(self, wanted: int) -> PreviewHold:
        """At admission: of the ``wanted`` previews, those that fit beside the ones held (all,
        fewer or none), held until released."""
        room = max(self.preview_capacity() - self.previews_held, 0)
        granted = min(max(wanted, 0), room)
        self.previews_held += granted
        return PreviewHold(self, granted)

    def measured(self, seconds: float) -> None:
        """A streamed generation took ``seconds`` from its display's start to its images."""
        low, high = MEASURED_RANGE
        sample = min(max(seconds, low), high)
        self.generation_seconds += SMOOTHING * (sample - self.generation_seconds)

    def try_take(self) -> bool:
        """Pay for one edit now, if the budget allows; never waits."""
        now = self.clock()
        if self._updated is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now
        if self._tokens >= 1:
            self._tokens -= 1
            self.spent += 1
            return True
        self.refused += 1
        return False

    # -- the scheduler -----------------------------------------------------------------------

    def _add(self, display: ProgressDisplay) -> None:
        self._displays.append(display)
        if self._scheduler is None or self._scheduler.done():
            loop = asyncio.get_running_loop()
            self._scheduler = loop.create_task(self._schedule(), name="imagine-progress")

    def _remove(self, display: ProgressDisplay) -> None:
        if display in self._displays:
            self._displays.remove(display)
        if not self._displays and self._scheduler is not None:
            self._scheduler.cancel()  # asleep: nothing left to keep the time for
            self._scheduler = None

    async def _schedule(self) -> None:
        while self._displays:
            now = self.clock()
            # A preview waiting first (the member pays for it, and it is lost when the next
            # one or the images come), then the longest waiting, so that a short budget is
            # shared out in turn. The previews are held to a share of the budget at admission
            # (hold_previews): the time elapsed in the other replies still moves.
            due = sorted(
                (display for display in self._displays if display.due_at() <= now + EARLY),
                key=lambda display: (not display.preview_waiting, display.due_at()),
            )
            for display in due:
                if not self.try_take():
                    break
                display.edit_now()
            soonest = min((display.due_at() for display in self._displays), default=now + TICK)
            delay = TICK if due else min(max(soonest - self.clock(), 0.0), TICK)
            await self.wait(asyncio.sleep(delay))


class PreviewHold:
    """The previews a request holds in its budget's count, from admission until released (its
    images arrived, or it ended another way). Releasing twice gives back nothing more."""

    __slots__ = ("_budget", "previews")

    def __init__(self, budget: EditBudget, previews: int) -> None:
        self._budget = budget
        self.previews = previews

    def keep(self, previews: int) -> None:
        """Keep no more than ``previews`` (the model streams fewer); the rest go back."""
        kept = min(max(previews, 0), self.previews)
        self._budget.previews_held -= self.previews - kept
        self.previews = kept

    def release(self) -> None:
        self.keep(0)


def make_preview(
    partial: PartialImage, long_side: int = PREVIEW_LONG_SIDE
) -> tuple[bytes, str] | None:
    """A small rendering of a partial image: (bytes, "jpeg" or "webp"), or None if it cannot be
    read. CPU-bound (base64, then decoding and scaling): run it off the event loop."""
    data = partial.decode()
    if data is None:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as opened:
                # The header is read, not the pixels: a small file can declare a huge image,
                # which decoding would turn into gigabytes.
                if opened.width * opened.height > partial.max_pixels:
                    log.warning(
                        "a partial image of %dx%d is larger than the request allows: no preview",
                        opened.width,
                        opened.height,
                    )
                    return None
                opened.draft("RGB", (long_side, long_side))  # JPEG: decode at a reduced scale
                transparent = "A" in opened.getbands() or "transparency" in opened.info
                image = opened.convert("RGBA" if transparent else "RGB")
        image.thumbnail((long_side, long_side), Image.Resampling.BILINEAR, reducing_gap=2.0)
        buffer = io.BytesIO()
        if transparent:
            image.save(buffer, format="WEBP", quality=PREVIEW_QUALITY, method=0)
        else:
            image.save(buffer, format="JPEG", quality=PREVIEW_QUALITY)
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError):
        return None
    return buffer.getvalue(), "webp" if transparent else "jpeg"


class ProgressDisplay:
    """The progress of one request, shown in its deferred reply from :meth:`start` to
    :meth:`stop`."""

    def __init__(
        self,
        replies: Replies,
        budget: EditBudget,
        *,
        previews: int = 0,
        hold: PreviewHold | None = None,
        most: int | None = None,
    ) -> None:
        """``hold``: the previews the request holds in the budget's count, released at
        :meth:`halt`; ``most``: the partial images the stream may carry in all (its images
        times ``previews``; None: no bound)."""
        self.replies = replies
        self.budget = budget
        self.previews = previews  # partial images asked for (0: the request does not stream)
        self.hold = hold
        self.most = most
        self.offered = 0  # partial images the stream carried
        self.shown_previews = 0
        self.elapsed_updates = 0
        self.dropped_previews = 0  # replaced by a newer one before they could be shown
        self._pending: PartialImage | None = None
        self._stopped = False
        self._sending = False  # an edit is on its way to Discord: it is let finish
        self._edit: asyncio.Task[None] | None = None
        self._started = 0.0
        self._last_edit: float | None = None

    def start(self) -> None:
        self._started = self.budget.clock()
        self.budget._add(self)

    def offer(self, partial: PartialImage) -> None:
        """A partial image arrived (called by the engine on the loop; returns at once). No more
        than the request asked for are taken (``most``): a service sending partial images
        without end must not spend the budget the other replies share."""
        self.offered += 1
        if self._stopped or (self.most is not None and self.offered > self.most):
            partial.release()
            return
        if self._pending is not None:
            self.dropped_previews += 1
            self._pending.release()  # never shown: its room goes back at once
        self._pending = partial
        # Until it is shown, a stream that needs its room for what it must read may take it.
        partial.droppable(functools.partial(self._dropped, partial))
        # Shown at once when the message and the budget allow; else when the scheduler says.
        now = self.budget.clock()
        if self.due_at() <= now + EARLY and self.budget.try_take():
            self.edit_now()

    def _dropped(self, partial: PartialImage) -> None:
        if self._pending is partial:
            self._pending = None
            self.dropped_previews += 1

    def arrived(self) -> None:
        """The images have arrived: a streamed generation's time is measured, then :meth:`halt`."""
        if not self._stopped and self.previews:
            self.budget.measured(self.budget.clock() - self._started)
        self.halt()

    def halt(self) -> None:
        """No more edits from now on (the images have arrived, to be posted once they hold a
        slot): a preview still waiting is dropped, one still being made is not sent. Returns
        at once; :meth:`stop` then waits for an edit already on its way."""
        self._stopped = True
        self.budget._remove(self)
        if self.hold is not None:
            self.hold.release()  # no more previews wanted: another request may have them
        if self._pending is not None:
            self._pending.release()
            self._pending = None
        edit = self._edit
        if edit is not None and not edit.done() and not self._sending:
            edit.cancel()  # still making the preview: nothing was sent

    async def stop(self) -> None:
        """No more edits; an edit on its way to Discord is let finish, so that it cannot land
        after (and over) the images or the failure message that follow."""
        self.halt()
        edit = self._edit
        if edit is None or edit.done():
            return
        try:
            # Through the budget's wait: for a test harness, Discord's answer is outside input.
            await self.budget.wait(self._landed(edit))
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # the request itself is being cancelled
        except Exception:  # noqa: S110 - Replies logs a failed edit; a timeout ends it here
            pass

    @staticmethod
    async def _landed(edit: asyncio.Task[None]) -> None:
        # Awaited itself, not through asyncio.wait: cancelling the request cancels it too.
        async with asyncio.timeout(STOP_WAIT):
            await edit

    @property
    def preview_waiting(self) -> bool:
        """A preview has arrived and is not shown yet."""
        return self._pending is not None

    def due_at(self) -> float:
        """When the next edit may be made (the budget's clock); infinity while one is under way."""
        if self._stopped or (self._edit is not None and not self._edit.done()):
            return float("inf")
        after_last = -float("inf") if self._last_edit is None else self._last_edit
        after_last += MIN_EDIT_INTERVAL
        if self._pending is not None:
            return after_last
        base = self._started if self._last_edit is None else self._last_edit
        return max(base + ELAPSED_INTERVAL, after_last)

    def edit_now(self) -> None:
        """Make the edit that is due (its budget paid for), in a task of its own."""
        loop = asyncio.get_running_loop()
        self._edit = loop.create_task(self._make_edit(), name="imagine-progress-edit")

    async def _make_edit(self) -> None:
        try:
            partial, self._pending = self._pending, None
            if partial is not None:
                partial.keep()
                await self._show_preview(partial)
            else:
                await self._show_elapsed()
        finally:
            self._sending = False
            self._last_edit = self.budget.clock()

    def _text(self) -> str:
        # Rounded: the scheduler wakes when an update is due, give or take float rounding.
        seconds = round(self.budget.clock() - self._started)
        if self.shown_previews:
            return GENERATING_PREVIEW.format(
                seconds=seconds, shown=self.shown_previews, previews=self.previews
            )
        return GENERATING_FOR.format(seconds=seconds)

    async def _show_elapsed(self) -> None:
        self.elapsed_updates += 1
        self._sending = True
        await self.replies.show_progress(self._text())

    async def _show_preview(self, partial: PartialImage) -> None:
        try:
            # Through the budget's wait: for a test harness, the encoder thread is outside input.
            encoding = asyncio.ensure_future(run_in_encoder(make_preview, partial))
            await self.budget.wait(encoding)
            made = encoding.result()
        finally:
            # Only the small rendering is kept (an encoding cancelled here still ends in its
            # thread, one per display at most).
            partial.release()
        if made is None:
            log.warning("a partial image could not be read; no preview shown")
            return
        if self._stopped:
            return  # the images came while the preview was being made
        data, kind = made
        self.shown_previews = min(self.shown_previews + 1, max(self.previews, 1))
        preview = discord.File(
            io.BytesIO(data),
            filename=f"preview.{'jpg' if kind == 'jpeg' else kind}",
            description=PREVIEW_ALT_TEXT.localized(self.replies.locale),
            spoiler=self.replies.spoiler,
        )
        self._sending = True
        await self.replies.show_preview(self._text(), preview)
