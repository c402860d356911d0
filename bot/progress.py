"""Live progress in the deferred reply while an image is made: previews, or the time elapsed.

Where the request streams, each partial image the service sends becomes a small JPEG (WebP when
it has transparency), made off the event loop, shown in the reply until the images replace it.
Otherwise, and until the first preview, the reply counts the seconds ("🎨 Generating… 20 s").

Edits are throttled twice so that Discord's rate limits are never provoked, however many
requests run: each message is edited at most once every :data:`MIN_EDIT_INTERVAL` seconds, and
every progress edit of the bot draws on one shared :class:`EditBudget`. Nothing queues: a preview
that arrives while the last one is still fresh replaces the one waiting (only the newest is ever
shown), and an elapsed-time update the budget cannot pay for is skipped and retried a little
later, at a random moment so that requests started together do not keep colliding.
"""

from __future__ import annotations

import asyncio
import io
import logging
import math
import random
import warnings

import discord
from PIL import Image

from bot.delivery import run_in_encoder
from bot.images.processing import WaitFor, wait_plainly
from bot.images.streaming import PartialImage
from bot.replies import Replies

log = logging.getLogger(__name__)

PREVIEW_LONG_SIDE = 512  # pixels
PREVIEW_QUALITY = 70
MIN_EDIT_INTERVAL = 1.5  # seconds between two edits of one message
ELAPSED_INTERVAL = 5.0  # seconds between elapsed-time updates
# Discord allows a bot 50 requests a second in all; progress may use a fifth of them, so the
# acknowledgements, images and answers always have room.
EDITS_PER_SECOND = 10.0
EDIT_BURST = 10
STOP_WAIT = 5.0  # seconds an edit under way may take to finish once the images are ready
PREVIEW_ALT_TEXT = "A rough preview of the image being generated."


class EditBudget:
    """A token bucket for progress edits, shared by every request of one bot."""

    def __init__(
        self,
        rate: float = EDITS_PER_SECOND,
        burst: int = EDIT_BURST,
        *,
        wait: WaitFor = wait_plainly,
    ) -> None:
        """``wait``: how a progress display sleeps until its next edit is due (a test harness
        that must know why the bot is idle passes one that declares the wait)."""
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self.rate = rate
        self.burst = burst
        self.wait = wait
        self._tokens = float(burst)
        self._updated: float | None = None
        self.spent = 0  # edits paid for, since start
        self.refused = 0  # edits skipped for want of budget, since start

    def try_take(self) -> bool:
        """Pay for one edit now, if the budget allows; never waits."""
        now = asyncio.get_running_loop().time()
        if self._updated is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now
        if self._tokens >= 1:
            self._tokens -= 1
            self.spent += 1
            return True
        self.refused += 1
        return False


def make_preview(data: bytes, long_side: int = PREVIEW_LONG_SIDE) -> tuple[bytes, str] | None:
    """A small rendering of a partial image: (bytes, "jpeg" or "webp"), or None if it cannot be
    read. CPU-bound: run it off the event loop."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as opened:
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
    """The progress of one request, shown in its deferred reply until :meth:`stop`."""

    def __init__(self, replies: Replies, budget: EditBudget, *, previews: int = 0) -> None:
        self.replies = replies
        self.budget = budget
        self.previews = previews  # partial images asked for (0: the request does not stream)
        self.shown_previews = 0
        self.elapsed_updates = 0
        self.dropped_previews = 0  # replaced by a newer one before they could be shown
        self._pending: PartialImage | None = None
        self._stopped = False
        self._editing = False
        self._task: asyncio.Task[None] | None = None
        self._started = 0.0
        self._last_edit = -math.inf
        self._retry_at = 0.0

    def start(self) -> None:
        self._started = asyncio.get_running_loop().time()
        self._restart()

    def _restart(self) -> None:
        # The loop only ever sleeps (a plain sleep, which a test harness can drive) or edits:
        # news that may make an edit due sooner restarts it rather than waking it.
        if self._task is not None:
            self._task.cancel()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="imagine-progress")

    def offer(self, partial: PartialImage) -> None:
        """A partial image arrived (called by the engine on the loop; returns at once)."""
        if self._stopped:
            return
        if self._pending is not None:
            self.dropped_previews += 1
        self._pending = partial
        if not self._editing:  # an edit under way looks for the newest preview when it ends
            self._restart()

    async def stop(self) -> None:
        """No more edits; an edit under way is let finish, so that it cannot land after (and
        over) the images or the failure message that follow."""
        self._stopped = True
        task = self._task
        if task is None or task.done():
            return
        if not self._editing:
            task.cancel()
        await asyncio.wait({task}, timeout=STOP_WAIT)
        if not task.done():
            task.cancel()

    # -- the loop ------------------------------------------------------------------------------

    def _due_in(self, now: float) -> float:
        """Seconds until the next edit may be made."""
        after_last = self._last_edit + MIN_EDIT_INTERVAL
        if self._pending is not None:
            due = after_last
        else:
            base = self._started if self._last_edit == -math.inf else self._last_edit
            due = max(base + ELAPSED_INTERVAL, after_last)
        return max(due, self._retry_at) - now

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopped:
            delay = self._due_in(loop.time())
            if delay > 0:
                await self.budget.wait(asyncio.sleep(delay))
                continue
            if not self.budget.try_take():
                self._retry_at = loop.time() + random.uniform(0.3, 1.2)
                continue
            self._editing = True
            try:
                partial, self._pending = self._pending, None
                if partial is not None:
                    await self._show_preview(partial)
                else:
                    await self._show_elapsed(loop.time())
            finally:
                self._editing = False
            self._last_edit = loop.time()

    def _text(self, now: float) -> str:
        seconds = int(now - self._started)
        text = f"🎨 Generating… {seconds} s"
        if self.shown_previews:
            text += f" (preview {self.shown_previews} of {self.previews})"
        return text

    async def _show_elapsed(self, now: float) -> None:
        self.elapsed_updates += 1
        await self.replies.show_progress(self._text(now))

    async def _show_preview(self, partial: PartialImage) -> None:
        made = await run_in_encoder(make_preview, partial.data)
        if made is None:
            log.warning("a partial image could not be read; no preview shown")
            return
        if self._stopped:
            return  # the images came while the preview was being made
        data, kind = made
        self.shown_previews = min(self.shown_previews + 1, max(self.previews, 1))
        loop = asyncio.get_running_loop()
        preview = discord.File(
            io.BytesIO(data),
            filename=f"preview.{'jpg' if kind == 'jpeg' else kind}",
            description=PREVIEW_ALT_TEXT,
        )
        await self.replies.show_preview(self._text(loop.time()), preview)
