"""The cogs are leaves: loaded in any order, the bot offers the same commands, and the images
of every command get the same buttons (they belong to the request road, which the bot builds
once, not to a cog)."""

from __future__ import annotations

from typing import Any

import pytest

import bot.app
from tests.cogs.test_buttons import all_labels
from tests.cogs.test_zoom import ZOOM_LABELS

# Every rotation, forwards and backwards: each extension loads first and last, and before and
# after each of its neighbours (all 120 orders of five would start the bot 120 times).
_NAMES = bot.app.EXTENSIONS
ORDERS = [
    order
    for start in range(len(_NAMES))
    for order in (_NAMES[start:] + _NAMES[:start], (_NAMES[start:] + _NAMES[:start])[::-1])
]


@pytest.fixture(params=ORDERS, ids=["-".join(e.split(".")[1] for e in o) for o in ORDERS])
def extension_order(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> tuple[str, ...]:
    order: tuple[str, ...] = request.param
    monkeypatch.setattr(bot.app, "EXTENSIONS", order)
    return order


async def test_any_order_of_extensions_gives_the_same_commands_and_buttons(
    extension_order: tuple[str, ...], simcord_env: Any, channel: Any, alice: Any
) -> None:
    commands = {command.name for command in simcord_env.bot.tree.get_commands()}
    assert commands == {
        "imagine", "edit", "Vary image", "usage", "imagine-settings", "history", "show",
        "Image info",
    }  # fmt: skip

    posted = await alice.slash(channel, "imagine", prompt="two foxes", count=2)
    assert all_labels(posted.response) == [
        "Reroll", "Edit prompt", "Larger (2048x2048)", "Delete", "Vary 1", "Vary 2",
        *ZOOM_LABELS[:3], "Info", "Send to DM", *ZOOM_LABELS[3:],
    ]  # fmt: skip
    varied = await alice.click(posted.response, label="Vary 1")  # the edit's own buttons too
    assert all_labels(varied.response) == [
        "Delete", "Vary", *ZOOM_LABELS[:3], "Info", "Send to DM", *ZOOM_LABELS[3:],
    ]  # fmt: skip
