"""Cost from the dated prices beside the catalog: estimates before a call, settlement after."""

from __future__ import annotations

import datetime as dt
import io
import logging
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from bot.images import (
    CatalogError,
    EditRequest,
    ImageRequest,
    PreparedRequest,
    load_catalog,
    prepare_request,
)
from bot.images.catalog import Catalog
from bot.images.edits import prepare_edit
from bot.images.pricing import (
    describe_price,
    estimate_cost,
    format_usd,
    output_tokens_per_image,
    prompt_tokens,
    settle_cost,
)
from tests.fakes.tokens import LONG_PROMPTS, o200k_tokens, prompt_of

CATALOG = load_catalog()
CENT = Decimal("0.01")
UNPRICED = (
    "gpt-image-2.5-flare",
    "gpt-image-2.6-flare",
    "gpt-image-2",
    "gpt-image-1.5",
    "chatgpt-image-latest",
)


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64)).save(buffer, format="PNG")
    return buffer.getvalue()


PNG = _png()


def prepared(model: str, catalog: Catalog = CATALOG, **fields: Any) -> PreparedRequest:
    fields.setdefault("prompt", "a cat")
    return prepare_request(ImageRequest(model=model, **fields), catalog[model])


def usage(text: int, output: int, image: int = 0) -> dict[str, Any]:
    return {
        "input_tokens": text + image,
        "input_tokens_details": {"text_tokens": text, "image_tokens": image},
        "output_tokens": output,
        "total_tokens": text + image + output,
    }


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "models.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("quality", "size", "published"),
    [
        ("low", "1024x1024", "0.011"),
        ("medium", "1024x1024", "0.042"),
        ("high", "1024x1024", "0.167"),
        ("high", "1024x1536", "0.25"),
        ("high", "1536x1024", "0.25"),
    ],
)
def test_gpt_image_1_matches_the_published_examples(
    quality: str, size: str, published: str
) -> None:
    request = prepared("gpt-image-1", quality=quality, size=size)
    estimate = estimate_cost(request)
    assert estimate is not None
    assert estimate.quantize(CENT) == Decimal(published).quantize(CENT)
    out = output_tokens_per_image(request.spec, quality, size)
    settled = settle_cost(request, usage(prompt_tokens(request.prompt), out), 1)
    assert settled is not None and settled.quantize(CENT) == Decimal(published).quantize(CENT)


@pytest.mark.parametrize(
    ("model", "quality", "size", "published"),
    [
        ("dall-e-3", "standard", "1024x1024", "0.04"),
        ("dall-e-3", "standard", "1792x1024", "0.08"),
        ("dall-e-3", "hd", "1024x1024", "0.08"),
        ("dall-e-3", "hd", "1024x1792", "0.12"),
        ("dall-e-2", "standard", "256x256", "0.016"),
        ("dall-e-2", "standard", "512x512", "0.018"),
        ("dall-e-2", "standard", "1024x1024", "0.02"),
    ],
)
def test_dall_e_costs_its_price_per_image(
    model: str, quality: str, size: str, published: str
) -> None:
    request = prepared(model, quality=quality, size=size)
    assert estimate_cost(request) == Decimal(published)
    assert settle_cost(request, None, 1) == Decimal(published)


def test_gpt_image_1_mini_matches_its_published_examples() -> None:
    costs = {
        quality: estimate_cost(prepared("gpt-image-1-mini", quality=quality, size="1024x1024"))
        for quality in ("low", "medium", "high")
    }
    assert {q: c.quantize(Decimal("0.001")) for q, c in costs.items() if c} == {
        "low": Decimal("0.005"),
        "medium": Decimal("0.011"),
        "high": Decimal("0.036"),
    }


def test_money_is_decimal_to_six_places() -> None:
    estimate = estimate_cost(prepared("gpt-image-1", quality="low", size="1024x1024"))
    assert isinstance(estimate, Decimal)
    assert estimate == Decimal("0.010905")  # 5 prompt bytes at $5/1M + 272 at $40/1M
    assert estimate.as_tuple().exponent == -6


@pytest.mark.parametrize("model", ["gpt-image-1", "gpt-image-1-mini"])
@pytest.mark.parametrize("quality", ["auto", "low", "medium", "high"])
@pytest.mark.parametrize("size", ["auto", "1024x1024", "1024x1536", "1536x1024"])
@pytest.mark.parametrize("count", [1, 3])
def test_the_estimate_never_under_runs_the_settled_cost(
    model: str, quality: str, size: str, count: int
) -> None:
    request = prepared(model, quality=quality, size=size, count=count, prompt="x" * 401)
    estimate = estimate_cost(request)
    assert estimate is not None
    spec = request.spec
    for actual_quality in [quality] if quality != "auto" else ["low", "medium", "high"]:
        for actual_size in [size] if size != "auto" else ["1024x1024", "1024x1536", "1536x1024"]:
            per_image = output_tokens_per_image(spec, actual_quality, actual_size)
            reported = usage(prompt_tokens(request.prompt), per_image * count)
            settled = settle_cost(request, reported, count)
            assert settled is not None and settled <= estimate
    assert settle_cost(request, None, count) == estimate


def test_auto_quality_is_estimated_as_the_dearest() -> None:
    auto = estimate_cost(prepared("gpt-image-1", quality="auto", size="1024x1024"))
    high = estimate_cost(prepared("gpt-image-1", quality="high", size="1024x1024"))
    assert auto == high
    assert output_tokens_per_image(CATALOG["gpt-image-1"], "auto", "auto") == 6240


def test_free_sizes_are_estimated_by_area(tmp_path: Path) -> None:
    catalog = load_catalog(
        write(
            tmp_path,
            """
[models."gpt-image-2"]
output_tokens = { "low:1024x1024" = 100, "medium:1024x1024" = 400, "high:1024x1024" = 1000 }

[models."gpt-image-2".price]
as_of = 2026-01-01
text_input_per_million = 1
image_input_per_million = 1
image_output_per_million = 10
""",
        )
    )
    spec = catalog["gpt-image-2"]
    assert output_tokens_per_image(spec, "low", "2048x2048") == 400
    assert output_tokens_per_image(spec, "medium", "1024x512") == 200
    assert output_tokens_per_image(spec, "low", "1000x1000") == 96  # 95.4 rounded up
    # auto size: the largest size it lists (3840x2160), at the dearest quality
    assert output_tokens_per_image(spec, "auto", "auto") == -(-1000 * 3840 * 2160 // 1024**2)


def test_settled_from_usage_when_present() -> None:
    request = prepared("gpt-image-1", quality="high", count=2)
    reported = usage(text=10, image=100, output=9000)
    # 10 * $5 + 100 * $10 + 9000 * $40 per 1M
    assert settle_cost(request, reported, 2) == Decimal("0.361050")


def test_usage_without_the_input_split_counts_input_as_text() -> None:
    request = prepared("gpt-image-1", quality="low")
    reported = {"input_tokens": 20, "output_tokens": 272}
    assert settle_cost(request, reported, 1) == Decimal("0.010980")


@pytest.mark.parametrize(
    "reported",
    [None, {}, {"output_tokens": "272"}, {"output_tokens": True}, {"output_tokens": -1}],
)
def test_unusable_usage_leaves_the_estimate_for_the_images_delivered(reported: Any) -> None:
    request = prepared("gpt-image-1", quality="medium", count=4)
    one = prepared("gpt-image-1", quality="medium", count=1)
    assert settle_cost(request, reported, 1) == estimate_cost(one)
    assert settle_cost(request, reported, 4) == estimate_cost(request)


def test_per_image_settles_for_the_images_delivered() -> None:
    request = prepared("dall-e-2", size="512x512", count=5)
    assert estimate_cost(request) == Decimal("0.090000")
    assert settle_cost(request, None, 3) == Decimal("0.054000")
    assert settle_cost(request, None, 0) == Decimal(0)


@pytest.mark.parametrize("model", UNPRICED)
def test_models_without_a_price_cost_none(model: str) -> None:
    request = prepared(model)
    assert CATALOG[model].price is None
    assert estimate_cost(request) is None
    assert settle_cost(request, usage(10, 1000), 1) is None
    assert describe_price(CATALOG[model]) == "no price known"


def test_prices_are_dated() -> None:
    assert CATALOG["gpt-image-1"].price is not None
    assert CATALOG["gpt-image-1"].price.as_of == dt.date(2025, 4, 23)
    assert describe_price(CATALOG["gpt-image-1"]) == (
        "$5.00 text input, $10.00 image input, $40.00 image output per 1M tokens "
        "(prices of 2025-04-23)"
    )
    assert describe_price(CATALOG["dall-e-2"]) == (
        "$0.016 to $0.02 an image by size and quality (prices of 2023-11-06)"
    )


def test_a_per_image_table_missing_a_size_is_refused(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[models."dall-e-3".price]
as_of = 2024-01-01

[models."dall-e-3".price.per_image]
"standard:1024x1024" = 0.04
"standard:1792x1024" = 0.08
"standard:1024x1792" = 0.08
"hd:1024x1024" = 0.08
"hd:1792x1024" = 0.12
""",
    )
    with pytest.raises(CatalogError, match=r"models\.dall-e-3: .*per_image.*'hd:1024x1792'"):
        load_catalog(path)


@pytest.mark.parametrize(
    ("price", "why"),
    [
        ('{ as_of = 2024-01-01, per_image = { "standard:256x256" = -0.01 } }', "price"),
        ('{ per_image = { "standard:1024x1024" = 0.02 } }', "as_of"),
        ('{ as_of = 2024-01-01, per_image = { "standrd:1024x1024" = 0.02 } }', "standrd"),
        ('{ as_of = 2024-01-01, per_image = { "standard:1024x1024" = "lots" } }', "price"),
        ("{ as_of = 2024-01-01, text_input_per_million = 1 }", "image_output_per_million"),
    ],
)
def test_a_bad_price_names_the_field(tmp_path: Path, price: str, why: str) -> None:
    path = write(tmp_path, f'[models."dall-e-2"]\nprice = {price}\n')
    with pytest.raises(CatalogError, match=rf"models\.dall-e-2: .*{why}"):
        load_catalog(path)


def test_a_token_price_needs_output_tokens(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[models."gpt-image-1.5"]

[models."gpt-image-1.5".price]
as_of = 2026-01-01
text_input_per_million = 5
image_input_per_million = 8
image_output_per_million = 32
""",
    )
    with pytest.raises(CatalogError, match=r"gpt-image-1\.5: output_tokens: .*'low:1024x1024'"):
        load_catalog(path)


def test_the_operator_adds_and_overrides_prices(tmp_path: Path) -> None:
    catalog = load_catalog(
        write(
            tmp_path,
            """
[models."gpt-image-1.5"]
output_tokens = { "low:1024x1024" = 200, "medium:1024x1024" = 800, "high:1024x1024" = 3000 }

[models."gpt-image-1.5".price]
as_of = 2026-01-01
text_input_per_million = 5
image_input_per_million = 8
image_output_per_million = "32.50"

[models."dall-e-3".price]
as_of = 2026-02-01

[models."dall-e-3".price.per_image]
"standard:1024x1024" = 0.01
"standard:1792x1024" = 0.02
"standard:1024x1792" = 0.02
"hd:1024x1024" = 0.03
"hd:1792x1024" = 0.04
"hd:1024x1792" = 0.04

[models."gpt-image-1"]
default_quality = "low"
""",
        )
    )
    added = estimate_cost(prepared("gpt-image-1.5", catalog, quality="high", prompt="abcd"))
    assert added == Decimal("0.097520")  # 4 bytes * $5 + 3000 * $32.50 per 1M
    assert estimate_cost(prepared("dall-e-3", catalog, quality="hd")) == Decimal("0.03")
    assert catalog["dall-e-3"].price is not None
    assert catalog["dall-e-3"].price.as_of == dt.date(2026, 2, 1)
    # An override of other fields keeps the model's price.
    assert catalog["gpt-image-1"].price == CATALOG["gpt-image-1"].price


def test_a_price_is_not_inherited_from_a_base(tmp_path: Path) -> None:
    catalog = load_catalog(
        write(
            tmp_path,
            """
[models."my-gateway-image"]
base = "gpt-image-1"

[models."my-priced-image"]
base = "dall-e-2"

[models."my-priced-image".price]
as_of = 2026-03-01
per_image = { "standard:256x256" = 0, "standard:512x512" = 0, "standard:1024x1024" = 0.001 }

[models."gpt-image-1-mini"]
price = false
""",
        )
    )
    assert catalog["my-gateway-image"].price is None
    assert estimate_cost(prepared("my-gateway-image", catalog)) is None
    assert estimate_cost(prepared("my-priced-image", catalog)) == Decimal("0.001")
    assert catalog["gpt-image-1-mini"].price is None


def test_shipped_models_name_their_own_prices() -> None:
    priced = {name for name, spec in CATALOG.items() if spec.price is not None}
    assert priced == {"gpt-image-1", "gpt-image-1-mini", "dall-e-3", "dall-e-2"}


def test_specs_stay_hashable() -> None:
    assert len({CATALOG["gpt-image-1"], CATALOG["dall-e-3"]}) == 2


@pytest.mark.parametrize("output", [10**13, 2**31 - 1])
def test_usage_no_answer_could_have_is_not_believed(output: int) -> None:
    request = prepared("gpt-image-1", quality="low")
    estimate = settle_cost(request, None, 1)
    assert estimate is not None
    # Out of range (10**13 would be $400 million), or in range but far above the estimate:
    # the estimate, which errs high already, is what is recorded.
    assert settle_cost(request, usage(text=20, output=output), 1) == estimate


# -- a prompt's tokens, in any script -----------------------------------------------------------

# Scripts by their code points (the last: anything, lone surrogates too); a text is drawn from
# one of them, or from several mixed.
SCRIPTS = [
    (0x4E00, 0x9FFF),  # Chinese
    (0x0400, 0x04FF),  # Cyrillic
    (0x0600, 0x06FF),  # Arabic
    (0x0900, 0x097F),  # Devanagari
    (0x1F300, 0x1FAFF),  # emoji
    (0, 0x10FFFF),
]
_SCRIPT_CHARACTERS = [
    st.characters(min_codepoint=low, max_codepoint=high, exclude_categories=())
    for low, high in SCRIPTS
]
any_script_text = st.one_of(
    [st.text(), st.text(st.one_of(_SCRIPT_CHARACTERS), max_size=2000)]
    + [st.text(characters, max_size=2000) for characters in _SCRIPT_CHARACTERS]
)


@given(any_script_text)
@settings(max_examples=500, deadline=None)
def test_no_prompt_in_any_script_takes_more_tokens_than_it_is_counted(text: str) -> None:
    assert prompt_tokens(text) >= o200k_tokens(text)


@pytest.mark.parametrize("script", LONG_PROMPTS)
@pytest.mark.parametrize("model", ["gpt-image-1", "gpt-image-1-mini"])
def test_a_long_prompt_in_any_script_costs_no_more_than_it_reserved(
    script: str, model: str
) -> None:
    prompt = prompt_of(script)
    request = prepared(model, quality="low", size="1024x1024", prompt=prompt)
    per_image = output_tokens_per_image(request.spec, "low", "1024x1024")
    cost = settle_cost(request, usage(o200k_tokens(prompt), per_image), 1)
    estimate = estimate_cost(request)
    assert cost is not None and estimate is not None
    assert cost <= estimate


# -- usage below what the images cost at least is not believed ----------------------------------


@pytest.mark.parametrize(
    ("quality", "size", "least", "estimate"),
    [
        # 2 * 272 output tokens at $40/1M; the estimate adds the prompt's 5 bytes at $5/1M
        ("low", "1024x1024", "0.021760", "0.021785"),
        ("high", "1536x1024", "0.496640", "0.496665"),  # 2 * 6208
        # The least is low 1024x1024's, the fewest auto may take; the estimate is the dearest
        # auto may be, high 1024x1536 (2 * 6240), which is what stands.
        ("auto", "auto", "0.021760", "0.499225"),
    ],
)
def test_usage_of_no_tokens_is_not_believed_and_the_estimate_stands(
    quality: str, size: str, least: str, estimate: str, caplog: pytest.LogCaptureFixture
) -> None:
    request = prepared("gpt-image-1", quality=quality, size=size, count=2)
    assert estimate_cost(request) == Decimal(estimate)
    with caplog.at_level(logging.WARNING, logger="bot.images.pricing"):
        assert settle_cost(request, usage(text=0, output=0), 2) == Decimal(estimate)
    (line,) = [r for r in caplog.records if r.name == "bot.images.pricing"]
    assert line.levelno == logging.WARNING
    assert line.getMessage() == (
        f"the image service reported usage costing $0.00 for 2 image(s) of gpt-image-1, under "
        f"the {format_usd(Decimal(least))} they cost at least at that size and quality: the "
        f"estimate {format_usd(Decimal(estimate))} is recorded"
    )
    assert "a cat" not in line.getMessage()


def test_usage_at_or_above_the_least_is_believed_and_nothing_is_said(
    caplog: pytest.LogCaptureFixture,
) -> None:
    request = prepared("gpt-image-1", quality="low", size="1024x1024", count=2)
    with caplog.at_level(logging.WARNING, logger="bot.images.pricing"):
        assert settle_cost(request, usage(text=0, output=544), 2) == Decimal("0.021760")
        assert settle_cost(request, usage(text=3, output=600), 2) == Decimal("0.024015")
        # Fewer images delivered than asked for: the least is theirs alone.
        assert settle_cost(request, usage(text=3, output=272), 1) == Decimal("0.010895")
        assert settle_cost(request, usage(text=3, output=0), 0) == Decimal("0.000015")
        # quality auto: an honest service that chose low is believed.
        auto = prepared("gpt-image-1", quality="auto", size="1024x1024", count=2)
        assert settle_cost(auto, usage(text=3, output=544), 2) == Decimal("0.021775")
    assert caplog.records == []


@pytest.mark.parametrize(
    ("previews", "settled"),
    [
        (0, "0.021775"),  # the 544 tokens of the two images: believed
        (2, "0.037785"),  # two previews carried: 200 more tokens at least, so the estimate
        (9, "0.037785"),
    ],
)
def test_the_previews_a_stream_carried_count_in_what_it_costs_at_least(
    previews: int, settled: str
) -> None:
    # Two images with two previews each asked for: each preview carried is 100 output tokens
    # more, so that usage of the images' tokens alone is below the least once previews came.
    request = prepared("gpt-image-1", quality="low", size="1024x1024", count=2, partial_images=2)
    assert settle_cost(request, usage(3, 544), 2, previews=previews) == Decimal(settled)


def test_an_edit_whose_usage_does_not_split_its_input_counts_it_at_the_dearer_rate() -> None:
    request = prepare_edit(
        EditRequest(ImageRequest(prompt="add a hat", model="gpt-image-1", quality="low"), (PNG,)),
        CATALOG["gpt-image-1"],
    )
    reported = {"input_tokens": 1000, "output_tokens": 272}
    # 1000 input tokens at the image rate ($10/1M, not $5) + 272 at $40/1M
    assert settle_cost(request, reported, 1) == Decimal("0.020880")
