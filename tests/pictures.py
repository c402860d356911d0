"""The documentation's picture of the zoom and pan buttons, drawn from the real bot's output.

    python -m tests.pictures docs/img/zoom-buttons.png

The bot runs in simcord against the fake Images API (which serves a drawn landscape), posts one
/imagine, and a member presses Zoom out 2x and Pan right. The picture shows the message as
posted, its buttons as the bot made them (labels, emoji, rows and styles read from the
message's components, drawn in Discord's dark theme), and what each press sent to
/images/edits: the canvas (its new area shown as a checkerboard) and the mask. The emoji need
Debian's ``fonts-noto-color-emoji``.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import tempfile
from pathlib import Path
from typing import Any

import simcord
from PIL import Image, ImageDraw, ImageFont

from bot.app import ImagineBot
from tests.cogs.conftest import RECOMMENDED_SHARDS, make_settings
from tests.fakes.images_api import FakeImagesAPI

FONTS = Path(simcord.__file__).parent / "preview" / "static" / "fonts"
# Debian's fonts-noto-color-emoji: a bitmap font Pillow draws (simcord's copy is COLRv1, which
# Pillow draws as nothing).
EMOJI_FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
SCALE = 2  # drawn at twice Discord's pixels, for sharp text
BACKGROUND = (49, 51, 56)
TEXT = (242, 243, 245)
MUTED = (181, 186, 193)
STYLES = {1: (88, 101, 242), 2: (78, 80, 88), 3: (36, 128, 70), 4: (218, 55, 60)}


def landscape(size: int = 1024) -> bytes:
    """A picture with a horizon, a sun and hills: what the fake Images API serves."""
    image = Image.new("RGB", (size, size), (120, 180, 235))
    draw = ImageDraw.Draw(image)
    for y in range(size // 2):
        shade = 235 - y * 80 // (size // 2)
        draw.line([(0, y), (size, y)], fill=(110, 170, shade))
    draw.ellipse((size * 0.62, size * 0.14, size * 0.82, size * 0.34), fill=(255, 214, 90))
    draw.rectangle((0, size * 0.62, size, size), fill=(60, 130, 70))
    draw.ellipse((-size * 0.3, size * 0.45, size * 0.7, size * 1.1), fill=(75, 150, 80))
    draw.ellipse((size * 0.4, size * 0.52, size * 1.4, size * 1.2), fill=(50, 115, 60))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _font(name: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(FONTS / name), size * SCALE)


def _emoji(character: str, size: int) -> Image.Image:
    """One emoji from Noto Color Emoji (a bitmap font drawn at 109 pixels), scaled down."""
    font = ImageFont.truetype(str(EMOJI_FONT), 109)
    canvas = Image.new("RGBA", (136, 128), (0, 0, 0, 0))
    ImageDraw.Draw(canvas).text((0, 0), character, font=font, embedded_color=True)
    box = canvas.getbbox() or (0, 0, 136, 128)
    side = size * SCALE
    return canvas.crop(box).resize((side, side), Image.Resampling.LANCZOS)


def draw_buttons(rows: list[list[dict[str, Any]]]) -> Image.Image:
    """Discord's button rows, as the message's components describe them."""
    label_font = _font("noto-sans-latin-v2.015.ttf", 14)
    height, gap, pad, emoji = 32 * SCALE, 8 * SCALE, 16 * SCALE, 18
    drawn: list[list[Image.Image]] = []
    for row in rows:
        buttons = []
        for component in row:
            label = component.get("label") or ""
            text_width = int(label_font.getlength(label)) if label else 0
            width = pad * 2 + emoji * SCALE + (6 * SCALE + text_width if label else 0)
            button = Image.new("RGBA", (width, height), (0, 0, 0, 0))
            draw = ImageDraw.Draw(button)
            draw.rounded_rectangle(
                (0, 0, width - 1, height - 1), radius=4 * SCALE, fill=STYLES[component["style"]]
            )
            if component.get("emoji"):
                icon = _emoji(component["emoji"]["name"], emoji)
                button.alpha_composite(icon, (pad, (height - icon.height) // 2))
            if label:
                draw.text(
                    (pad + emoji * SCALE + 6 * SCALE, height // 2),
                    label,
                    font=label_font,
                    fill=TEXT,
                    anchor="lm",
                )
            buttons.append(button)
        drawn.append(buttons)
    width = max(sum(b.width for b in row) + gap * (len(row) - 1) for row in drawn)
    image = Image.new("RGBA", (width, len(drawn) * (height + gap) - gap), BACKGROUND)
    for index, pieces in enumerate(drawn):
        x = 0
        for piece in pieces:
            image.alpha_composite(piece, (x, index * (height + gap)))
            x += piece.width + gap
    return image


def checkerboard(image: Image.Image) -> Image.Image:
    """``image`` over a grey checkerboard, so that its transparent area shows."""
    board = Image.new("RGBA", image.size, (200, 200, 200, 255))
    draw = ImageDraw.Draw(board)
    step = max(8, image.width // 32)
    for y in range(0, image.height, step):
        for x in range((y // step) % 2 * step, image.width, step * 2):
            draw.rectangle((x, y, x + step - 1, y + step - 1), fill=(150, 150, 150, 255))
    board.alpha_composite(image.convert("RGBA"))
    return board


def panel(data: bytes, height: int, caption: str, *, transparent: bool) -> Image.Image:
    """An image sent or posted, ``height`` pixels high, with a caption under it."""
    picture = Image.open(io.BytesIO(data)).convert("RGBA")
    if transparent:
        picture = checkerboard(picture)
    picture = picture.resize((picture.width * height // picture.height, height))
    font = _font("noto-sans-latin-v2.015.ttf", 13)
    out = Image.new("RGBA", (max(picture.width, 10), height + 28 * SCALE), BACKGROUND)
    out.alpha_composite(picture, (0, 0))
    ImageDraw.Draw(out).text((0, height + 8 * SCALE), caption, font=font, fill=MUTED)
    return out


async def render(path: Path) -> None:
    api = FakeImagesAPI(api_key="picture-key")
    api.image_bytes = landscape()
    await api.start()
    try:
        with tempfile.TemporaryDirectory() as data_dir:
            settings = make_settings(
                api.base_url, Path(data_dir), openai_api_key="picture-key", partial_images=0
            )
            bot = ImagineBot(settings)
            async with simcord.run(bot, shard_count=RECOMMENDED_SHARDS, settle_timeout=60) as env:
                guild = env.create_guild("Art Club")
                channel = guild.create_text_channel("imagine")
                alice = guild.add_member(env.create_user("alice"))
                made = await alice.slash(channel, "imagine", prompt="green hills under the sun")
                message = made.response
                assert message is not None
                rows = [row["components"] for row in message.components]
                sent = []
                for label in ("Zoom out 2\u00d7", "Pan right"):
                    await alice.click(message, label=label)
                    form = api.edit_requests[-1].body
                    sent.append((label, form["image"][0].data, form["mask"][0].data))
            await bot.close()
    finally:
        await api.close()
    buttons = draw_buttons(rows)
    side = 200 * SCALE
    panels = [panel(api.image_bytes, side, "posted", transparent=False)]
    for label, image, mask in sent:
        panels.append(panel(image, side, f"{label}: image sent", transparent=True))
        panels.append(panel(mask, side, f"{label}: mask", transparent=True))
    margin = 16 * SCALE
    strip_width = sum(p.width for p in panels) + margin * (len(panels) - 1)
    width = max(buttons.width, strip_width) + 2 * margin
    height = buttons.height + panels[0].height + 3 * margin
    picture = Image.new("RGBA", (width, height), BACKGROUND)
    picture.alpha_composite(buttons, (margin, margin))
    x = margin
    for piece in panels:
        picture.alpha_composite(piece, (x, buttons.height + 2 * margin))
        x += piece.width + margin
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.convert("RGB").save(path, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", type=Path)
    asyncio.run(render(parser.parse_args().path))


if __name__ == "__main__":
    main()
