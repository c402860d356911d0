"""Blocked words and patterns, and the moderation check, through simcord and the fake Images API:
each refuses privately before anything is paid for (no ledger row, nothing sent to the image
service), evasions by look-alike, invisible or full-width characters are caught, and a
moderation check that cannot be made refuses (fails closed)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bot.requests.admission import MODERATION_REFUSED, NOT_CHECKED
from bot.requests.server_admission import BLOCKED
from bot.store.server_settings import NO_MODERATION_ROUTE
from tests.cogs.support import finish, private_reply, setting
from tests.cogs.test_edit import png
from tests.conftest import API_KEY
from tests.databases import ledger_rows
from tests.fakes.images_api import FakeImagesAPI, hang, respond


def declare_moderation_waits(env: Any) -> None:
    """The moderation check talks to the loopback API in the background: an intended wait."""
    client = env.bot.images
    real_moderate = client.moderate

    async def declared(*args: Any, **kwargs: Any) -> Any:
        return await env.external_wait(real_moderate(*args, **kwargs), reason="moderation call")

    client.moderate = declared


def counted(env: Any, outcome: str) -> float:
    """Requests of /imagine the metrics count with this outcome."""
    labels = {"command": "imagine", "outcome": outcome}
    return env.bot.metrics.registry.get_sample_value("imagine_requests_total", labels) or 0.0


def checks_sent(images_api: FakeImagesAPI) -> list[Any]:
    """The bodies of the moderation checks made (not the probe at start, an empty body)."""
    return [r.body for r in images_api.moderation_requests if r.body != {}]


@pytest.fixture
def bot_overrides(database_url: str) -> dict[str, Any]:
    return {"database_url": database_url, "blocked_words": "dragon"}


async def test_blocked_words_and_patterns_refuse_privately_and_nothing_is_charged(
    simcord_env: Any, channel: Any, alice: Any, manager: Any, images_api: FakeImagesAPI,
    database_url: str,
) -> None:  # fmt: skip
    answer = await setting(manager, channel, "blocked-words", add="fire, blood moon")
    assert answer.startswith("blocked-words: 2 of this server's own (it had 0): fire, blood moon")
    assert "this bot's own 1" in answer
    answer = await setting(manager, channel, "blocked-patterns", add=r"kn[i1]ght")
    assert answer.startswith("blocked-patterns: 1 of this server's own")

    evasions = [
        "a red DRAGON",  # the operator's word, in capitals
        "a \uff42\uff4c\uff4f\uff4f\uff44  \uff4d\uff4f\uff4f\uff4e",  # full-width, two spaces
        "f\u200bire and ice",  # a zero-width space inside the word
        "fíre",  # an accent
        "blood-moon",  # a phrase with punctuation between its words
        "a dr\u0430gon",  # a Cyrillic a
        "F\u00adIRE",  # a soft hyphen
        "a brave kn1ght",  # the pattern
    ]
    for prompt in evasions:
        refused = await alice.slash(channel, "imagine", prompt=prompt)
        assert refused.response.ephemeral, prompt
        assert refused.response.content == BLOCKED, prompt
    assert "fire" not in BLOCKED and "kn" not in BLOCKED  # no word or pattern is named
    assert counted(simcord_env, "blocked") == len(evasions)

    allowed = await alice.slash(channel, "imagine", prompt="a firefly over a dragonfly pond")
    await finish(simcord_env)
    assert len(allowed.response.attachments) == 1  # words match on word boundaries
    assert [r.body["prompt"] for r in images_api.generation_requests] == [
        "a firefly over a dragonfly pond"
    ]
    assert len(await ledger_rows(database_url)) == 1  # the refused ones left no row

    assert await setting(manager, channel, "blocked-words", remove="fire") == (
        "blocked-words: 1 of this server's own (it had 2): blood moon (and this bot's own 1, "
        "set by its operator)"
    )
    again = await alice.slash(channel, "imagine", prompt="fire")
    await finish(simcord_env)
    assert len(again.response.attachments) == 1


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_edit_prompt_reroll_and_edit_are_refused_by_a_word_blocked_since(
    simcord_env: Any, channel: Any, alice: Any, manager: Any, images_api: FakeImagesAPI,
    database_url: str,
) -> None:  # fmt: skip
    first = await alice.slash(channel, "imagine", prompt="a wolf", model="dall-e-2")
    await finish(simcord_env)
    await setting(manager, channel, "blocked-words", add="wolf, tiger")

    rerolled = await alice.click(first.response, label="Reroll")
    assert private_or_answer(rerolled) == BLOCKED
    shown = await alice.click(first.response, label="Edit prompt")
    (row,) = shown.modal["components"]
    custom_id = row["component"]["custom_id"] if "component" in row else row["components"][0]
    edited = await alice.submit_modal(shown, {custom_id: "a tiger"})
    assert private_or_answer(edited) == BLOCKED
    result = await alice.slash(channel, "edit", image=("cat.png", png()), prompt="add a wolf")
    assert private_or_answer(result) == BLOCKED

    assert len(images_api.generation_requests) == 1
    assert images_api.edit_requests == []
    assert len(await ledger_rows(database_url)) == 1


def private_or_answer(result: Any) -> str:
    """The private sentence a refused request got, at once or in place of its placeholder."""
    if result.response is not None:
        assert result.response.ephemeral
        return str(result.response.content)
    return str(private_reply(result).content)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_pattern_re2_refuses_is_refused_when_added_and_backtracking_ones_are_fast(
    simcord_env: Any, channel: Any, alice: Any, manager: Any, images_api: FakeImagesAPI
) -> None:
    for pattern in (r"(?=x)y", r"(a)\1", r"x{1000}{1000}"):
        answer = await setting(manager, channel, "blocked-patterns", add=pattern)
        assert answer.startswith("This pattern is not a pattern this bot can use: it must be RE2")
    answer = await setting(manager, channel, "blocked-patterns", add="a*")
    assert answer == "This pattern matches an empty prompt, so it would refuse every prompt."

    # Minutes in Python's re on this prompt; linear in RE2.
    await setting(manager, channel, "blocked-patterns", add="(a+)+$")
    passed = await alice.slash(channel, "imagine", prompt="a" * 30 + "b")
    await finish(simcord_env)
    assert len(passed.response.attachments) == 1
    refused = await alice.slash(channel, "imagine", prompt="a" * 30)
    assert refused.response.content == BLOCKED


# -- the moderation check ----------------------------------------------------------------------


async def test_a_flagged_prompt_is_refused_before_paying_and_strict_refuses_more(
    simcord_env: Any, channel: Any, alice: Any, manager: Any, images_api: FakeImagesAPI,
    database_url: str,
) -> None:  # fmt: skip
    declare_moderation_waits(simcord_env)
    assert await setting(manager, channel, "moderation", value="on") == (
        "moderation is now on (it was the default)."
    )
    refused = await alice.slash(channel, "imagine", prompt="a gore scene")
    await finish(simcord_env)
    assert private_or_answer(refused) == MODERATION_REFUSED
    scored = await alice.slash(channel, "imagine", prompt="a fistfight in a tavern")
    await finish(simcord_env)
    assert len(scored.response.attachments) == 1  # scored 0.45: not flagged, so on lets it pass

    await setting(manager, channel, "moderation", value="strict")
    strict = await alice.slash(channel, "imagine", prompt="a fistfight in a tavern")
    await finish(simcord_env)
    assert private_or_answer(strict) == MODERATION_REFUSED
    await setting(manager, channel, "moderation", value="strict violence=off")
    overridden = await alice.slash(channel, "imagine", prompt="a fistfight in a tavern")
    await finish(simcord_env)
    assert len(overridden.response.attachments) == 1

    assert len(images_api.generation_requests) == 2
    assert len(await ledger_rows(database_url)) == 2
    sent = checks_sent(images_api)
    assert sent[0] == {
        "model": "omni-moderation-latest",
        "input": [{"type": "text", "text": "a gore scene"}],
    }
    for body in sent:  # no Discord id reaches the moderation check
        text = json.dumps(body)
        assert str(alice.id) not in text and str(channel.guild.id) not in text


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_an_edits_images_are_moderated_too(
    simcord_env: Any, channel: Any, alice: Any, manager: Any, images_api: FakeImagesAPI,
    database_url: str,
) -> None:  # fmt: skip
    declare_moderation_waits(simcord_env)
    await setting(manager, channel, "moderation", value="on")
    photo = png(48, 48)
    images_api.moderation_images[photo] = {"sexual": 0.97}
    result = await alice.slash(channel, "edit", image=("photo.png", photo), prompt="a hat")
    await finish(simcord_env)
    assert private_or_answer(result) == MODERATION_REFUSED
    (sent,) = checks_sent(images_api)
    parts = sent["input"]
    assert parts[0] == {"type": "text", "text": "a hat"}
    assert parts[1]["image_url"]["url"].startswith("data:image/png;base64,")
    assert images_api.edit_requests == []
    assert await ledger_rows(database_url) == []


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    "fault",
    [
        respond(500, '{"error": {"message": "boom", "type": "server_error"}}'),
        respond(200, "<html>a proxy's page</html>", content_type="text/html"),
        respond(200, '{"id": "modr-1", "results": [{"flagged": false}]}'),  # no scores
        respond(200, '{"results": []}'),
    ],
    ids=["500", "html", "no-scores", "no-results"],
)
async def test_a_moderation_check_that_fails_refuses_the_request(
    simcord_env: Any, channel: Any, alice: Any, manager: Any, images_api: FakeImagesAPI,
    database_url: str, fault: Any,
) -> None:  # fmt: skip
    declare_moderation_waits(simcord_env)
    await setting(manager, channel, "moderation", value="on")
    images_api.moderation_script.append(fault)
    result = await alice.slash(channel, "imagine", prompt="a quiet lake")
    await finish(simcord_env)
    assert private_or_answer(result) == NOT_CHECKED
    assert "could not be checked" in NOT_CHECKED
    assert counted(simcord_env, "moderation_unavailable") == 1
    assert images_api.generation_requests == []
    assert await ledger_rows(database_url) == []


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_hanging_moderation_check_refuses_the_request_in_time(
    simcord_env: Any, channel: Any, alice: Any, manager: Any, images_api: FakeImagesAPI
) -> None:
    declare_moderation_waits(simcord_env)
    simcord_env.bot.images.moderation_seconds = 0.5
    await setting(manager, channel, "moderation", value="on")
    images_api.moderation_script.append(hang(3600))
    result = await alice.slash(channel, "imagine", prompt="a quiet lake")
    await simcord_env.advance_time(1)
    await finish(simcord_env)
    assert private_or_answer(result) == NOT_CHECKED
    assert images_api.generation_requests == []


@pytest.fixture
async def images_api(request: pytest.FixtureRequest) -> AsyncIterator[FakeImagesAPI]:
    """The fake Images API; ``False`` as its parameter: without POST /moderations, as some
    gateways are."""
    fake = FakeImagesAPI(api_key=API_KEY, moderations_route=getattr(request, "param", True))
    await fake.start()
    yield fake
    await fake.close()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("images_api", [False], indirect=True)
async def test_without_moderations_the_setting_says_it_cannot_be_used(
    simcord_env: Any, channel: Any, alice: Any, manager: Any,
) -> None:  # fmt: skip
    assert await setting(manager, channel, "moderation", value="strict") == NO_MODERATION_ROUTE
    assert await setting(manager, channel, "moderation", value="off") == (
        "moderation is now off: this bot's image service has no moderation check "
        "(it was the default)."
    )
    served = await alice.slash(channel, "imagine", prompt="a quiet lake")
    await finish(simcord_env)
    assert len(served.response.attachments) == 1
