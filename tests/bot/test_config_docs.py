"""The configuration is described once, in the settings' fields: the reference page and
.env.example are what ``python -m bot.config_docs`` writes from them, never stale."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from dotenv import dotenv_values

from bot import config_docs
from bot.config import Settings, load_settings, what_it_accepts
from bot.config_docs import (
    END,
    ENV_EXAMPLE,
    REFERENCE,
    START,
    main,
    render_env_example,
    render_reference,
)

STALE = "run python -m bot.config_docs to write it again from bot/config.py"


def test_env_example_is_the_one_the_settings_describe() -> None:
    assert ENV_EXAMPLE.read_text("utf-8") == render_env_example(), f".env.example is stale: {STALE}"


def test_the_configuration_reference_is_the_one_the_settings_describe() -> None:
    page = REFERENCE.read_text("utf-8")
    assert START in page and END in page, f"{REFERENCE} has lost its markers"
    written = page[page.index(START) : page.index(END) + len(END)]
    assert written == render_reference(), f"docs/configuration.md is stale: {STALE}"


def test_every_setting_is_documented_in_both_with_what_it_accepts() -> None:
    example, reference = render_env_example(), render_reference()
    for field, info in Settings.model_fields.items():
        variable = field.upper()
        accepts = what_it_accepts(info.description)
        assert info.description, f"{variable} has no description"
        # The first paragraph completes a start-up error's "it must be ...": plain words.
        assert "](" not in accepts and not accepts[0].isupper(), variable
        assert f"\n{variable}=" in example or f"\n# {variable}=" in example, variable
        assert f"\n### {variable}\n" in reference and accepts in reference, variable


def test_the_reference_says_the_operators_budgets_are_ceilings_a_server_only_lowers() -> None:
    # It said a server's managers "replace" them, which SERVERS_MAY_RAISE_BUDGETS alone allows.
    for variable in ("MEMBER_BUDGET", "SERVER_BUDGET"):
        description = Settings.model_fields[variable.lower()].description or ""
        assert "replace" not in description, variable
        assert "ceiling" in description and "SERVERS_MAY_RAISE_BUDGETS" in description, variable


def test_a_dotenv_copied_from_the_example_gives_the_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dotenv = tmp_path / ".env"
    shutil.copy(ENV_EXAMPLE, dotenv)
    # What an operator fills in; the file's other values are the defaults, or empty.
    monkeypatch.setenv("OPENAI_API_KEY", "sk-example-0123456789")
    from_example = load_settings(require_discord=False, env_file=dotenv)
    defaults = load_settings(require_discord=False, env_file=None)
    assert from_example.model_dump() == defaults.model_dump()
    settings_in_file = {
        name for name in dotenv_values(dotenv) if name.lower() in Settings.model_fields
    }
    assert "OPENAI_API_KEY" in settings_in_file


def test_the_command_rewrites_what_is_stale_and_check_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    example, reference = tmp_path / ".env.example", tmp_path / "docs" / "configuration.md"
    reference.parent.mkdir()
    example.write_text("MAX_RETRIES=9\n", "utf-8")
    reference.write_text(f"# Configuration\n\nProse stays.\n\n{START}\nold\n{END}\n", "utf-8")
    monkeypatch.setattr(config_docs, "ROOT", tmp_path)
    monkeypatch.setattr(config_docs, "ENV_EXAMPLE", example)
    monkeypatch.setattr(config_docs, "REFERENCE", reference)

    assert main(["--check"]) == 1
    assert capsys.readouterr().out.splitlines() == [
        ".env.example is stale: run python -m bot.config_docs",
        "docs/configuration.md is stale: run python -m bot.config_docs",
    ]
    assert main([]) == 0
    assert example.read_text("utf-8") == render_env_example()
    assert reference.read_text("utf-8") == (
        f"# Configuration\n\nProse stays.\n\n{render_reference()}\n"
    )
    capsys.readouterr()
    assert main(["--check"]) == 0
    assert capsys.readouterr().out == ""


def test_the_command_refuses_a_page_without_its_markers_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    reference = tmp_path / "configuration.md"
    reference.write_text("# Configuration\n", "utf-8")
    monkeypatch.setattr(config_docs, "REFERENCE", reference)
    assert main([]) == 1
    assert reference.read_text("utf-8") == "# Configuration\n"
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "lost its markers" in error
