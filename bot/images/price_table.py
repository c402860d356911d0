"""The table of what a typical request costs per priced model (docs/models.md, "What a request
costs"), computed from the catalog's prices by the same estimate the bot reserves against budgets.

``python -m bot.images.price_table`` prints it; a test checks that the page shows exactly this.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from bot.images.catalog import ModelSpec, load_catalog
from bot.images.pricing import describe_price, estimate_cost
from bot.images.request import ImageRequest, prepare_request

TYPICAL_PROMPT = "x" * 200  # a 200-character English prompt: 200 bytes, reserved as 200 tokens
START = "<!-- price-table:start (python -m bot.images.price_table) -->"
END = "<!-- price-table:end -->"


def typical_cost(spec: ModelSpec, size: str, quality: str) -> Decimal | None:
    """One image of ``size`` at ``quality`` from a 200-character prompt."""
    request = ImageRequest(prompt=TYPICAL_PROMPT, model=spec.name, size=size, quality=quality)
    return estimate_cost(prepare_request(request, spec))


def model_table(spec: ModelSpec) -> list[str]:
    sizes = [size for size in spec.sizes if size != "auto"]
    qualities = [quality for quality in spec.qualities if quality != "auto"]
    lines = [
        f"| `{spec.name}`: {describe_price(spec)} | " + " | ".join(sizes) + " |",
        "|---|" + "---|" * len(sizes),
    ]
    for quality in qualities:
        cells = []
        for size in sizes:
            cost = typical_cost(spec, size, quality)
            cells.append("-" if cost is None else f"${cost.quantize(Decimal('0.001'))}")
        lines.append(f"| {quality} | " + " | ".join(cells) + " |")
    return lines


def markdown(catalog: Mapping[str, ModelSpec]) -> str:
    """Every priced model's table, between the page's markers."""
    parts = [START, ""]
    for spec in catalog.values():
        if spec.price is not None:
            parts += [*model_table(spec), ""]
    parts.append(END)
    return "\n".join(parts)


if __name__ == "__main__":
    print(markdown(load_catalog()))
