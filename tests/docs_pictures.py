"""Draws the picture of the buttons under a set, and of its Info card, for the documentation
(docs/img/buttons.png): ``python -m tests.docs_pictures docs/img/buttons.png``.

The buttons are the bot's own (their labels and colours come from
``bot.requests.buttons.LOOKS``; not their emoji, which Pillow does not draw from the colour
font at hand), drawn in Discord's dark theme with the Noto fonts simcord ships for its
previews; the card's lines are those ``bot.requests.info`` writes, with made-up figures.
"""

from __future__ import annotations

import sys
from pathlib import Path

import discord
import simcord
from PIL import Image, ImageDraw, ImageFont

from bot.requests.buttons import LOOKS, Action

FONTS = Path(simcord.__file__).parent / "preview" / "static" / "fonts"
BACKGROUND = (49, 51, 56)
EMBED = (43, 45, 49)
TEXT = (219, 222, 225)
MUTED = (148, 155, 164)
LINK = (0, 168, 252)
STYLES = {
    discord.ButtonStyle.primary: (88, 101, 242),
    discord.ButtonStyle.secondary: (78, 80, 88),
    discord.ButtonStyle.danger: (218, 55, 60),
}
WIDTH = 760


def font(size: int, *, bold: bool = False) -> ImageFont.FreeTypeFont:
    face = ImageFont.truetype(str(FONTS / "noto-sans-latin-v2.015.ttf"), size)
    if bold:
        face.set_variation_by_axes([700])
    return face


def button(image: Image.Image, x: int, y: int, action: Action, label: str | None = None) -> int:
    """One button at (x, y); returns the x where the next one goes."""
    _, default, style = LOOKS[action]  # Pillow draws no colour emoji from simcord's font
    text = label or default
    draw = ImageDraw.Draw(image)
    width = 16 + int(draw.textlength(text, font=font(15))) + 16
    draw.rounded_rectangle((x, y, x + width, y + 34), radius=4, fill=STYLES[style])
    draw.text((x + 16, y + 7), text, font=font(15), fill=(255, 255, 255))
    return x + width + 8


def draw(path: Path) -> None:
    image = Image.new("RGB", (WIDTH, 760), BACKGROUND)
    pen = ImageDraw.Draw(image)
    pen.ellipse((20, 20, 60, 60), fill=(88, 101, 242))
    pen.text((76, 18), "imagine-bot", font=font(16, bold=True), fill=(255, 255, 255))
    pen.text((76, 42), "alice used /imagine", font=font(14), fill=MUTED)
    # The embed, with its image.
    pen.rounded_rectangle((76, 72, 596, 330), radius=4, fill=EMBED)
    pen.rectangle((76, 72, 80, 330), fill=(88, 101, 242))
    pen.text((96, 84), "alice imagined", font=font(14, bold=True), fill=TEXT)
    pen.text((96, 108), "two red foxes in the snow, watercolour", font=font(15), fill=TEXT)
    for column, (name, value) in enumerate(
        [("Model", "gpt-image-1"), ("Size", "1024x1024"), ("Quality", "low")]
    ):
        pen.text((96 + 160 * column, 138), name, font=font(13, bold=True), fill=TEXT)
        pen.text((96 + 160 * column, 158), value, font=font(14), fill=TEXT)
    for index in range(2):
        left = 96 + 244 * index
        for row in range(130):
            shade = 120 + row
            pen.line((left, 190 + row, left + 230, 190 + row), fill=(shade, 90 + row // 3, 70))
    # The buttons, as the bot lays them out: the request's, Info and Send to DM, then Vary.
    x = button(image, 76, 346, Action.REROLL)
    x = button(image, x, 346, Action.EDIT)
    x = button(image, x, 346, Action.LARGER, "Larger (2048x2048)")
    button(image, x, 346, Action.DELETE)
    x = button(image, 76, 388, Action.INFO)
    button(image, x, 388, Action.DM)
    x = button(image, 76, 430, Action.VARY, "Vary 1")
    button(image, x, 430, Action.VARY, "Vary 2")
    # The Info card, as the presser sees it.
    pen.text((76, 488), "Only you can see this · Info", font=font(13), fill=MUTED)
    pen.rounded_rectangle((76, 512, 700, 740), radius=4, fill=EMBED)
    pen.rectangle((76, 512, 80, 740), fill=(88, 101, 242))
    pen.text((96, 522), "Request 1042", font=font(16, bold=True), fill=(255, 255, 255))
    pen.text((96, 548), "two red foxes in the snow, watercolour", font=font(14), fill=TEXT)
    cells = [
        ("Asked by", "@alice"),
        ("When", "7 December 2026 13:20"),
        ("Cost", "$0.022"),
        ("Model", "gpt-image-1"),
        ("Size", "1024x1024"),
        ("Quality", "low"),
    ]
    for index, (name, value) in enumerate(cells):
        left, top = 96 + 200 * (index % 3), 578 + 46 * (index // 3)
        pen.text((left, top), name, font=font(13, bold=True), fill=TEXT)
        pen.text((left, top + 19), value, font=font(14), fill=LINK if index == 0 else TEXT)
    pen.text((96, 672), "Request id", font=font(13, bold=True), fill=TEXT)
    pen.text((96, 691), "1042 (for /show id:1042)", font=font(14), fill=TEXT)
    pen.text((380, 672), "Made from it", font=font(13, bold=True), fill=TEXT)
    pen.text((380, 691), "Reroll: request 1043", font=font(14), fill=LINK)
    pen.text((380, 711), "Vary: request 1047", font=font(14), fill=LINK)
    image.save(path, optimize=True)


if __name__ == "__main__":
    draw(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/img/buttons.png"))
