"""Zoom out and pan: an image put on a larger transparent canvas, and the mask of the new area,
for the edits endpoint to fill (an "outpaint").

Decisions:

- The canvas grows by the zoom factor on every side (the original in the middle), or by
  :data:`PAN_FACTOR` along one axis for a pan (the original against the opposite edge). It is
  then fitted to a size the model takes: of the model's listed sizes (``auto`` and free sizes
  left out, so that the price is one the catalog lists), the one of the shape nearest the
  canvas's, and of those the one whose area is nearest the original's (the picture keeps its
  scale: a zoomed-out 1024x1024 stays 1024x1024, its original shrunk to fit). Where the chosen
  shape is not the canvas's exactly (dall-e-2 takes squares only), the canvas grows further to
  that shape, centred across the move for a pan, around the original for a zoom: that extra is
  new area too.
- The mask is exactly the new area: transparent there, opaque over the original (the API's
  contract: "transparent areas indicate where the image should be edited", same size as the
  image). The image sent is a PNG with the new area transparent too.
- Memory is bounded in two parts. What a request holds for its life (the file downloaded,
  then the two PNGs, which a retry sends again) is :func:`held_bytes` at most: the canvas's
  new area is transparent and compresses to almost nothing, so its PNG is bounded by the
  original's pixels, a fraction of the canvas's; the caller keeps room for it before the
  download, as for any edit's inputs. The decoding itself (pixels: :func:`working_bytes`) runs
  in :data:`WORKERS` threads of its own (:func:`extend_off_loop`), so at most that many are
  decoded at once, however many requests wait; the source's pixels are read from its header
  and refused above the count the caller declared (and :data:`MAX_SOURCE_PIXELS`) before any
  is decoded. JPEGs are decoded at a reduced scale where the original is shrunk (Pillow's
  ``draft``). The work is CPU (decoding, resizing, two PNG encodings: tens to hundreds of
  milliseconds), never on the event loop.
"""

from __future__ import annotations

import asyncio
import io
import math
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

from PIL import Image, UnidentifiedImageError

from bot.i18n import _

from .catalog import ModelSpec, parse_size
from .errors import UnsupportedOption

Direction = Literal["out", "left", "right", "up", "down"]
PAN_FACTOR = 1.5  # a pan extends the canvas by half the image along its axis
MIN_ZOOM = 1.1
MAX_ZOOM = 4.0  # beyond it the original is a speck in the middle
# The largest source decoded: the biggest image any catalog model makes (3840x2160) twice over.
MAX_SOURCE_PIXELS = 2 * 3840 * 2160
_SAME_SHAPE = 3  # decimals of the log aspect ratios compared: shapes within 0.1% are one
_READABLE = {"PNG": "png", "JPEG": "jpeg", "MPO": "jpeg", "WEBP": "webp"}
# Threads that decode and encode canvases: CPU-bound work gains nothing from more than the
# cores, and each holds up to working_bytes() while it runs (a 1024x1024 canvas: about 20 MB).
WORKERS = 2
_WORKERS = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="canvas")
_PNG_SLACK = 64 * 1024  # a PNG's headers and the deflate blocks of a short image, at most

NOT_READABLE = _("The image to extend is not one the bot can read (PNG, JPEG or WebP).")
TOO_LARGE = _("The image to extend is larger than the bot can work on.")
NO_FIXED_SIZE = _("{model} has no fixed size to extend an image to.")


@dataclass(frozen=True, slots=True)
class Extension:
    """A zoom out by ``factor`` (``direction`` "out"), or a pan towards ``direction``."""

    direction: Direction
    factor: float = PAN_FACTOR

    def canvas(self, width: int, height: int) -> tuple[float, float]:
        """The canvas around a ``width`` x ``height`` original, before it is fitted."""
        if self.direction == "out":
            return width * self.factor, height * self.factor
        if self.direction in ("left", "right"):
            return width * PAN_FACTOR, float(height)
        return float(width), height * PAN_FACTOR


@dataclass(frozen=True, slots=True)
class Box:
    """Where the original goes on the fitted canvas."""

    left: int
    top: int
    width: int
    height: int


def _sizes(spec: ModelSpec) -> list[tuple[int, int]]:
    found = [parse_size(size) for size in spec.sizes]
    sizes = [size for size in found if size is not None]
    if spec.square_input:  # its input must be square: so must the canvas
        sizes = [size for size in sizes if size[0] == size[1]]
    return sizes


def target_size(
    spec: ModelSpec,
    extension: Extension,
    source: tuple[int, int],
    reference: tuple[int, int] | None = None,
) -> tuple[int, int]:
    """The size the extended image is asked at: of ``spec``'s listed sizes, the shape nearest
    the canvas's, then the area nearest ``reference``'s (the original's size as asked; else the
    source's). Raises :class:`UnsupportedOption` where the model lists no size."""
    sizes = _sizes(spec)
    if not sizes:
        raise UnsupportedOption("size", NO_FIXED_SIZE.format(model=spec.name))
    canvas_width, canvas_height = extension.canvas(*source)
    shape = math.log(canvas_width / canvas_height)
    ref_width, ref_height = reference or source
    area = ref_width * ref_height

    def nearness(size: tuple[int, int]) -> tuple[float, float, int]:
        width, height = size
        return (
            round(abs(math.log(width / height) - shape), _SAME_SHAPE),
            abs(math.log(width * height / area)),
            width * height,
        )

    return min(sizes, key=nearness)


def placement(extension: Extension, source: tuple[int, int], target: tuple[int, int]) -> Box:
    """Where the ``source``-sized original goes on a ``target``-sized canvas: scaled so that
    its canvas fits, in the middle for a zoom, against the edge opposite a pan."""
    width, height = source
    target_width, target_height = target
    canvas_width, canvas_height = extension.canvas(width, height)
    scale = min(target_width / canvas_width, target_height / canvas_height)
    box_width = min(target_width, max(1, round(width * scale)))
    box_height = min(target_height, max(1, round(height * scale)))
    left = (target_width - box_width) // 2
    top = (target_height - box_height) // 2
    if extension.direction == "left":
        left = target_width - box_width
    elif extension.direction == "right":
        left = 0
    elif extension.direction == "up":
        top = target_height - box_height
    elif extension.direction == "down":
        top = 0
    return Box(left, top, box_width, box_height)


def held_bytes(extension: Extension, target: tuple[int, int]) -> int:
    """The most the two PNGs of :func:`extend` take: the original's pixels at 4 bytes (the
    canvas fits the target, so the original is at most the target over the canvas's growth on
    each axis), the transparent rest at 1/8 byte a pixel (runs of zeros deflate over 100:1),
    and the mask's one value per area at the same."""
    width, height = target
    grown_width, grown_height = extension.canvas(1, 1)
    original = (math.ceil(width / grown_width) + 1) * (math.ceil(height / grown_height) + 1)
    return 4 * original + 2 * (width * height // 8) + 2 * _PNG_SLACK


def working_bytes(source_bytes: int, source_pixels: int, target: tuple[int, int]) -> int:
    """The most memory :func:`extend` holds: the file, the source decoded (4 bytes a pixel),
    and on the target's pixels the resized original, the canvas, the mask and the two PNGs
    (bounded by their raw sizes)."""
    target_pixels = target[0] * target[1]
    return source_bytes + 4 * source_pixels + 16 * target_pixels


def source_size(data: bytes) -> tuple[int, int]:
    """The width and height of the image ``data``, from its header only."""
    with _opened(data) as image:
        return image.size


def _opened(data: bytes) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UnsupportedOption("image", NOT_READABLE) from None
    except (OSError, ValueError, SyntaxError, EOFError):
        raise UnsupportedOption("image", NOT_READABLE) from None
    if image.format not in _READABLE:
        image.close()
        raise UnsupportedOption("image", NOT_READABLE)
    return image


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def extend(
    data: bytes, extension: Extension, target: tuple[int, int], *, max_pixels: int
) -> tuple[bytes, bytes]:
    """The original ``data`` on a transparent ``target``-sized canvas (PNG), and the mask of the
    new area (PNG: transparent where the model draws, opaque over the original). Refuses, as
    :class:`UnsupportedOption`, what is not a PNG, JPEG or WebP, or has more than
    ``max_pixels`` (and :data:`MAX_SOURCE_PIXELS`) pixels: checked from the header, before any
    pixel is decoded. CPU-bound: run it in a worker thread."""
    with _opened(data) as image:
        width, height = image.size
        if width * height > min(max_pixels, MAX_SOURCE_PIXELS):
            raise UnsupportedOption("image", TOO_LARGE)
        box = placement(extension, (width, height), target)
        if image.format in ("JPEG", "MPO"):
            image.draft("RGB", (box.width, box.height))  # decodes at 1/2, 1/4 or 1/8 if it can
        try:
            image.seek(0)  # the first frame of anything with several
            original = image.convert("RGBA")
        except (OSError, ValueError, SyntaxError, EOFError):
            raise UnsupportedOption("image", NOT_READABLE) from None
    if original.size != (box.width, box.height):
        original = original.resize((box.width, box.height), Image.Resampling.LANCZOS)
    canvas = Image.new("RGBA", target, (0, 0, 0, 0))
    canvas.paste(original, (box.left, box.top))
    del original
    mask = Image.new("LA", target, (0, 0))
    mask.paste((0, 255), (box.left, box.top, box.left + box.width, box.top + box.height))
    image_png, mask_png = _png(canvas), _png(mask)
    if len(image_png) + len(mask_png) > held_bytes(extension, target):  # the bound is the room's
        raise UnsupportedOption("image", TOO_LARGE)
    return image_png, mask_png


async def extend_off_loop(
    data: bytes, extension: Extension, target: tuple[int, int], *, max_pixels: int
) -> tuple[bytes, bytes]:
    """:func:`extend` in one of the :data:`WORKERS` canvas threads (waiting for one if busy)."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(
        _WORKERS, lambda: extend(data, extension, target, max_pixels=max_pixels)
    )
