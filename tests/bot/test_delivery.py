"""Fitting images to Discord's upload limit: what arrives in the channel, and how it is made."""

from __future__ import annotations

import asyncio
import io
import os
import time
from pathlib import Path

import pytest
from PIL import Image, ImageSequence

from bot.discord_out import delivery
from bot.discord_out.delivery import ImageTooLarge, Upload, pack, prepare_uploads
from bot.images import GeneratedImage

RED_RECTANGLE = (
    b'<svg xmlns="http://www.w3.org/2000/svg" width="300" height="200">'
    b'<rect width="300" height="200" fill="#ff0000"/></svg>'
)


def noise(size: tuple[int, int], mode: str = "RGB") -> Image.Image:
    """Random pixels: they do not compress, so a small image is already many bytes."""
    return Image.frombytes(mode, size, os.urandom(size[0] * size[1] * len(mode)))


def png(image: Image.Image) -> GeneratedImage:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return GeneratedImage(buffer.getvalue(), "png", image.width, image.height)


def animated_gif(frames: int, durations: list[int], loop: int) -> GeneratedImage:
    pictures = [noise((256, 256)) for _ in range(frames)]
    buffer = io.BytesIO()
    pictures[0].save(
        buffer,
        format="GIF",
        save_all=True,
        append_images=pictures[1:],
        duration=durations,
        loop=loop,
    )
    return GeneratedImage(buffer.getvalue(), "gif", 256, 256, frames=frames)


def svg(data: bytes, width: int = 0, height: int = 0) -> GeneratedImage:
    return GeneratedImage(data, "svg", width, height)


def blurred_svg(shapes: int) -> bytes:
    """An SVG that is small to send and slow to draw: about a second a shape at 2048 px."""
    circles = "".join(
        f'<circle cx="{i * 7 % 100}" cy="{i * 13 % 100}" r="40" filter="url(#blur)"/>'
        for i in range(shapes)
    )
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" width="2048" height="2048" viewBox="0 0 100 100">'
        '<defs><filter id="blur"><feGaussianBlur stdDeviation="20"/></filter></defs>'
        f"{circles}</svg>"
    ).encode()


@pytest.mark.parametrize(
    ("mode", "filename", "encoding"),
    [("RGB", "imagine-1.jpg", "JPEG"), ("RGBA", "imagine-1.webp", "WEBP")],
    ids=["opaque-as-jpeg", "transparent-as-webp"],
)
async def test_a_big_png_is_reencoded_within_the_limit_keeping_its_transparency(
    mode: str, filename: str, encoding: str
) -> None:
    image = png(noise((1024, 1024), mode))
    limit = len(image.data) // 4

    [upload] = await prepare_uploads([image], limit)

    assert upload.filename == filename
    assert upload.reencoded
    assert len(upload.data) <= limit
    with Image.open(io.BytesIO(upload.data)) as sent:
        assert sent.format == encoding
        assert sent.mode == mode
        if mode == "RGBA":
            alpha = sent.getchannel("A").tobytes()
            assert min(alpha) < 128 < max(alpha)  # still transparent here, opaque there


async def test_an_image_that_cannot_fit_at_the_lowest_quality_is_made_smaller() -> None:
    picture = noise((1024, 1024))
    limit = 100_000
    at_lowest_quality = io.BytesIO()
    picture.save(at_lowest_quality, format="JPEG", quality=70)
    assert len(at_lowest_quality.getvalue()) > 4 * limit  # no quality alone gets there

    [upload] = await prepare_uploads([png(picture)], limit)

    assert upload.reencoded
    assert len(upload.data) <= limit
    with Image.open(io.BytesIO(upload.data)) as sent:
        assert sent.format == "JPEG"
        assert sent.width < 1024
        assert sent.height < 1024
        assert sent.width == sent.height  # scaled, not cropped or squashed


async def test_an_animated_gif_within_the_limit_is_sent_untouched() -> None:
    image = animated_gif(3, [100, 200, 300], loop=0)

    [upload] = await prepare_uploads([image], len(image.data))

    assert (upload.filename, upload.data, upload.reencoded) == ("imagine-1.gif", image.data, False)


async def test_an_oversized_animated_gif_is_shrunk_into_the_same_animation() -> None:
    durations = [100, 200, 300, 400, 500]
    image = animated_gif(5, durations, loop=3)
    limit = len(image.data) // 3

    [upload] = await prepare_uploads([image], limit)

    assert upload.filename == "imagine-1.gif"
    assert upload.reencoded
    assert len(upload.data) <= limit
    with Image.open(io.BytesIO(upload.data)) as sent:
        assert sent.format == "GIF"
        assert sent.width < 256
        assert sent.info["loop"] == 3
        assert [frame.info["duration"] for frame in ImageSequence.Iterator(sent)] == durations


async def test_an_svg_goes_out_with_a_png_rendering_of_its_declared_size_beside_it() -> None:
    uploads = await prepare_uploads([svg(RED_RECTANGLE, 300, 200)], 8 * 1024 * 1024)

    assert [upload.filename for upload in uploads] == ["imagine-1.svg", "imagine-1.png"]
    original, rendering = uploads
    assert original.data == RED_RECTANGLE
    assert not original.preview_failed
    assert rendering.preview_of == "imagine-1.svg"
    with Image.open(io.BytesIO(rendering.data)) as preview:
        assert (preview.format, preview.size) == ("PNG", (300, 200))
        assert preview.convert("RGB").getpixel((150, 100)) == (255, 0, 0)


async def test_a_tiny_or_unsized_svg_renders_large_enough_to_see() -> None:
    tiny = RED_RECTANGLE.replace(b'width="300" height="200"', b'width="30" height="20"')
    unsized = RED_RECTANGLE.replace(b' width="300" height="200"', b"")

    uploads = await prepare_uploads([svg(tiny, 30, 20), svg(unsized)], 8 * 1024 * 1024)

    long_sides = [max(Image.open(io.BytesIO(upload.data)).size) for upload in uploads[1::2]]
    assert long_sides == [256, 1024]


@pytest.mark.parametrize(
    "broken",
    [
        pytest.param(b'<svg xmlns="http://www.w3.org/2000/svg" width="10"><rect', id="cut short"),
        pytest.param(b'<svg width="0" height="0"></svg>', id="empty size"),
        pytest.param(b"<svg>\xff\xfe</svg>", id="not utf-8"),
    ],
)
async def test_an_svg_that_cannot_be_rendered_goes_out_alone_marked_without_preview(
    broken: bytes,
) -> None:
    [upload] = await prepare_uploads([svg(broken, 10, 10)], 1024 * 1024)

    assert (upload.filename, upload.data) == ("imagine-1.svg", broken)
    assert upload.preview_failed


async def test_an_svg_is_never_rendered_with_a_picture_from_this_machine(tmp_path: Path) -> None:
    secret = tmp_path / "secret.png"
    Image.new("RGB", (10, 10), "green").save(secret)
    pointing = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
        f'<image href="{secret}" width="10" height="10"/></svg>'
    ).encode()

    uploads = await prepare_uploads([svg(pointing, 10, 10)], 1024 * 1024)

    assert [(upload.filename, upload.preview_failed) for upload in uploads] == [
        ("imagine-1.svg", True)
    ]


async def test_an_svg_too_large_to_render_still_goes_out_without_preview() -> None:
    padding = b"<!--" + b"x" * delivery.MAX_SVG_TO_RENDER + b"-->"
    large = RED_RECTANGLE.replace(b"<rect", padding + b"<rect")

    [upload] = await prepare_uploads([svg(large, 300, 200)], 2 * len(large))

    assert (upload.filename, upload.preview_failed) == ("imagine-1.svg", True)


async def test_an_svg_render_that_takes_too_long_is_given_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(delivery, "SVG_RENDER_TIMEOUT", 0.5)
    started = time.monotonic()

    [upload] = await prepare_uploads([svg(blurred_svg(5), 2048, 2048)], 1024 * 1024)

    assert upload.preview_failed
    assert time.monotonic() - started < 3


async def test_the_bot_stays_responsive_while_an_svg_renders() -> None:
    longest_pause = 0.0

    async def heartbeat() -> None:
        nonlocal longest_pause
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            longest_pause, last = max(longest_pause, now - last), now

    beating = asyncio.create_task(heartbeat())
    started = time.monotonic()
    uploads = await prepare_uploads([svg(blurred_svg(1), 2048, 2048)], 8 * 1024 * 1024)
    rendering_took = time.monotonic() - started
    beating.cancel()

    assert [upload.filename for upload in uploads] == ["imagine-1.svg", "imagine-1.png"]
    assert rendering_took > 0.3, "the SVG drew too fast to tell anything"
    assert longest_pause < 0.1


async def test_an_svg_over_the_limit_goes_out_as_its_rendering_only() -> None:
    padded = RED_RECTANGLE.replace(b"</svg>", b"<!--" + b" " * 20_000 + b"--></svg>")
    (upload,) = await prepare_uploads([svg(padded, 300, 200)], 10_000)
    assert upload.filename == "imagine-1.png" and upload.reencoded
    assert len(upload.data) <= 10_000
    with Image.open(io.BytesIO(upload.data)) as rendering:
        assert rendering.size == (300, 200)


async def test_an_svg_over_the_limit_that_cannot_be_rendered_is_refused() -> None:
    broken = b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"><rect' + b" " * 500
    with pytest.raises(ImageTooLarge):
        await prepare_uploads([svg(broken, 9, 9)], 100)


def test_an_svg_and_its_rendering_share_a_message_when_they_can() -> None:
    photos = [Upload(f"photo-{n}.png", b"p") for n in range(9)]
    drawing = Upload("imagine-1.svg", b"s")
    rendering = Upload("imagine-1.png", b"r", preview_of="imagine-1.svg")

    by_count = pack([*photos, drawing, rendering], limit=1000)
    assert [len(message) for message in by_count] == [9, 2]

    large_drawing = Upload("imagine-1.svg", b"s" * 400)
    large_rendering = Upload("imagine-1.png", b"r" * 400, preview_of="imagine-1.svg")
    by_bytes = pack([Upload("photo.png", b"p" * 300), large_drawing, large_rendering], limit=1000)
    assert [[upload.filename for upload in message] for message in by_bytes] == [
        ["photo.png"],
        ["imagine-1.svg", "imagine-1.png"],
    ]


def test_uploads_without_previews_still_fill_each_message() -> None:
    uploads = [Upload(f"photo-{n}.png", b"p" * 300) for n in range(12)]

    assert [len(message) for message in pack(uploads, limit=1000)] == [3, 3, 3, 3]
