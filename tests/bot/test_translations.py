"""The catalogs: the template extracted from the code as it is, every language translating
every sentence with the same placeholders and its own number of plural forms, and rendering in
a locale (numbers, money, plural forms, English where there is no catalog)."""

from __future__ import annotations

import datetime as dt
import gettext
import string
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import discord
import pytest
from babel.messages.catalog import Catalog
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.plurals import get_plural
from babel.messages.pofile import read_po
from discord import app_commands

from bot.i18n import LOCALES, Money, Text, _, catalog_locale, localize, ngettext
from bot.i18n import text as text_module
from bot.i18n.commands import CatalogTranslator, command_text, valid_name
from bot.i18n.text import CATALOGS, DOMAIN

ROOT = Path(__file__).resolve().parents[2]


def _read(path: Path, locale: str | None = None) -> Catalog:
    with path.open("rb") as file:
        return read_po(file, locale=locale)


def _key(message_id: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    return (message_id,) if isinstance(message_id, str) else tuple(message_id)


def _template() -> dict[tuple[str, ...], object]:
    return {_key(m.id): m for m in _read(CATALOGS / f"{DOMAIN}.pot") if m.id}


def _fields(text: str) -> set[str]:
    return {part[1] for part in string.Formatter().parse(text) if part[1] is not None}


def test_the_template_holds_what_the_code_marks() -> None:
    """`python -m bot.i18n` was run after the last marked sentence changed: the catalogs'
    tests below then check every language against what the code really says."""
    keywords = {**DEFAULT_KEYWORDS, "command_text": None}
    found: set[tuple[str, ...]] = set()
    for folder in ("bot", "cogs"):
        for extracted in extract_from_dir(ROOT / folder, [("**.py", "python")], keywords=keywords):
            found.add(_key(extracted[2]))
    assert found == set(_template()), (
        "messages.pot is stale: run python -m bot.i18n and translate what is new "
        "(docs/translations.md)"
    )


@pytest.mark.parametrize("code", LOCALES)
def test_every_catalog_translates_every_sentence_with_its_placeholders(code: str) -> None:
    template = _template()
    catalog = _read(CATALOGS / code / "LC_MESSAGES" / f"{DOMAIN}.po", locale=code)
    messages = {_key(m.id): m for m in catalog if m.id}
    assert sorted(set(template) - set(messages)) == [], "missing from the catalog"
    assert sorted(set(messages) - set(template)) == [], "no longer in the code"
    forms = get_plural(code).num_plurals
    for key, message in messages.items():
        assert not message.fuzzy, (code, key)
        english = set().union(*(_fields(part) for part in key))
        translated = (
            (message.string,) if isinstance(message.string, str) else tuple(message.string or ())
        )
        if message.pluralizable:
            assert len(translated) == forms, (code, key)
        for text in translated:
            assert text, f"{code} has no translation of {key}"
            assert _fields(text) <= english, (code, key, text)
        # A plural's form for one may leave out the number ("a minute"); all say it together.
        assert set().union(*(_fields(text) for text in translated)) == english, (code, key)


def test_russian_has_three_plural_forms_and_uses_them() -> None:
    images = ngettext("{n} image", "{n} images")
    assert [images.format(n=n).localized("ru") for n in (1, 3, 5, 21)] == [
        "1 изображение",
        "3 изображения",
        "5 изображений",
        "21 изображение",
    ]


def test_numbers_money_and_dates_are_written_as_the_locale_writes_them() -> None:
    text = _("{amount}").format(amount=Money(Decimal("1234.5")))
    assert str(text) == "$1,234.50"
    assert text.localized("de") == "1.234,50\xa0$"
    assert text.localized(discord.Locale.french).replace("\u202f", " ") == "1 234,50\xa0$US"
    cents = _("{amount}").format(amount=Money(Decimal("0.016")))
    assert cents.localized("en") == "$0.016"
    count = _("{n}").format(n=12345)
    assert count.localized("de") == "12.345"
    day = _("{day}").format(day=dt.date(2026, 3, 1))
    assert day.localized("ja") == "2026/03/01"


def test_a_locale_without_a_catalog_reads_english() -> None:
    images = ngettext("{n} image", "{n} images").format(n=2)
    assert catalog_locale(discord.Locale.korean) == "en"
    assert localize(images, discord.Locale.korean) == "2 images"
    assert localize(images, discord.Locale.german) == "2 Bilder"
    assert catalog_locale(discord.Locale.latin_american_spanish) == "es"
    assert catalog_locale(discord.Locale.brazil_portuguese) == "pt_BR"


def test_plain_text_passes_as_it_is() -> None:
    assert localize("a prompt, not a sentence of ours", discord.Locale.japanese) == (
        "a prompt, not a sentence of ours"
    )


def test_a_translation_that_does_not_format_reads_english(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A catalog edited by hand with a wrong placeholder costs that sentence its translation,
    not the member their answer."""

    class Broken(gettext.NullTranslations):
        def gettext(self, message: str) -> str:
            return "{nombre} images"

    real = text_module.translations
    monkeypatch.setattr(
        text_module, "translations", lambda code: Broken() if code == "fr" else real(code)
    )
    sentence = _("{n} images").format(n=3)
    assert sentence.localized("fr") == "3 images"
    assert "does not format" in caplog.text


async def test_a_name_discord_would_refuse_is_not_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    """A command name with a capital or a space (or a description over 100 characters) would
    make Discord refuse the whole sync: that locale is sent English instead."""
    translator = CatalogTranslator()
    name: app_commands.TranslationContextTypes = app_commands.TranslationContext(
        location=app_commands.TranslationContextLocation.command_name, data=cast(Any, None)
    )
    german = await translator.translate(command_text("imagine"), discord.Locale.german, name)
    assert german is not None and valid_name(german)
    monkeypatch.setattr(Text, "localized", lambda self, locale: "Bild Erzeugen")
    assert await translator.translate(command_text("imagine"), discord.Locale.german, name) is None
    assert await translator.translate(command_text("imagine"), discord.Locale.korean, name) is None
