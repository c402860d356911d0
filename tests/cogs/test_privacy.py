"""What a member may learn of another's sets, whatever they forge (an adversarial review): the
Image info menu on a message that is not the bot's, forged ids, and sets shown again where they
were not made; in simcord against the fake Images API."""

from __future__ import annotations

from typing import Any

from simcord.results import to_discord_message

from tests.cogs.test_history import key_of, private_messages, said


def forged(env: Any, channel: Any, author: Any, custom_id: str) -> Any:
    """A message of someone else's (another app's, posted for ``author``) carrying a button
    whose id looks like one of the bot's: any member can have such a message posted, with a
    user-installed app of their own."""
    stored = env.backend.create_message(
        channel.id,
        author.id,
        "look",
        components=[
            {
                "type": 1,
                "components": [{"type": 2, "style": 2, "label": "Info", "custom_id": custom_id}],
            }
        ],
    )
    return to_discord_message(env, stored)


async def test_image_info_on_a_forged_message_names_no_private_set_of_another(
    simcord_env: Any, channel: Any, alice: Any, bob: Any
) -> None:
    private = await alice.slash(channel, "imagine", prompt="alice's secret fox", private=True)
    key = key_of(private.response)

    bait = forged(simcord_env, channel, bob, f"imagine:info:{key}")
    answer = await bob.context_menu(channel, "Image info", bait)

    shown = " ".join(
        f"{m.content} {[e.to_dict() for e in m.embeds]}" for m in private_messages(answer)
    )
    assert "secret fox" not in shown
    assert said(answer) == "This message is not a set of images the bot posted with its buttons."


async def test_a_forged_button_names_no_private_set_of_another(
    simcord_env: Any, channel: Any, alice: Any, bob: Any, images_api: Any
) -> None:
    private = await alice.slash(channel, "imagine", prompt="alice's secret fox", private=True)
    key = key_of(private.response)

    for action in ("info", "dm", "reroll"):
        bait = forged(simcord_env, channel, bob, f"imagine:{action}:{key}")
        answer = await bob.click(bait, custom_id=f"imagine:{action}:{key}")
        assert (
            said(answer)
            == "The bot no longer has the request behind these buttons. Please use /imagine."
        )
    assert bob.user.dm_channel is None or bob.user.dm_channel.history() == []
    assert len(images_api.generation_requests) == 1  # alice's only
