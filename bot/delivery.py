"""Fitting generated images to Discord's upload limits.

An image over the per-file limit is re-encoded, at falling quality and then smaller dimensions,
until it fits: as JPEG when it is opaque (thirty times faster than WebP on a 4K image, and as
small), as WebP when it has transparency to keep. Images are packed into messages of at most
ten files whose sizes add up to no more than the limit (so a message is accepted whether the
server counts per file or per request). Re-encoding runs in a worker thread: it takes hundreds
of milliseconds for a large image.
"""

from __future__ import annotations

import asyncio
import functools
import io
import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from PIL import Image

from bot.images import GeneratedImage

MAX_FILES_PER_MESSAGE = 10
_QUALITIES = (90, 80, 70)
_SMALLEST_SIDE = 64


@dataclass(frozen=True, slots=True, repr=False)
class Upload:
    filename: str
    data: bytes
    reencoded: bool = False

    def __repr__(self) -> str:
        return f"Upload({self.filename!r}, {len(self.data):,} bytes)"


@functools.cache
def _encoder() -> ThreadPoolExecutor:
    """Threads of their own for re-encoding, one a core: it is CPU-bound and takes hundreds of
    milliseconds, and in the shared default pool it would hold up the quick work queued behind."""
    return ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="reencode")


class ImageTooLarge(Exception):
    """Even the smallest re-encoding does not fit the limit."""


def _encode(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    if image.mode == "RGBA":
        # method 2 of 6: a third of the default's time for files a few percent larger.
        image.save(buffer, format="WEBP", quality=quality, method=2)
    else:
        # No `optimize`: its extra pass holds the GIL (120 ms on a 4K image), stalling the loop.
        image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def shrink_to_fit(data: bytes, limit: int) -> tuple[bytes, str]:
    """Re-encode ``data`` within ``limit`` bytes; returns the bytes and their format.

    CPU-bound (hundreds of milliseconds for a 4K image): call it off the event loop.
    """
    with Image.open(io.BytesIO(data)) as opened:
        transparent = "A" in opened.getbands() or "transparency" in opened.info
        image = opened.convert("RGBA" if transparent else "RGB")
    kind = "webp" if transparent else "jpeg"
    for quality in _QUALITIES:
        encoded = _encode(image, quality)
        if len(encoded) <= limit:
            return encoded, kind
    while min(image.size) > _SMALLEST_SIDE:
        # Bytes scale roughly with area: aim a little under the limit to converge in few steps.
        scale = max(min(math.sqrt(limit / len(encoded)) * 0.9, 0.9), 0.25)
        size = (max(int(image.width * scale), 1), max(int(image.height * scale), 1))
        image = image.resize(size, Image.Resampling.LANCZOS)
        encoded = _encode(image, _QUALITIES[-1])
        if len(encoded) <= limit:
            return encoded, kind
    raise ImageTooLarge(f"cannot bring an image under {limit:,} bytes")


async def prepare_uploads(
    images: Sequence[GeneratedImage], limit: int, stem: str = "imagine"
) -> list[Upload]:
    """One upload per image, each within ``limit`` bytes; only oversized images are re-encoded."""

    async def one(index: int, image: GeneratedImage) -> Upload:
        if len(image.data) <= limit:
            return Upload(f"{stem}-{index}.{image.format}", image.data)
        loop = asyncio.get_running_loop()
        data, kind = await loop.run_in_executor(_encoder(), shrink_to_fit, image.data, limit)
        return Upload(f"{stem}-{index}.{'jpg' if kind == 'jpeg' else kind}", data, reencoded=True)

    return list(await asyncio.gather(*(one(i, img) for i, img in enumerate(images, start=1))))


def pack(uploads: Sequence[Upload], limit: int) -> list[list[Upload]]:
    """Group uploads, in order, into messages of at most ten files and ``limit`` bytes."""
    messages: list[list[Upload]] = []
    current: list[Upload] = []
    total = 0
    for upload in uploads:
        size = len(upload.data)
        if current and (len(current) == MAX_FILES_PER_MESSAGE or total + size > limit):
            messages.append(current)
            current, total = [], 0
        current.append(upload)
        total += size
    if current:
        messages.append(current)
    return messages
