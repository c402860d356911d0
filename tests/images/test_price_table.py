"""The documentation's table of typical costs is the one the catalog's prices give today."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from bot.images import load_catalog
from bot.images.price_table import markdown, typical_cost

PRICES_PAGE = Path(__file__).resolve().parents[2] / "docs" / "models.md"


def test_the_models_page_shows_the_costs_the_catalog_gives() -> None:
    assert markdown(load_catalog()) in PRICES_PAGE.read_text("utf-8"), (
        "the price table of docs/models.md is stale: paste the output of "
        "python -m bot.images.price_table"
    )


def test_a_typical_request_costs_what_openai_publishes() -> None:
    catalog = load_catalog()
    assert typical_cost(catalog["dall-e-3"], "1024x1792", "hd") == Decimal("0.12")
    assert typical_cost(catalog["dall-e-2"], "256x256", "standard") == Decimal("0.016")
