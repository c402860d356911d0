"""The canvas of a zoom out or a pan: the size it is asked at, where the original goes, and what
is refused before any pixel is decoded."""

from __future__ import annotations

import io
import os

import pytest
from PIL import Image

from bot.images import UnsupportedOption, load_catalog
from bot.images.canvas import Box, Extension, extend, held_bytes, placement, target_size

CATALOG = load_catalog()


@pytest.mark.parametrize(
    ("model", "extension", "source", "expected"),
    [
        # The picture keeps its scale: a zoom of a 1024x1024 stays 1024x1024.
        ("gpt-image-1", Extension("out", 2.0), (1024, 1024), (1024, 1024)),
        ("gpt-image-1", Extension("out", 1.5), (1536, 1024), (1536, 1024)),
        # A pan widens (or heightens) the shape to the listed size of that shape.
        ("gpt-image-1", Extension("left"), (1024, 1024), (1536, 1024)),
        ("gpt-image-1", Extension("down"), (1024, 1024), (1024, 1536)),
        # Free sizes are not used: the price is one the catalog lists.
        ("gpt-image-2.5-flare", Extension("out", 2.0), (1024, 1024), (1024, 1024)),
        ("gpt-image-2.5-flare", Extension("right"), (1536, 1024), (2560, 1440)),
        # dall-e-2 takes squares only, at the original's scale.
        ("dall-e-2", Extension("right"), (512, 512), (512, 512)),
        ("dall-e-2", Extension("out", 4.0), (256, 256), (256, 256)),
    ],
)
def test_the_size_asked_is_a_listed_one_of_the_nearest_shape_and_scale(
    model: str,
    extension: Extension,
    source: tuple[int, int],
    expected: tuple[int, int],
) -> None:
    assert target_size(CATALOG[model], extension, source) == expected


def test_the_original_is_placed_in_the_middle_or_against_the_edge_opposite_a_pan() -> None:
    assert placement(Extension("out", 2.0), (1024, 1024), (1024, 1024)) == Box(256, 256, 512, 512)
    assert placement(Extension("left"), (1024, 1024), (1536, 1024)) == Box(512, 0, 1024, 1024)
    assert placement(Extension("up"), (1024, 1024), (1024, 1536)) == Box(0, 512, 1024, 1024)
    # A canvas of another shape than the size: the rest is new area, across the move.
    assert placement(Extension("right"), (256, 256), (256, 256)) == Box(0, 42, 171, 171)


def encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def test_a_jpeg_is_extended_into_a_png_and_a_mask_of_the_same_size() -> None:
    photo = encoded(Image.new("RGB", (800, 600), (10, 120, 200)), "JPEG")

    image_png, mask_png = extend(photo, Extension("out", 2.0), (1536, 1024), max_pixels=800 * 600)

    image, mask = Image.open(io.BytesIO(image_png)), Image.open(io.BytesIO(mask_png))
    assert (image.format, mask.format) == ("PNG", "PNG")
    assert image.size == mask.size == (1536, 1024)
    box = placement(Extension("out", 2.0), (800, 600), (1536, 1024))
    right, bottom = box.left + box.width, box.top + box.height
    assert mask.getchannel("A").getbbox() == (box.left, box.top, right, bottom)
    assert image.getchannel("A").getbbox() == (box.left, box.top, right, bottom)


def test_an_image_larger_than_declared_is_refused_from_its_header() -> None:
    large = encoded(Image.new("RGB", (2000, 2000)), "PNG")
    with pytest.raises(UnsupportedOption, match="larger than the bot can work on"):
        extend(large, Extension("out", 2.0), (1024, 1024), max_pixels=1024 * 1024)


@pytest.mark.parametrize(
    "data",
    [b"not an image", encoded(Image.new("RGB", (8, 8)), "GIF"), b"\x89PNG\r\n\x1a\n" + b"0" * 40],
    ids=["text", "gif", "broken-png"],
)
def test_what_is_not_a_png_jpeg_or_webp_is_one_sentence(data: bytes) -> None:
    with pytest.raises(UnsupportedOption, match="not one the bot can read"):
        extend(data, Extension("left"), (1536, 1024), max_pixels=1024 * 1024)


def test_an_incompressible_original_fits_the_bytes_declared_for_it() -> None:
    """The room kept for a canvas's PNGs (held_bytes) holds the worst picture: noise."""
    noise = encoded(Image.frombytes("RGB", (1024, 1024), os.urandom(3 * 1024 * 1024)), "PNG")
    for extension, target in [
        (Extension("out", 1.1), (1024, 1024)),
        (Extension("left"), (1536, 1024)),
        (Extension("right"), (1024, 1024)),  # the square's extra new area too
    ]:
        image_png, mask_png = extend(noise, extension, target, max_pixels=1024 * 1024)
        assert len(image_png) + len(mask_png) <= held_bytes(extension, target)
