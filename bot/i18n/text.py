"""Marked sentences (:class:`Text`) and their rendering in a locale.

The catalogs are read from the package's ``.po`` files with Babel at their first use and
compiled in memory into ``gettext`` translations (Babel writes the binary form into a buffer):
no compiled ``.mo`` file is committed or built, so the ``.po`` a translator edits is the only
copy there is, and a stale ``.mo`` cannot be shipped. Reading all of them takes milliseconds;
:func:`load_catalogs` does it at start so that no member's request pays for it.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
import gettext
import io
import logging
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from babel import Locale as BabelLocale
from babel.dates import format_date, format_datetime
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_currency, format_decimal

log = logging.getLogger(__name__)

CATALOGS = Path(__file__).parent / "locales"
DOMAIN = "messages"
ENGLISH = "en"  # the source language: its sentences are the msgids themselves
# The catalogs there are, by the name of their folder (Babel's spelling of the locale).
LOCALES = ("de", "es", "fr", "ja", "pt_BR", "ru")
# Each language's catalog serves all of Discord's locales of that language (es-ES and es-419).
_BY_LANGUAGE = {code.split("_")[0]: code for code in LOCALES if "_" not in code}


def catalog_locale(locale: object) -> str:
    """The catalog that serves a Discord locale (``discord.Locale`` or its value, ``pt-BR``):
    the exact one, else its language's, else English."""
    value = locale.value if isinstance(locale, enum.Enum) else locale
    code = str(value).replace("-", "_")
    if code in LOCALES:
        return code
    return _BY_LANGUAGE.get(code.split("_")[0], ENGLISH)


@functools.cache
def translations(code: str) -> gettext.NullTranslations:
    """The compiled catalog of ``code`` (one of :data:`LOCALES`); English is the identity."""
    if code not in LOCALES:
        return gettext.NullTranslations()
    path = CATALOGS / code / "LC_MESSAGES" / f"{DOMAIN}.po"
    with path.open("rb") as po:
        catalog = read_po(po, locale=code, domain=DOMAIN)
    buffer = io.BytesIO()
    write_mo(buffer, catalog)  # fuzzy entries are left out: they fall back to English
    buffer.seek(0)
    return gettext.GNUTranslations(buffer)


def load_catalogs() -> None:
    """Read every catalog now (at start), not when a member first needs one."""
    for code in LOCALES:
        translations(code)


@functools.cache
def _babel_locale(code: str) -> BabelLocale:
    return BabelLocale.parse("en_US" if code == ENGLISH else code)


@dataclass(frozen=True, slots=True)
class Money:
    """An amount of US dollars, written as the locale writes money: ``$0.04``, ``0,04 $``.
    Cents always, more places only where they count."""

    amount: Decimal


_PLACES = re.compile(r"\.(\d)f")


class _Formatter(string.Formatter):
    def __init__(self, code: str) -> None:
        self.code = code

    def format_field(self, value: Any, format_spec: str) -> str:
        locale = _babel_locale(self.code)
        if isinstance(value, Text):
            return format(value.localized(self.code), format_spec)
        if isinstance(value, Money):
            return format_currency(value.amount, "USD", locale=locale, decimal_quantization=False)
        places = _PLACES.fullmatch(format_spec)
        if places and isinstance(value, int | float | Decimal) and not isinstance(value, bool):
            # "{seconds:.1f}": that many decimal places, in the locale's digits and separators
            pattern = "#,##0." + "0" * int(places[1]) if int(places[1]) else "#,##0"
            return format_decimal(value, format=pattern, locale=locale)
        if format_spec:  # the sentence asked for a form of its own
            return format(value, format_spec)
        if isinstance(value, bool):
            return str(value)
        if isinstance(value, int | float | Decimal):
            return format_decimal(value, locale=locale, decimal_quantization=False)
        if isinstance(value, dt.datetime):
            return format_datetime(value, "medium", tzinfo=dt.UTC, locale=locale)
        if isinstance(value, dt.date):
            return format_date(value, "medium", locale=locale)
        return format(value, format_spec)


class Text(str):
    """A sentence for a member: the ``str`` is its English, ``localized()`` any language.

    ``_("...")`` and ``ngettext("...", "...")`` make one; ``.format(name=value)`` fills its
    named placeholders and returns another :class:`Text` (plural forms choose by ``n``).
    """

    msgid: str
    plural: str | None
    params: Mapping[str, object] | None

    def __new__(
        cls, msgid: str, plural: str | None = None, params: Mapping[str, object] | None = None
    ) -> Text:
        self = super().__new__(cls, _render(msgid, plural, params, ENGLISH))
        self.msgid, self.plural, self.params = msgid, plural, params
        return self

    def format(self, *args: object, **params: object) -> Text:
        if args:
            raise TypeError("a translatable sentence takes named placeholders only")
        return Text(self.msgid, self.plural, {**(self.params or {}), **params})

    def localized(self, locale: object) -> str:
        """This sentence in the language of ``locale`` (a Discord locale or a catalog's code);
        English where the catalog has no translation of it."""
        code = locale if isinstance(locale, str) and locale in (*LOCALES, ENGLISH) else None
        code = code or catalog_locale(locale)
        if code == ENGLISH:
            return str(self)
        try:
            return _render(self.msgid, self.plural, self.params, code)
        except (KeyError, IndexError, ValueError, AttributeError, TypeError) as exc:
            # A translation with a wrong placeholder: the member reads English, not an error.
            log.warning("the %s translation of %r does not format: %r", code, self.msgid, exc)
            return str(self)

    def __repr__(self) -> str:
        return f"Text({self.msgid!r})"


def _render(msgid: str, plural: str | None, params: Mapping[str, object] | None, code: str) -> str:
    catalog = translations(code)
    if plural is None:
        template = catalog.gettext(msgid)
    else:
        count = (params or {}).get("n", 2)
        template = catalog.ngettext(msgid, plural, int(count))  # type: ignore[call-overload]
    if params is None:
        return template  # not yet filled in: shown as written
    return _Formatter(code).vformat(template, (), dict(params))


def _(message: str) -> Text:
    """Mark ``message`` for translation (its placeholders named: ``{model}``)."""
    return Text(message)


def ngettext(singular: str, plural: str, n: int | None = None) -> Text:
    """Mark a sentence with plural forms, chosen by its ``{n}`` (given here or in ``.format``)."""
    return Text(singular, plural, None if n is None else {"n": n})


def money(amount: Decimal) -> Text:
    """An amount of dollars on its own, written as the member's locale writes money."""
    return Text("{amount}", None, {"amount": Money(amount)})


def joined(parts: Sequence[str], separator: str = " ") -> Text:
    """Sentences side by side, each rendered in the language the whole is rendered in."""
    names = [f"part{index}" for index in range(len(parts))]
    template = separator.join(f"{{{name}}}" for name in names)
    return Text(template, None, dict(zip(names, parts, strict=True)))


def localize(text: str, locale: object) -> str:
    """``text`` in the member's language where it is a :class:`Text`; other text as it is."""
    return text.localized(locale) if isinstance(text, Text) else text
