"""The layers of ``bot/`` hold: pyproject.toml's import-linter contracts (one direction of
imports, cogs that import no other cog, an engine that knows no Discord, observability below
everything) are kept by the code, and an upward import breaks them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

LINT = (
    "import sys; from importlinter.cli import lint_imports; "
    "sys.exit(lint_imports(config_filename='pyproject.toml', no_cache=True))"
)


def lint(tree: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - fixed arguments
        [sys.executable, "-c", LINT],
        cwd=tree,
        env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def copy_of_the_code(into: Path) -> Path:
    for package in ("bot", "cogs"):
        shutil.copytree(
            ROOT / package, into / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(ROOT / "pyproject.toml", into / "pyproject.toml")
    return into


def test_the_code_keeps_its_layers() -> None:
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("module", "upward_import"),
    [
        ("bot/images/catalog.py", "import bot.store.ledger"),  # the engine reaching up
        ("bot/images/catalog.py", "import discord"),  # the engine learning of Discord
        ("bot/store/budgets.py", "import bot.requests.admission"),  # a store reaching up
        ("bot/observability/context.py", "import bot.config"),  # observability reaching up
        ("cogs/usage/_cog.py", "import cogs.imagine"),  # one cog importing another
    ],
)
def test_an_upward_import_breaks_the_build(tmp_path: Path, module: str, upward_import: str) -> None:
    tree = copy_of_the_code(tmp_path)
    target = tree / module
    target.write_text(target.read_text("utf-8") + f"\n{upward_import}  # noqa\n", "utf-8")
    result = lint(tree)
    assert result.returncode != 0
    importer = module.removesuffix(".py").replace("/", ".")
    assert f"{importer} -> {upward_import.split()[1]}" in result.stdout, result.stdout


def test_no_module_imports_itself_through_others() -> None:
    """No import circles, type-only imports included: each module can be read, and moved,
    after what it uses."""
    import grimp

    graph = grimp.build_graph("bot", "cogs")
    circles = sorted(
        (module, imported)
        for module in graph.modules
        for imported in graph.find_modules_directly_imported_by(module)
        if graph.chain_exists(importer=imported, imported=module)
    )
    assert circles == []
