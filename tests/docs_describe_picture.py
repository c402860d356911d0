"""Draws docs/img/describe.png, the picture on the Describe and enhance page, from what the real
bot posts: it runs the bot in simcord against the fake Images API (which serves the text model),
sends /describe and /imagine enhance:true, and draws the two answers (embeds and buttons) with
Pillow, roughly as Discord's dark theme shows them (emoji left out: the font has none).

    .venv/bin/python -m tests.docs_describe_picture docs/img/describe.png
"""

from __future__ import annotations

import asyncio
import io
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import matplotlib
from PIL import Image, ImageDraw, ImageFont
from simcord.env import Env

from bot.app import ImagineBot
from tests.cogs.conftest import RECOMMENDED_SHARDS, DeclaredQueueWaits, make_settings
from tests.conftest import API_KEY
from tests.fakes.images_api import TEXT_MODELS, FakeImagesAPI

FONTS = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
WIDTH = 900
BACKGROUND, EMBED, TEXT, MUTED = "#313338", "#2b2d31", "#dbdee1", "#949ba4"
STYLES = {1: "#5865f2", 2: "#4e5058", 3: "#248046", 4: "#da373c"}  # Discord's button styles


def font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont:
    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    return ImageFont.truetype(str(FONTS / name), size)


async def answers() -> tuple[Any, Any, bytes]:
    """The /describe answer, the enhanced /imagine answer, and its image."""
    fake = FakeImagesAPI(api_key=API_KEY, text_models=TEXT_MODELS)
    await fake.start()
    with tempfile.TemporaryDirectory() as data:
        settings = make_settings(fake.base_url, Path(data))
        bot = ImagineBot(settings, serve_metrics=False)
        bot.shard_count = RECOMMENDED_SHARDS
        env = Env(bot)
        DeclaredQueueWaits().env = env
        await env.start()
        try:
            with env.time_context():
                guild = env.create_guild("Art Club")
                channel = guild.create_text_channel("imagine")
                alice = guild.add_member(env.create_user("alice"))
                buffer = io.BytesIO()
                Image.new("RGB", (96, 64), (200, 40, 40)).save(buffer, format="PNG")
                described = await alice.slash(
                    channel, "describe", image=("photo.png", buffer.getvalue())
                )
                enhanced = await alice.slash(
                    channel, "imagine", prompt="a fox", model="dall-e-2", enhance=True
                )
                assert enhanced.response is not None
                image = await enhanced.response.attachments[0].read()
                return described.response, enhanced.response, image
        finally:
            await env.shutdown()
            await bot.close()
            await fake.close()


def draw_message(draw: ImageDraw.ImageDraw, canvas: Image.Image, top: int, message: Any,
                 image: bytes | None) -> int:  # fmt: skip
    """One message (its first embed and its buttons) from ``top``; the height drawn."""
    (embed,) = message.embeds
    x, y = 24, top
    draw.text((x, y), "imagine-bot", font=font(16, bold=True), fill="#ffffff")
    y += 28
    lines: list[tuple[str, ImageFont.FreeTypeFont | None, str]] = [
        (embed.author.name or "", font(14, bold=True), TEXT)
    ]
    for paragraph in (embed.description or "").replace("**", "").split("\n\n"):
        lines += [(line, font(14), TEXT) for line in textwrap.wrap(paragraph, 88)]
        lines.append(("", None, ""))
    for field in embed.fields[:4]:
        lines.append((f"{field.name}: {field.value}", font(13), MUTED))
    if embed.footer.text:
        lines.append((embed.footer.text.replace("·", "-"), font(12), MUTED))
    height = 16 + 20 * len(lines) + (140 if image else 0)
    draw.rounded_rectangle((x, y, WIDTH - 24, y + height), 6, fill=EMBED)
    draw.rectangle((x, y, x + 4, y + height), fill="#5865f2")
    line_y = y + 10
    for text, face, colour in lines:
        if face is not None:
            draw.text((x + 18, line_y), text, font=face, fill=colour)
        line_y += 20
    if image:
        with Image.open(io.BytesIO(image)) as picture:
            thumb = picture.convert("RGB")
            thumb.thumbnail((128, 128))
            canvas.paste(thumb, (x + 18, line_y))
    y += height + 10
    for row in message.components:
        bx = x
        for button in row["components"]:
            label = button["label"]
            width = int(draw.textlength(label, font=font(14))) + 32
            draw.rounded_rectangle((bx, y, bx + width, y + 34), 4, fill=STYLES[button["style"]])
            draw.text((bx + 16, y + 8), label, font=font(14), fill="#ffffff")
            bx += width + 8
        y += 42
    return y - top + 16


async def main(out: Path) -> None:
    described, enhanced, image = await answers()
    canvas = Image.new("RGB", (WIDTH, 1000), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    draw.text((24, 12), "/describe image:photo.png", font=font(13), fill=MUTED)
    y = 36 + draw_message(draw, canvas, 36, described, None)
    draw.text((24, y), "/imagine prompt:a fox enhance:True", font=font(13), fill=MUTED)
    y += 24 + draw_message(draw, canvas, y + 24, enhanced, image)
    canvas.crop((0, 0, WIDTH, y)).save(out, optimize=True)
    print(f"wrote {out}")


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/img/describe.png")))
