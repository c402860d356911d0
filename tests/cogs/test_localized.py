"""The bot in the member's language, through simcord: the commands' localized definitions pass
Discord's rules, and /usage and a budget refusal read in German and Japanese."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import discord
import pytest
import simcord
import simcord.interactions

from bot.app import ImagineBot
from bot.i18n.commands import DESCRIPTION_MAX, CatalogTranslator, valid_name
from bot.requests.admission import CAP
from tests.cogs.conftest import RECOMMENDED_SHARDS, make_settings
from tests.cogs.support import setting
from tests.cogs.test_lifecycle import command_syncs


@pytest.fixture
def member_locale() -> str:
    return "en-US"


@pytest.fixture(autouse=True)
def locale_of_interactions(member_locale: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """simcord writes every interaction as en-US: ours say the member's client language."""
    built = simcord.interactions.base_payload

    def with_locale(*args: Any, **kwargs: Any) -> Any:
        record, payload = built(*args, **kwargs)
        payload["locale"] = member_locale
        return record, payload

    monkeypatch.setattr(simcord.interactions, "base_payload", with_locale)


def _walk(payload: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield payload
    for option in payload.get("options", []):
        yield from _walk(option)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_every_localized_name_and_description_passes_discords_rules(
    simcord_env: Any, simcord_bot: Any
) -> None:
    tree, translator = simcord_bot.tree, simcord_bot.tree.translator
    assert translator is not None
    seen = 0
    for command in tree.get_commands():
        payload = await command.get_translated_payload(tree, translator)
        menu = payload.get("type") in (2, 3)
        for node in _walk(payload):
            for name in (node.get("name_localizations") or {}).values():
                seen += 1
                assert 1 <= len(name) <= 32, name
                assert menu or valid_name(name), name
            for text in (node.get("description_localizations") or {}).values():
                assert 1 <= len(text) <= DESCRIPTION_MAX, text
    assert seen > 50  # the names are translated at all


# What a member reads, by their client's language: the same requests, the catalogs' words.
SEEN = {
    "de": {
        "author": "Erstellt von alice",
        "model": "Modell",
        "refusal": "Dieser Server erlaubt höchstens 2 Bilder pro Anfrage.",
        "budget": "Dein Budget auf diesem Server beträgt 1 Bild pro Tag (Kalendertage, UTC)",
        "title": "Dein Verbrauch auf diesem Server",
        "today": "Heute (UTC)",
        "totals": " · 1 Bild · 1 Anfrage",
        "buttons": ["Neu würfeln", "Prompt bearbeiten"],
    },
    "ja": {
        "author": "aliceが生成しました",
        "model": "モデル",
        "refusal": "このサーバーでは1回のリクエストにつき最大2枚までです。",
        "budget": "このサーバーでのあなたの予算は1日1枚（暦日、UTC）です。",  # noqa: RUF001
        "title": "このサーバーでのあなたの利用状況",
        "today": "今日（UTC）",  # noqa: RUF001
        "totals": " · 1枚 · 1件のリクエスト",
        "buttons": ["再生成", "プロンプトを編集"],
    },
    "ru": {
        "author": "Создано по запросу alice",
        "model": "Модель",
        "refusal": "Этот сервер разрешает не больше 2 изображений за запрос.",
        "budget": "Ваш бюджет на этом сервере — 1 изображение в день (календарные дни, UTC)",
        "title": "Ваши расходы на этом сервере",
        "today": "Сегодня (UTC)",
        "totals": " · 1 изображение · 1 запрос",
        "buttons": ["Ещё раз", "Изменить описание"],
    },
}


@pytest.fixture
def bot_overrides(database_url: str) -> dict[str, Any]:
    return {
        "database_url": database_url,
        "member_budget": "1 images/day",
        "max_images_per_request": 2,
    }


@pytest.mark.parametrize("member_locale", sorted(SEEN))
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_imagine_a_refusal_a_budget_refusal_and_usage_read_in_the_members_language(
    simcord_env: Any, channel: Any, alice: Any, images_api: Any, member_locale: str
) -> None:
    seen = SEEN[member_locale]
    result = await alice.slash(channel, "imagine", prompt="a lighthouse", model="dall-e-2")
    (embed,) = result.response.embeds
    assert embed.author.name == seen["author"]
    assert embed.fields[0].name == seen["model"]
    labels = [c["label"] for c in result.response.components[0]["components"]]
    assert labels[:2] == seen["buttons"]

    refused = await alice.slash(channel, "imagine", prompt="a lighthouse", count=3)
    assert refused.response.content == seen["refusal"]

    over = await alice.slash(channel, "imagine", prompt="a lighthouse", model="dall-e-2")
    assert seen["budget"] in over.response.content

    usage = await alice.slash(channel, "usage")
    (embed,) = usage.response.embeds
    assert embed.title == seen["title"]
    assert embed.fields[0].name == seen["today"]
    assert embed.fields[0].value.endswith(seen["totals"])


def test_russian_counts_take_their_three_forms_in_a_refusal() -> None:
    cap = CAP.format(n=2)
    assert [cap.format(n=n).localized("ru") for n in (1, 2, 5)] == [
        "Этот сервер разрешает не больше 1 изображения за запрос.",
        "Этот сервер разрешает не больше 2 изображений за запрос.",
        "Этот сервер разрешает не больше 5 изображений за запрос.",
    ]


@pytest.mark.parametrize("member_locale", ["ko"])
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_locale_without_a_catalog_reads_english(
    simcord_env: Any, channel: Any, alice: Any, images_api: Any
) -> None:
    result = await alice.slash(channel, "usage")
    (embed,) = result.response.embeds
    assert embed.title == "Your usage on this server"
    assert isinstance(discord.Locale("ko"), discord.Locale)


async def test_a_changed_translation_syncs_the_commands_again_and_only_then(
    images_api: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"

    async def start() -> int:
        bot = ImagineBot(make_settings(images_api.base_url, data))
        async with simcord.run(bot, shard_count=RECOMMENDED_SHARDS) as env:
            return len(command_syncs(env))

    assert await start() == 1
    assert await start() == 0  # the same translations: Discord is not asked again
    translate = CatalogTranslator.translate

    async def reworded(self: CatalogTranslator, string: Any, locale: Any, context: Any) -> Any:
        translated = await translate(self, string, locale, context)
        if string.message == "What to draw" and translated is not None:
            return translated + "!"
        return translated

    monkeypatch.setattr(CatalogTranslator, "translate", reworded)
    assert await start() == 1


@pytest.mark.parametrize("member_locale", ["de"])
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_managers_settings_answers_name_the_setting_as_their_client_does(
    simcord_env: Any, channel: Any, manager: Any
) -> None:
    answer = await setting(manager, channel, "max-images", value=1)
    assert answer == "max-bilder ist jetzt 1 (vorher der Standard)."
    refused = await setting(manager, channel, "channels", value="general")
    assert refused.startswith("kanäle muss ein oder mehrere Kanäle dieses Servers sein")


@pytest.mark.parametrize("member_locale", ["de"])
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_history_and_an_info_card_read_in_german(
    simcord_env: Any, channel: Any, alice: Any, images_api: Any
) -> None:
    empty = await alice.slash(channel, "history")
    assert empty.response.content == (
        "Du hast hier noch keine Bilder. Nutze /bild-erzeugen, um welche zu erstellen."
    )
    posted = await alice.slash(channel, "imagine", prompt="a fox", model="dall-e-2")

    listed = await alice.slash(channel, "history")
    page = listed.response
    assert page.content.startswith("Deine letzten Bilder hier (neueste zuerst):")
    assert "0,02\xa0$" in page.content and "[springen](" in page.content

    info = await alice.click(posted.response, label="Info")
    (embed,) = info.response.embeds
    assert embed.title.startswith("Anfrage ")
    names = [field.name for field in embed.fields]
    assert names[:4] == ["Angefragt von", "Wann", "Kosten", "Modell"]
    assert embed.fields[2].value == "0,02\xa0$"


@pytest.mark.parametrize("member_locale", ["de"])
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_blocked_word_its_answer_and_a_bad_pattern_read_in_german(
    simcord_env: Any, channel: Any, manager: Any
) -> None:
    answer = await setting(manager, channel, "blocked-words", add="fire, blood moon")
    assert answer == "gesperrte-wörter: 2 eigene dieses Servers (vorher 0): fire, blood moon"
    refused = await setting(manager, channel, "blocked-patterns", add="(?=x)")
    assert refused.startswith("Dieses Muster kann der Bot nicht verwenden: Es muss RE2-Syntax")
    both = await setting(manager, channel, "blocked-words")
    assert both == "gesperrte-wörter nimmt entweder hinzufügen oder entfernen."
