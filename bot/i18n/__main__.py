"""``python -m bot.i18n``: the template (``messages.pot``) extracted again from the code, and
every catalog brought up to it (new sentences added untranslated, removed ones dropped).

The same as running ``pybabel extract`` and ``pybabel update`` with the options written in
``babel.cfg`` (docs/translations.md); run it from the repository's root after marking or
changing a sentence, then translate what is new in each ``messages.po``.
"""

from __future__ import annotations

from babel.messages.frontend import CommandLineInterface

from bot.i18n.text import CATALOGS, DOMAIN, LOCALES

ROOT = CATALOGS.parents[2]
TEMPLATE = CATALOGS / f"{DOMAIN}.pot"
# What pybabel looks for besides _ and ngettext, and how the template is written: no line
# numbers (they would make every edit of a file a change of the template), sorted.
EXTRACT = [
    "-F",
    str(ROOT / "babel.cfg"),
    "-k",
    "command_text",
    "--add-comments=TRANSLATORS:",
    "--no-location",
    "--sort-output",
    "--project=imagine-bot",
    "--msgid-bugs-address=",
    "--width=100",
]


def main() -> None:
    cli = CommandLineInterface()
    sources = [str(ROOT / "bot"), str(ROOT / "cogs")]
    cli.run(["pybabel", "extract", *EXTRACT, "-o", str(TEMPLATE), *sources])  # type: ignore[no-untyped-call]
    for code in LOCALES:
        if not (CATALOGS / code / "LC_MESSAGES" / f"{DOMAIN}.po").exists():
            cli.run(  # type: ignore[no-untyped-call]
                ["pybabel", "init", "-i", str(TEMPLATE), "-d", str(CATALOGS), "-l", code]
            )
        cli.run(  # type: ignore[no-untyped-call]
            [
                "pybabel",
                "update",
                "-i",
                str(TEMPLATE),
                "-d",
                str(CATALOGS),
                "-l",
                code,
                "--no-fuzzy-matching",
                "--ignore-obsolete",
                "--width=100",
            ]
        )


if __name__ == "__main__":
    main()
