"""The command definitions in every language: discord.py's :class:`app_commands.Translator`
over the same catalogs as the sentences.

A cog marks a name, a description or a choice with :func:`command_text`; discord.py asks the
translator for each of Discord's locales when it builds the definitions it syncs (and for the
choices an autocomplete answers). A translation Discord would refuse (a name that is not
lowercase letters, digits, ``-`` and ``_`` of at most 32 characters, a description over 100) is
not sent: that locale sees English instead, and the log says which. The catalogs' tests keep
such a translation from being committed.
"""

from __future__ import annotations

import logging
import re

import discord
from discord import app_commands

from bot.i18n.text import ENGLISH, Text, catalog_locale

log = logging.getLogger(__name__)

NAME_MAX = 32
DESCRIPTION_MAX = 100
CHOICE_NAME_MAX = 100
# Discord's rule for the names of chat input commands and their options, which must also be
# lowercase where a letter has a lowercase form (its \p{L}/\p{N} approximated by \w less "_"
# and digits of every script; Devanagari's and Thai's marks are letters' companions).
_NAME_CHARACTERS = re.compile(r"^[-_\w\u0900-\u097F\u0E00-\u0E7F]{1,32}$")

_NAMES = (
    app_commands.TranslationContextLocation.command_name,
    app_commands.TranslationContextLocation.group_name,
    app_commands.TranslationContextLocation.parameter_name,
)
_DESCRIPTIONS = (
    app_commands.TranslationContextLocation.command_description,
    app_commands.TranslationContextLocation.group_description,
    app_commands.TranslationContextLocation.parameter_description,
)


def command_text(message: str, **params: object) -> app_commands.locale_str:
    """Mark a command's name, description or choice for translation; ``params`` fill its named
    placeholders (``command_text("How many images (at most {most})", most=4)``)."""
    if isinstance(message, Text):  # a sentence marked where it is kept, or built of several
        text = message.format(**params) if params else message
    else:
        text = Text(message, None, params or None)
    return app_commands.locale_str(str(text), text=text)


def valid_name(name: str) -> bool:
    """Whether Discord takes ``name`` as a chat input command's or option's name."""
    return bool(_NAME_CHARACTERS.match(name)) and name == name.lower()


def acceptable(
    translation: str, location: app_commands.TranslationContextLocation, *, context_menu: bool
) -> bool:
    """Whether Discord accepts ``translation`` where it goes."""
    if location in _NAMES:
        # A context menu's name is shown as it is written: any case, spaces allowed.
        return 1 <= len(translation) <= NAME_MAX and (context_menu or valid_name(translation))
    if location in _DESCRIPTIONS:
        return 1 <= len(translation) <= DESCRIPTION_MAX
    return 1 <= len(translation) <= CHOICE_NAME_MAX


class CatalogTranslator(app_commands.Translator):
    """Names, descriptions and choices from the catalogs; None (Discord shows English) where
    a locale has no catalog, no translation, or one Discord would refuse."""

    async def translate(
        self,
        string: app_commands.locale_str,
        locale: discord.Locale,
        context: app_commands.TranslationContextTypes,
    ) -> str | None:
        code = catalog_locale(locale)
        text = string.extras.get("text")
        if code == ENGLISH or not isinstance(text, Text):
            return None
        translation = text.localized(code)
        if translation == str(text):
            return None
        context_menu = isinstance(context.data, app_commands.ContextMenu)
        if not acceptable(translation, context.location, context_menu=context_menu):
            log.warning(
                "the %s translation of %r is not one Discord accepts; English is sent",
                code,
                text.msgid,
            )
            return None
        return translation
