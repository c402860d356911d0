"""What a request costs, in US dollars, from the dated prices beside the model catalog.

Before a call the cost is estimated from the request, never below what it can cost (quality
``auto`` and size ``auto`` count as the dearest the model offers); after it, it is settled from the
response's ``usage`` where the model is priced per token and the response says, else from the
estimate for the images delivered. A model without a price costs None: not known, never guessed.

The estimate is what a request reserves against the budgets, so it must be a bound. Decision: a
prompt counts as many text tokens as it has UTF-8 bytes. Every token of a byte-level BPE tokenizer
(``o200k_base``, which the GPT image models read prompts with, and any other a gateway may use)
covers at least one byte of the text, so no prompt in any script takes more; one text token per
four characters, as before, let a Chinese prompt (about a token a character) cost twice its
reservation, and eight at once overspend a budget. Counting with the real tokenizer instead was
measured and refused: bpe-openai (the one that ships ``o200k_base`` and works offline) added
135 MB to the process and half a second to start-up, and held the GIL for up to 5 ms a
32,000-character count, so that a thread would not have spared the event loop; tiktoken downloads
its table at first use. The bound takes microseconds. It reserves about 3 times the text tokens
of Chinese and 4 to 5 times those of English: at gpt-image-1's $5 per million, at most 3 cents
for a 6,000-character English prompt (Discord's longest) and 9 for a Chinese one, until the
settled cost, from the tokens the answer reports, frees the rest.

A cost from ``usage`` is not believed below what the answer must have cost: the image output
tokens the model spends on each image delivered at that size and quality (the fewest for
``auto``), and on each preview the stream carried; a service reporting no tokens would otherwise
make every image free. Nor above ten times the estimate (a broken or hostile gateway must not
empty a budget). Either way the estimate for the images delivered stands. Decision: not the
least, below it: for quality ``auto`` (gpt-image-1's default) the least is a low-quality image's,
a fifteenth of a high one's, and leaves the prompt and an edit's input images out, so that a
service reporting nothing let a member's $0.50 buy 18 images where it buys 2. Either
disagreement is logged, one line, without the prompt or any id.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from .catalog import ModelSpec, Price, parse_size, table_key
from .request import MAX_PARTIAL_IMAGES, PreparedRequest

log = logging.getLogger(__name__)

SIX_PLACES = Decimal("0.000001")
MILLION = Decimal(1_000_000)
# Output tokens of sizes missing from a model's table are estimated by area from this one.
REFERENCE_SIZE = "1024x1024"
_REFERENCE_PIXELS = 1024 * 1024
# The most image input tokens one input image of an edit (or its mask) is counted for: OpenAI
# bills an input image as 65 tokens plus 129 per 512-pixel tile after scaling it to fit 2048 a
# side and 768 on its short side (at most 8 tiles: 1,097), and high input fidelity adds up to
# 6,240 for a 1536x1024 image. Rounded up, so that the estimate stays a bound; the settled cost
# follows the tokens the answer reports.
INPUT_IMAGE_TOKENS_BOUND = 7_500
# Each partial image a stream sends is billed as this many more image output tokens (OpenAI's
# image generation guide, "Streaming"), for each image of the request.
PARTIAL_IMAGE_OUTPUT_TOKENS = 100
# A settled cost from `usage` above this many times the estimate is not believed.
UNBELIEVABLE_USAGE = 10
# The most one request may be estimated at by the catalog's prices (checked at start-up, see
# dearest_request): the ledger's money columns hold under $100,000,000 (Numeric(14, 6)), and a
# settled cost may be believed up to UNBELIEVABLE_USAGE times the estimate. The dearest request
# of a shipped model costs a few dollars.
MAX_REQUEST_COST = Decimal(10_000)


def _usd(amount: Decimal) -> Decimal:
    return amount.quantize(SIX_PLACES, rounding=ROUND_HALF_UP)


UTF8_MOST_BYTES = 4  # of one character: the most text tokens prompt_tokens counts it for


def prompt_tokens(prompt: str) -> int:
    """The most text input tokens ``prompt`` can take: its UTF-8 bytes (no token of a byte-level
    BPE tokenizer is shorter than a byte). A lone surrogate counts the 3 bytes of the character
    that replaces it."""
    return len(prompt.encode("utf-8", "surrogatepass"))


def _qualities(spec: ModelSpec, quality: str) -> list[str]:
    """``quality``, or for ``auto`` every quality the model could choose."""
    if quality != "auto":
        return [quality]
    return [name for name in spec.qualities if name != "auto"]


def _sizes(spec: ModelSpec, table: Mapping[str, Any], quality: str, size: str) -> list[str]:
    """``size``, or for ``auto`` every size the model lists or the table gives at ``quality``."""
    if size != "auto":
        return [size]
    listed = [name for name in spec.sizes if name != "auto"]
    tabled = [key.partition(":")[2] for key in table if key.partition(":")[0] == quality]
    return listed + tabled


def _output_token_counts(spec: ModelSpec, quality: str, size: str, *, up: bool) -> list[int]:
    """The image output tokens of one image at each quality and size ``quality`` and ``size``
    may be. Sizes missing from the model's ``output_tokens`` are estimated by their area relative
    to 1024x1024 at the same quality, rounded ``up`` (else down)."""
    table = spec.output_tokens or {}
    counts = []
    for name in _qualities(spec, quality):
        for dims in _sizes(spec, table, name, size):
            key = table_key(name, dims)
            if key in table:
                counts.append(table[key])
                continue
            width, height = parse_size(dims) or (1024, 1024)
            scaled = table[table_key(name, REFERENCE_SIZE)] * width * height
            counts.append(-(-scaled // _REFERENCE_PIXELS) if up else scaled // _REFERENCE_PIXELS)
    return counts


def output_tokens_per_image(spec: ModelSpec, quality: str, size: str) -> int:
    """The image output tokens one image is estimated to take (the most it may for ``auto``)."""
    return max(_output_token_counts(spec, quality, size, up=True))


def least_output_tokens_per_image(spec: ModelSpec, quality: str, size: str) -> int:
    """The image output tokens one image takes at least (the fewest it may for ``auto``)."""
    return min(_output_token_counts(spec, quality, size, up=False))


def _price_per_image(
    spec: ModelSpec, per_image: Mapping[str, Decimal], quality: str, size: str
) -> Decimal:
    qualities = _qualities(spec, quality)
    sizes = _sizes(spec, per_image, quality, size)
    amounts = [
        per_image[table_key(q, s)] for q in qualities for s in sizes if table_key(q, s) in per_image
    ]
    # Nothing matches only for a size the catalog does not list: the dearest image then.
    return max(amounts) if amounts else max(per_image.values())


def _rates(price: Price) -> tuple[Decimal, Decimal, Decimal]:
    """Dollars per token: text input, image input, image output."""
    rates = (
        price.text_input_per_million,
        price.image_input_per_million,
        price.image_output_per_million,
    )
    text, image, output = (rate if rate is not None else Decimal(0) for rate in rates)
    return text / MILLION, image / MILLION, output / MILLION


def _token_estimate(prepared: PreparedRequest, price: Price, images: int) -> Decimal:
    text_rate, image_rate, output_rate = _rates(price)
    per_image = output_tokens_per_image(prepared.spec, prepared.quality, prepared.size)
    per_image += PARTIAL_IMAGE_OUTPUT_TOKENS * prepared.partial_images
    inputs = len(prepared.inputs) + (prepared.mask is not None)
    return (
        text_rate * prompt_tokens(prepared.prompt)
        + image_rate * INPUT_IMAGE_TOKENS_BOUND * inputs
        + output_rate * per_image * images
    )


def _least_cost(prepared: PreparedRequest, price: Price, images: int, previews: int) -> Decimal:
    """What ``images`` images of ``prepared`` cost at least: their image output tokens, and those
    of the ``previews`` the stream carried (no more than it asked for)."""
    _, _, output_rate = _rates(price)
    per_image = least_output_tokens_per_image(prepared.spec, prepared.quality, prepared.size)
    previews = min(max(previews, 0), prepared.partial_images * images)
    return _usd(output_rate * (per_image * images + PARTIAL_IMAGE_OUTPUT_TOKENS * previews))


def estimate_cost(prepared: PreparedRequest) -> Decimal | None:
    """What ``prepared`` will cost at most, in US dollars (6 places); None when it has no price."""
    price = prepared.spec.price
    if price is None:
        return None
    if price.per_image is not None:
        unit = _price_per_image(prepared.spec, price.per_image, prepared.quality, prepared.size)
        return _usd(unit * prepared.count)
    return _usd(_token_estimate(prepared, price, prepared.count))


def dearest_request(spec: ModelSpec) -> Decimal | None:
    """A bound on what one request to ``spec`` can be estimated at (None: it has no price): the
    most images, each at the dearest quality and size (a free size at its most pixels) with every
    preview, the longest prompt, and for an edit the most input images and a mask. Not rounded:
    an operator's mistyped price may make it too large to round to six places."""
    price = spec.price
    if price is None:
        return None
    if price.per_image is not None:
        return max(price.per_image.values()) * spec.max_count
    text_rate, image_rate, output_rate = _rates(price)
    table = spec.output_tokens or {}
    areas = [width * height for width, height in filter(None, map(parse_size, spec.sizes))]
    if spec.free_size is not None:
        areas.append(spec.free_size.max_pixels)
    references = [count for key, count in table.items() if key.endswith(f":{REFERENCE_SIZE}")]
    by_area = -(-max(references, default=0) * max(areas, default=0) // _REFERENCE_PIXELS)
    per_image = max(max(table.values(), default=0), by_area)
    per_image += PARTIAL_IMAGE_OUTPUT_TOKENS * MAX_PARTIAL_IMAGES
    inputs = spec.max_input_images + spec.mask if spec.edits else 0
    return (
        text_rate * UTF8_MOST_BYTES * spec.max_prompt_chars  # as prompt_tokens counts them
        + image_rate * INPUT_IMAGE_TOKENS_BOUND * inputs
        + output_rate * per_image * spec.max_count
    )


def token_count(value: Any) -> int | None:
    """A token count from the image service's ``usage``, which is not trusted: anything but a
    whole number of zero or more that an answer could have (under 2**31) is no count."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**31:
        return None
    return value


def _reported_cost(
    prepared: PreparedRequest, price: Price, usage: Mapping[str, Any]
) -> Decimal | None:
    """What ``usage`` says the request cost, or None where it gives no usable counts."""
    output = token_count(usage.get("output_tokens"))
    if output is None:
        return None
    text_rate, image_rate, output_rate = _rates(price)
    details = usage.get("input_tokens_details")
    if isinstance(details, Mapping):
        text, image = (
            token_count(details.get("text_tokens")),
            token_count(details.get("image_tokens")),
        )
        if text is not None and image is not None:
            return _usd(text * text_rate + image * image_rate + output * output_rate)
    total = token_count(usage.get("input_tokens"))
    if total is None:
        return None
    # Without the split, the input of a generation is its prompt: text. An edit's is images and
    # text in unknown shares: all of it at the dearer rate, so that leaving the split out never
    # makes an edit cheaper.
    input_rate = max(text_rate, image_rate) if prepared.is_edit else text_rate
    return _usd(total * input_rate + output * output_rate)


def settle_cost(
    prepared: PreparedRequest, usage: Mapping[str, Any] | None, images: int, *, previews: int = 0
) -> Decimal | None:
    """What ``prepared`` cost once ``images`` came back, in US dollars (6 places), or None.

    Per-image prices: the price of one times the images delivered. Per-token prices: from
    ``usage`` when the response gives it and it is believable (not below the image output tokens
    of the images and the ``previews`` (partial images) the answer carried, nor above ten times
    the estimate), else the estimate for the images delivered (the prompt counted once).
    """
    price = prepared.spec.price
    if price is None:
        return None
    images = max(images, 0)
    if price.per_image is not None:
        unit = _price_per_image(prepared.spec, price.per_image, prepared.quality, prepared.size)
        return _usd(unit * images)
    estimate = _usd(_token_estimate(prepared, price, images))
    reported = _reported_cost(prepared, price, usage) if isinstance(usage, Mapping) else None
    if reported is None:
        return estimate
    least = _least_cost(prepared, price, images, previews)
    if reported < least:
        # A service that reports no tokens (or too few) must not make images free, nor cheap:
        # the least is that of the cheapest quality ``auto`` may be (272 output tokens to high's
        # 4,160) and leaves out the prompt and an edit's input images. Usage that cannot be true
        # says nothing of what was spent: the estimate, which errs high, stands instead.
        log.warning(
            "the image service reported usage costing %s for %d image(s) of %s, under the %s "
            "they cost at least at that size and quality: the estimate %s is recorded",
            format_usd(reported),
            images,
            prepared.model,
            format_usd(least),
            format_usd(estimate),
        )
        return estimate
    if reported > estimate * UNBELIEVABLE_USAGE:
        # A gateway's broken (or hostile) usage must not empty every budget: the estimate,
        # which already errs high, stands instead.
        log.warning(
            "the image service reported usage costing %s, over %d times the estimate %s: "
            "the estimate is recorded",
            format_usd(reported),
            UNBELIEVABLE_USAGE,
            format_usd(estimate),
        )
        return estimate
    return reported


def format_usd(amount: Decimal) -> str:
    """``$0.04``, ``$0.016``, ``$40.00``: cents always, more places only where they count."""
    if amount == amount.quantize(Decimal("0.01")):
        return f"${amount:.2f}"
    return f"${amount.normalize():f}"


def describe_price(spec: ModelSpec) -> str:
    """One line on what ``spec`` costs, e.g. ``$0.04 to $0.12 an image (prices of 2023-11-06)``."""
    price = spec.price
    if price is None:
        return "no price known"
    dated = f"(prices of {price.as_of})"
    if price.per_image is not None:
        low, high = min(price.per_image.values()), max(price.per_image.values())
        amount = format_usd(low) if low == high else f"{format_usd(low)} to {format_usd(high)}"
        return f"{amount} an image by size and quality {dated}"
    text, image, output = (
        format_usd(rate or Decimal(0))
        for rate in (
            price.text_input_per_million,
            price.image_input_per_million,
            price.image_output_per_million,
        )
    )
    return f"{text} text input, {image} image input, {output} image output per 1M tokens {dated}"
