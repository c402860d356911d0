"""Every word a member reads, in their language: message catalogs, plural rules, and numbers,
money and dates written the way their locale writes them.

Owns: marking a sentence for translation (:func:`_`, :func:`ngettext`), rendering it in a
Discord locale (:func:`localize`), the catalogs (``locales/*/LC_MESSAGES/messages.po``, read
with Babel at the first use) and the translator of the command definitions
(:mod:`bot.i18n.commands`, the one module here that knows Discord). Imports none of the bot's
layers: every layer that writes to a member may import it (the engine included, whose errors
carry the sentence a member sees).

Decision: Babel and GNU gettext catalogs, not Fluent. Babel is actively maintained, carries
CLDR's plural rules and formats numbers, money and dates per locale; the .po format has the
tools translators know (Poedit, Weblate) and ``pybabel extract`` finds every marked sentence.
python-fluent's runtime has had rare releases. See docs/translations.md.

Decision: a marked sentence is a :class:`Text`, a ``str`` whose value is its English. Code that
only passes sentences along keeps working unchanged, and English is what any path that never
learns the member's locale shows; the places that write to Discord render it in
``interaction.locale`` (:func:`localize`). Its placeholders are named (``{model}``) and filled
with ``.format(name=value)``, which keeps it translatable; numbers, :class:`Money` and dates
passed as values are formatted for the locale at rendering.
"""

from bot.i18n.text import (
    ENGLISH,
    LOCALES,
    Money,
    Text,
    _,
    catalog_locale,
    joined,
    localize,
    money,
    ngettext,
)

__all__ = [
    "ENGLISH",
    "LOCALES",
    "Money",
    "Text",
    "_",
    "catalog_locale",
    "joined",
    "localize",
    "money",
    "ngettext",
]
