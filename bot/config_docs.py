"""The configuration reference (docs/configuration.md) and ``.env.example``, written from the
fields of :class:`~bot.config.Settings`: configuration is described once, in the fields'
descriptions, and these two are generated from them.

``python -m bot.config_docs`` rewrites both in a checkout (the reference between its markers,
the rest of that page is prose); ``--check`` only says which are stale (exit status 1). A test
compares both files with what these functions render, so a description changed without running
the command fails the suite.

A description's first paragraph says what the variable accepts (start-up errors repeat it,
after "it must be"); the paragraphs after it explain it, in Markdown: links to other pages of
the site become "text (docs/page.md)" in ``.env.example``, which is plain text. What the
default value alone does not say (a default in words, a value other than the default, a line
left commented out) is a :class:`~bot.config.Shown` in the field's annotation.
"""

from __future__ import annotations

import re
import sys
import textwrap
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo

from bot.config import Settings, Shown, what_it_accepts

ROOT = Path(__file__).resolve().parents[1]
ENV_EXAMPLE = ROOT / ".env.example"
REFERENCE = ROOT / "docs" / "configuration.md"
START = "<!-- settings:start (python -m bot.config_docs) -->"
END = "<!-- settings:end -->"
WIDTH = 99  # the project's line length, less one

# Read by compose.yaml from .env, never by the bot: documented beside the bot's settings, since
# an operator fills them in the same file. (name, value in .env.example, description)
COMPOSE_VARIABLES: tuple[tuple[str, str, str], ...] = (
    (
        "COMPOSE_PROFILES",
        "alone",
        "what `docker compose up` starts: `alone` (the bot by itself: SQLite on the data "
        "volume, limits in its memory) or `shared` (Redis, PostgreSQL and two bot processes "
        "sharing them). See [Docker Compose](hosting.md#docker-compose).",
    ),
    (
        "POSTGRES_PASSWORD",
        "",
        "the shared profile's PostgreSQL password: letters and digits, 16 or more.",
    ),
)

_LINK = re.compile(r"\[([^\]]+)\]\(([^)#]*)(#[^)]*)?\)")


def _shown(info: FieldInfo) -> Shown:
    return next((item for item in info.metadata if isinstance(item, Shown)), Shown())


def _explanation(info: FieldInfo) -> list[str]:
    """The description's paragraphs after the first."""
    return (info.description or "").split("\n\n")[1:]


def env_value(name: str, info: FieldInfo) -> str:
    """What .env.example sets a variable to: its default, or empty where it has none."""
    shown = _shown(info)
    if shown.value is not None:
        return shown.value
    default: Any = info.default
    if info.is_required() or default is None or default == ():
        return ""
    if isinstance(default, bool):
        return "true" if default else "false"
    if isinstance(default, float):
        return f"{default:g}"
    if isinstance(default, str | int | Path):
        return str(default)
    raise TypeError(f"{name}: say how its default is written with Shown(value=...)")


def _required(info: FieldInfo) -> str | None:
    """ "required" and when, for a variable without a default; None for the others."""
    shown = _shown(info)
    if shown.required is not None:
        return f"required {shown.required}"
    return "required" if info.is_required() else None


def reference_default(name: str, info: FieldInfo) -> str:
    """The Default column of the reference, in Markdown."""
    shown = _shown(info)
    if (required := _required(info)) is not None:
        return f"**{required}**"
    if shown.default is not None:
        return shown.default
    value = env_value(name, info)
    return f"`{value}`" if value else "none"


def _plain(markdown: str) -> str:
    """Markdown of a description as the plain text of .env.example."""
    text = _LINK.sub(lambda link: f"{link[1]} (docs/{link[2]})", markdown)
    return text.replace("**", "")


def _comment(text: str) -> list[str]:
    return textwrap.wrap(
        _plain(text),
        WIDTH,
        initial_indent="# ",
        subsequent_indent="# ",
        break_long_words=False,
        break_on_hyphens=False,
    )


def _sentence(text: str) -> str:
    return text if text.endswith((".", "!", "?")) else f"{text}."


def render_env_example() -> str:
    """The whole of .env.example."""
    lines = [
        "# Copy to .env and fill in. Environment variables override this file.",
        "# Only OPENAI_API_KEY and DISCORD_TOKEN are required; everything else has a default.",
        "# Generated from the settings' descriptions in bot/config.py by",
        "# `python -m bot.config_docs`: edit them there. The reference: docs/configuration.md.",
    ]
    for field, info in Settings.model_fields.items():
        name = field.upper()
        shown = _shown(info)
        accepts = f"{name}: {what_it_accepts(info.description)}"
        if (required := _required(info)) is not None:
            accepts += f"; {required}"
        elif shown.default is not None and "unset" not in (info.description or "").lower():
            accepts += f"; empty: {shown.default}"
        lines += ["", *_comment(_sentence(accepts))]
        for paragraph in _explanation(info):
            lines += _comment(paragraph)
        setting = f"{name}={env_value(name, info)}"
        lines.append(f"# {setting}" if shown.commented else setting)
    lines += ["", "# Docker Compose only: compose.yaml reads these, the bot does not."]
    for name, value, description in COMPOSE_VARIABLES:
        lines += ["", *_comment(f"{name}: {description}"), f"{name}={value}"]
    return "\n".join(lines) + "\n"


def _cell(markdown: str) -> str:
    return markdown.replace("|", "\\|").replace("\n", " ")


def render_reference() -> str:
    """The reference's generated part, its markers included."""
    lines = [
        START,
        "",
        "| Variable | Default | Accepts |",
        "|---|---|---|",
    ]
    for field, info in Settings.model_fields.items():
        name = field.upper()
        default = reference_default(name, info)
        accepts = what_it_accepts(info.description)
        lines.append(f"| [`{name}`](#{field}) | {_cell(default)} | {_cell(accepts)} |")
    for field, info in Settings.model_fields.items():
        name = field.upper()
        lines += [
            "",
            f"### {name}",
            "",
            f"**Default:** {reference_default(name, info)}. "
            f"**Accepts:** {_sentence(what_it_accepts(info.description))}",
        ]
        for paragraph in _explanation(info):
            lines += ["", paragraph]
    lines += [
        "",
        "### Docker Compose only",
        "",
        "`compose.yaml` reads these from `.env`; the bot does not.",
        "",
        "| Variable | In `.env.example` | What |",
        "|---|---|---|",
    ]
    for name, value, description in COMPOSE_VARIABLES:
        lines.append(f"| `{name}` | {f'`{value}`' if value else 'empty'} | {_cell(description)} |")
    lines += ["", END]
    return "\n".join(lines)


def _with_reference(page: str) -> str:
    """The reference page with its generated part replaced by today's."""
    start, end = page.find(START), page.find(END)
    if start < 0 or end < start:
        raise ValueError(f"{REFERENCE} has lost its markers {START} and {END}")
    return page[:start] + render_reference() + page[end + len(END) :]


def stale() -> list[Path]:
    """The generated files that differ from what the settings say."""
    wanted = {
        ENV_EXAMPLE: render_env_example(),
        REFERENCE: _with_reference(REFERENCE.read_text("utf-8")),
    }
    return [path for path, text in wanted.items() if path.read_text("utf-8") != text]


def main(arguments: list[str]) -> int:
    if arguments not in ([], ["--check"]):
        print("usage: python -m bot.config_docs [--check]", file=sys.stderr)
        return 2
    try:
        outdated = stale()
    except (OSError, ValueError) as exc:
        print(f"cannot write the configuration's documentation: {exc}", file=sys.stderr)
        return 1
    if arguments == ["--check"]:
        for path in outdated:
            print(f"{path.relative_to(ROOT)} is stale: run python -m bot.config_docs")
        return 1 if outdated else 0
    if ENV_EXAMPLE in outdated:
        ENV_EXAMPLE.write_text(render_env_example(), "utf-8")
    if REFERENCE in outdated:
        REFERENCE.write_text(_with_reference(REFERENCE.read_text("utf-8")), "utf-8")
    for path in outdated:
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
