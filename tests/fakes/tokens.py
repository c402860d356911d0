"""The real tokenizer of the GPT image models' prompts, ``o200k_base`` (from bpe-openai, which ships
it in its wheel and needs no network): the bot's bound on a prompt's tokens is checked against
it, and the fake image service reports the tokens it counts, as the real service does."""

from __future__ import annotations

from functools import cache
from typing import Any

import bpe_openai

from bot.images import load_catalog
from bot.images.pricing import PARTIAL_IMAGE_OUTPUT_TOKENS, output_tokens_per_image

# What members write, in scripts the tokenizer reads at very different rates (o200k_base: about
# 0.95 tokens a character of this Chinese, 0.32 of this Russian, 0.24 of this English, 2 an emoji).
LONG_PROMPTS = {
    "Chinese": (
        "一只可爱的橘猫坐在老房子的窗台上，"  # noqa: RUF001 - Chinese punctuation
        "午后的阳光洒在它柔软的毛上，远处是安静的山和河流。"  # noqa: RUF001
    ),
    "Russian": "Рыжий кот сидит на подоконнике старого дома, и солнце освещает его шерсть. ",  # noqa: RUF001
    "English": "A ginger cat sits on the windowsill of an old house, sunlight on its soft fur. ",
    "emoji": "🐈🌞🏠🌄",
}
DISCORD_PROMPT_MAX = 6000  # the longest prompt Discord lets a member type


def prompt_of(script: str, characters: int = DISCORD_PROMPT_MAX) -> str:
    """A prompt of ``characters`` characters in ``script``."""
    return (LONG_PROMPTS[script] * characters)[:characters]


@cache
def _o200k() -> Any:
    return bpe_openai.get_encoding("o200k_base")


def o200k_tokens(text: str) -> int:
    """How many tokens ``text`` is to ``o200k_base`` (no special tokens: a prompt is text)."""
    return len(_o200k().encode_ordinary(text))


def honest_usage(body: dict[str, Any], images: int, partials: int) -> dict[str, Any]:
    """The ``usage`` the real service reports: the prompt's tokens, and the output tokens the
    catalog gives each image of the requested quality and size, with each preview's."""
    spec = load_catalog()[body["model"]]
    per_image = output_tokens_per_image(spec, body.get("quality", "auto"), body.get("size", "auto"))
    text = o200k_tokens(body["prompt"])
    output = (per_image + PARTIAL_IMAGE_OUTPUT_TOKENS * partials) * images
    return {
        "input_tokens": text,
        "output_tokens": output,
        "total_tokens": text + output,
        "input_tokens_details": {"text_tokens": text, "image_tokens": 0},
    }


def no_usage(body: dict[str, Any], images: int, partials: int) -> dict[str, Any]:
    """A service (a gateway) that reports every count as nothing."""
    return {
        "input_tokens": 0,
        "output_tokens": 0,
        "total_tokens": 0,
        "input_tokens_details": {"text_tokens": 0, "image_tokens": 0},
    }
