"""Fitting generated images to Discord's upload limits.

An image over the per-file limit is re-encoded, at falling quality and then smaller dimensions,
until it fits: as JPEG when it is opaque (thirty times faster than WebP on a 4K image, and as
small), as WebP when it has transparency to keep; an animated GIF is shrunk as a GIF so it keeps
moving. Discord shows no preview of an SVG, so each SVG goes out with a PNG rendering beside it.
Images are packed into messages of at most ten files whose sizes add up to no more than the
limit (so a message is accepted whether the server counts per file or per request).
Re-encoding runs in a worker thread: it takes hundreds of milliseconds for a large image.
"""

from __future__ import annotations

import asyncio
import functools
import io
import logging
import math
import os
import re
import subprocess
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from PIL import Image, ImageSequence

from bot.images import GeneratedImage

T = TypeVar("T")

MAX_FILES_PER_MESSAGE = 10
_QUALITIES = (90, 80, 70)
_SMALLEST_SIDE = 64

# SVG previews. Rendering time grows with the drawing, not the file (a few hundred blurred
# shapes take tens of seconds), so it is bounded by the file's size, the time and the memory.
MAX_SVG_TO_RENDER = 5 * 1024 * 1024
SVG_RENDER_TIMEOUT = 10.0  # seconds
_RENDER_MEMORY = 2 * 1024**3  # address space of the rendering process, in bytes
_PREVIEW_LONG_SIDE = (256, 2048)  # a declared size is brought within these, in pixels
_PREVIEW_UNSIZED = 1024  # the long side of an SVG that declares no size
# Where an SVG may point: within itself or at inline data. resvg reads any other reference
# from this machine's disk (a picture of ours would be posted; /dev/zero would never end), and
# an entity could spell a reference in a way a pattern cannot see.
_HREF = re.compile(r"""href\s*=\s*(["'])(.*?)\1""", re.IGNORECASE | re.DOTALL)
_ENTITY = re.compile(r"<!ENTITY", re.IGNORECASE)
# resvg_py holds the GIL for the whole render, so a thread would stall the event loop with it:
# it runs in a child process, which can also be limited and killed. Isolated (-I) and with an
# empty environment, it sees neither the bot's modules nor its secrets.
_RENDER_SCRIPT = """
import sys
try:
    import resource
    resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[3]),) * 2)
except (ImportError, ValueError, OSError):
    pass
import resvg_py
size = {sys.argv[1]: int(sys.argv[2])}
svg = sys.stdin.buffer.read().decode("utf-8")
sys.stdout.buffer.write(resvg_py.svg_to_bytes(svg_string=svg, **size))
"""

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, repr=False)
class Upload:
    filename: str
    data: bytes
    reencoded: bool = False
    description: str | None = None  # alt text
    preview_of: str | None = None  # on a rendering of an SVG: that SVG's filename
    preview_failed: bool = False  # on an SVG: it could not be rendered, so it goes alone
    image: int = 0  # which image of the set it shows (1-based): an SVG and its rendering share one

    def __repr__(self) -> str:
        return f"Upload({self.filename!r}, {len(self.data):,} bytes)"


@functools.cache
def _encoder() -> ThreadPoolExecutor:
    """Threads of their own for re-encoding, one a core: it is CPU-bound and takes hundreds of
    milliseconds, and in the shared default pool it would hold up the quick work queued behind."""
    return ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="reencode")


async def run_in_encoder(func: Callable[..., T], *args: Any) -> T:
    """Run CPU-bound image work (``func(*args)``) in the re-encoding threads, off the loop."""
    return await asyncio.get_running_loop().run_in_executor(_encoder(), func, *args)


class ImageTooLarge(Exception):
    """Even the smallest re-encoding does not fit the limit."""


class SvgNotRendered(Exception):
    """An SVG cannot be rendered: malformed, too large, too slow, or it points outside itself."""


def _smaller(size: tuple[int, int], encoded: int, limit: int) -> tuple[int, int]:
    """The next size to try for an image that encoded to ``encoded`` bytes, over ``limit``."""
    # Bytes scale roughly with area: aim a little under the limit to converge in few steps.
    scale = max(min(math.sqrt(limit / encoded) * 0.9, 0.9), 0.25)
    return max(int(size[0] * scale), 1), max(int(size[1] * scale), 1)


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
        image = image.resize(_smaller(image.size, len(encoded), limit), Image.Resampling.LANCZOS)
        encoded = _encode(image, _QUALITIES[-1])
        if len(encoded) <= limit:
            return encoded, kind
    raise ImageTooLarge(f"cannot bring an image under {limit:,} bytes")


def _encode_gif(data: bytes, size: tuple[int, int]) -> bytes:
    """Every frame of the GIF ``data`` at ``size``, with its duration and the loop count."""
    frames: list[Image.Image] = []
    durations: list[int] = []
    with Image.open(io.BytesIO(data)) as opened:
        loop = opened.info.get("loop")  # absent: the animation plays once
        # Decoded afresh for each size, so only the smaller frames are ever held together.
        for frame in ImageSequence.Iterator(opened):
            durations.append(int(frame.info.get("duration", 100)))
            frames.append(frame.convert("RGBA").resize(size, Image.Resampling.LANCZOS))
    looping = {} if loop is None else {"loop": loop}
    buffer = io.BytesIO()
    # Each decoded frame is whole, so disposal 2 (clear, then draw) shows it as it was.
    # No `optimize`: like JPEG's, its extra pass holds the GIL.
    frames[0].save(
        buffer,
        format="GIF",
        save_all=True,
        append_images=frames[1:],
        duration=durations,
        optimize=False,
        disposal=2,
        **looping,
    )
    return buffer.getvalue()


def shrink_gif_to_fit(data: bytes, limit: int) -> bytes:
    """Scale the animated GIF ``data`` down until it is within ``limit`` bytes, still animated.

    CPU-bound, like :func:`shrink_to_fit`: call it off the event loop.
    """
    with Image.open(io.BytesIO(data)) as opened:
        size = opened.size
    encoded = len(data)
    while min(size) > _SMALLEST_SIDE:
        size = _smaller(size, encoded, limit)
        gif = _encode_gif(data, size)
        if len(gif) <= limit:
            return gif
        encoded = len(gif)
    raise ImageTooLarge(f"cannot bring an animated GIF under {limit:,} bytes")


def _preview_side(width: int, height: int) -> tuple[str, int]:
    """Which side of an SVG's rendering to set, and to how many pixels (resvg keeps the
    aspect): its declared size, brought within bounds a chat preview needs and can afford."""
    if not (width and height):
        return "width", _PREVIEW_UNSIZED
    smallest, largest = _PREVIEW_LONG_SIDE
    return ("width" if width >= height else "height"), min(max(width, height, smallest), largest)


def render_svg(data: bytes, width: int, height: int) -> bytes:
    """A PNG rendering of the SVG ``data`` declared ``width`` x ``height`` (0 when undeclared).

    Blocks for as long as the render (up to :data:`SVG_RENDER_TIMEOUT`): call it off the event
    loop. Raises :class:`SvgNotRendered` when the SVG cannot, or should not, be rendered.
    """
    if len(data) > MAX_SVG_TO_RENDER:
        raise SvgNotRendered(f"an SVG of {len(data):,} bytes is too large to render")
    text = data.decode("utf-8", "replace")
    references = (value.strip() for _, value in _HREF.findall(text))
    if _ENTITY.search(text) or any(
        "&" in value or not value.startswith(("#", "data:")) for value in references
    ):
        raise SvgNotRendered("the SVG refers to something outside itself")
    side, pixels = _preview_side(width, height)
    command = [sys.executable, "-I", "-c", _RENDER_SCRIPT, side, str(pixels), str(_RENDER_MEMORY)]
    try:
        # Not a user's input on the command line: only our script and three numbers.
        finished = subprocess.run(  # noqa: S603
            command, input=data, capture_output=True, timeout=SVG_RENDER_TIMEOUT, env={}
        )
    except subprocess.TimeoutExpired:
        raise SvgNotRendered(f"rendering took over {SVG_RENDER_TIMEOUT:g} seconds") from None
    except OSError as exc:  # no process to be had: out of memory or of process slots
        raise SvgNotRendered(f"the renderer could not start: {exc}") from None
    if finished.returncode != 0:
        error = finished.stderr.decode("utf-8", "replace").strip().splitlines()
        raise SvgNotRendered(error[-1] if error else f"the renderer exited {finished.returncode}")
    return finished.stdout


def _svg_preview(data: bytes, width: int, height: int, limit: int) -> tuple[bytes, str] | None:
    """A rendering of the SVG within ``limit`` bytes and its format, or None if there is none."""
    try:
        png = render_svg(data, width, height)
        return (png, "png") if len(png) <= limit else shrink_to_fit(png, limit)
    except (SvgNotRendered, ImageTooLarge) as exc:
        log.info("No preview for an SVG: %s", exc)
        return None


def _refit(upload: Upload, limit: int) -> Upload:
    """``upload`` re-encoded within ``limit`` bytes (blocking: run it in the encoder pool)."""
    if len(upload.data) <= limit:
        return upload
    stem, _, suffix = upload.filename.rpartition(".")
    if suffix == "svg":
        raise ImageTooLarge(f"an SVG of {len(upload.data):,} bytes is over {limit:,}")
    if suffix == "gif":
        data, kind = shrink_gif_to_fit(upload.data, limit), "gif"
    else:
        data, kind = shrink_to_fit(upload.data, limit)
    return Upload(
        f"{stem}.{_extension(kind)}",
        data,
        reencoded=True,
        description=upload.description,
        preview_of=upload.preview_of,
        image=upload.image,
    )


async def refit_uploads(uploads: Sequence[Upload], limit: int) -> list[Upload]:
    """Uploads already prepared, brought within a smaller ``limit`` (after Discord refused them
    as too large), off the event loop."""
    loop = asyncio.get_running_loop()
    return list(
        await asyncio.gather(
            *(loop.run_in_executor(_encoder(), _refit, upload, limit) for upload in uploads)
        )
    )


def _extension(kind: str) -> str:
    return "jpg" if kind == "jpeg" else kind


async def _svg_uploads(name: str, number: int, image: GeneratedImage, limit: int) -> list[Upload]:
    """The SVG, then its rendering (which Discord can show); the SVG alone, marked, if the
    rendering cannot be made. ``number``: which image of the set it is."""
    svg = f"{name}.svg"
    too_large = len(image.data) > limit
    loop = asyncio.get_running_loop()
    preview = await loop.run_in_executor(
        _encoder(), _svg_preview, image.data, image.width, image.height, limit
    )
    if preview is None:
        if too_large:
            raise ImageTooLarge(f"an SVG of {len(image.data):,} bytes is over {limit:,}")
        return [Upload(svg, image.data, preview_failed=True, image=number)]
    data, kind = preview
    if too_large:
        # The SVG cannot go; its rendering can, and the reply says an image was re-encoded.
        return [
            Upload(
                f"{name}.{_extension(kind)}",
                data,
                reencoded=True,
                description="A rendering of an SVG too large to upload",
                image=number,
            )
        ]
    # Not `reencoded`, even when shrunk: the image itself, the SVG, goes out whole.
    rendering = Upload(
        f"{name}.{_extension(kind)}",
        data,
        description=f"A rendering of {svg}",
        preview_of=svg,
        image=number,
    )
    return [Upload(svg, image.data, image=number), rendering]


async def prepare_uploads(
    images: Sequence[GeneratedImage], limit: int, stem: str = "imagine"
) -> list[Upload]:
    """Uploads for the images, in order, each within ``limit`` bytes; only oversized images are
    re-encoded. An SVG gives two: itself, then a rendering with :attr:`Upload.preview_of` set
    (or itself alone, with :attr:`Upload.preview_failed` set).
    """

    async def one(index: int, image: GeneratedImage) -> list[Upload]:
        name = f"{stem}-{index}"
        if image.format == "svg":
            return await _svg_uploads(name, index, image, limit)
        if len(image.data) <= limit:
            return [Upload(f"{name}.{image.format}", image.data, image=index)]
        loop = asyncio.get_running_loop()
        if image.format == "gif" and image.frames > 1:
            gif = await loop.run_in_executor(_encoder(), shrink_gif_to_fit, image.data, limit)
            return [Upload(f"{name}.gif", gif, reencoded=True, image=index)]
        data, kind = await loop.run_in_executor(_encoder(), shrink_to_fit, image.data, limit)
        return [Upload(f"{name}.{_extension(kind)}", data, reencoded=True, image=index)]

    per_image = await asyncio.gather(*(one(i, img) for i, img in enumerate(images, start=1)))
    return [upload for uploads in per_image for upload in uploads]


def _keeping_previews_with_their_svg(uploads: Sequence[Upload], limit: int) -> list[list[Upload]]:
    """The uploads in runs that belong in one message: an SVG with its rendering when the two
    fit one message together, every other upload alone."""
    runs: list[list[Upload]] = []
    for upload in uploads:
        previous = runs[-1] if runs else []
        if (
            upload.preview_of is not None
            and previous
            and previous[-1].filename == upload.preview_of
            and len(previous[-1].data) + len(upload.data) <= limit
        ):
            previous.append(upload)
        else:
            runs.append([upload])
    return runs


def pack(uploads: Sequence[Upload], limit: int) -> list[list[Upload]]:
    """Group uploads, in order, into messages of at most ten files and ``limit`` bytes, an SVG
    and its rendering in the same message whenever they fit one."""
    messages: list[list[Upload]] = []
    current: list[Upload] = []
    total = 0
    for run in _keeping_previews_with_their_svg(uploads, limit):
        size = sum(len(upload.data) for upload in run)
        if current and (len(current) + len(run) > MAX_FILES_PER_MESSAGE or total + size > limit):
            messages.append(current)
            current, total = [], 0
        current.extend(run)
        total += size
    if current:
        messages.append(current)
    return messages
