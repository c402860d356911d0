"""The model catalog: which model takes which sizes, qualities, counts, prompts and options.

The catalog is data (``models.toml`` beside this file, plus an operator's file of the same shape);
adding a model never needs a code change.
"""

from __future__ import annotations

import datetime as dt
import re
import tomllib
from collections.abc import Iterator, Mapping
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

from bot.i18n import _

Family = Literal["gpt-image", "dall-e"]
Status = Literal["live", "shut-down"]
InputFormat = Literal["png", "jpeg", "webp"]

# Every optional request field a member may set, with the values it takes (None: a number,
# checked where the request is built). `output_format` is narrowed per model by `output_formats`.
OPTION_VALUES: Mapping[str, tuple[str, ...] | None] = {
    "output_format": ("png", "jpeg", "webp", "gif", "svg"),
    "output_compression": None,
    "background": ("transparent", "opaque", "auto"),
    "moderation": ("low", "auto"),
    "complexity": ("low", "medium", "high"),
    "style": ("vivid", "natural"),
}

# The sentences a member reads when a size or model does not fit (the engine's only words).
LIVE = _("live")
SHUT_DOWN_ON = _("shut down on OpenAI on {day}")
TAKES_SIZES = _("{model} takes the sizes {sizes}")
TAKES_SIZES_OR = _("{model} takes {sizes}, or {free}")
DOES_NOT_FIT = _("{size} does not fit {model}: {why}")
FREE_SIZE = _(
    "any WxH with sides multiples of {multiple}, up to {edge} pixels a side and {pixels} in all, "
    "aspect within 1:{ratio}"
)
SIDE_AT_LEAST = _("each side must be at least {n} pixels")
SIDES_MULTIPLES = _("both sides must be multiples of {n}")
NO_SIDE_OVER = _("no side may exceed {n} pixels")
PIXELS_AT_MOST = _("at most {n} pixels in all")
RATIO_WITHIN = _("the aspect ratio must be within 1:{ratio}")

# Discord refuses a choice whose name or value is longer than this; every name we offer is one.
MAX_NAME_CHARS = 100
# Catalog sizes beyond this are typing mistakes: no model renders anything near it.
MAX_SIDE = 16384

_SIZE = re.compile(r"([0-9]{1,5})x([0-9]{1,5})")  # ASCII digits: \d also takes Arabic-Indic


class CatalogError(ValueError):
    """The catalog file is not valid; the message names the model and the field."""


def parse_size(size: str) -> tuple[int, int] | None:
    """``"1536x1024"`` -> ``(1536, 1024)``; anything else -> None."""
    match = _SIZE.fullmatch(size.strip().lower())
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2))


class FreeSize(BaseModel):
    """Rules for models that accept any ``WxH`` (gpt-image-2)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    multiple_of: int = Field(default=1, ge=1, le=1024)
    max_edge: int = Field(ge=1, le=MAX_SIDE)
    max_pixels: int = Field(ge=1, le=MAX_SIDE * MAX_SIDE)
    max_aspect_ratio: float = Field(default=3.0, ge=1.0)

    def problem(self, width: int, height: int) -> str | None:
        """Why ``width x height`` breaks the rules, or None when it is fine."""
        # Sides are passed as text: a side is a size's part (1536), not a quantity (1,536).
        if min(width, height) < self.multiple_of:
            return SIDE_AT_LEAST.format(n=str(self.multiple_of))
        if width % self.multiple_of or height % self.multiple_of:
            return SIDES_MULTIPLES.format(n=str(self.multiple_of))
        if max(width, height) > self.max_edge:
            return NO_SIDE_OVER.format(n=str(self.max_edge))
        if width * height > self.max_pixels:
            return PIXELS_AT_MOST.format(n=self.max_pixels)
        if max(width, height) / min(width, height) > self.max_aspect_ratio:
            return RATIO_WITHIN.format(ratio=f"{self.max_aspect_ratio:g}")
        return None

    def describe(self) -> str:
        return FREE_SIZE.format(
            multiple=str(self.multiple_of),
            edge=str(self.max_edge),
            pixels=self.max_pixels,
            ratio=f"{self.max_aspect_ratio:g}",
        )


# An amount of US dollars in the catalog: a non-negative finite decimal (a TOML float is read
# through its shortest text, so 0.04 is exactly 0.04), per image or per 1M tokens, at most
# MAX_PRICE: real prices are cents and tens of dollars, and a bound keeps every cost worked out
# from one (tokens an answer reports included) within the ledger's columns.
MAX_PRICE = Decimal(10_000)
Money = Annotated[Decimal, Field(ge=0, le=MAX_PRICE, allow_inf_nan=False)]


def table_key(quality: str, size: str) -> str:
    """The key of a per-image price or an output-token count: ``"medium:1024x1024"``."""
    return f"{quality}:{size}"


class Price(BaseModel):
    """What a model costs, dated: per image by quality and size, or per million tokens."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    as_of: dt.date
    per_image: dict[str, Money] | None = None
    text_input_per_million: Money | None = None
    image_input_per_million: Money | None = None
    image_output_per_million: Money | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Price:
        rates = {
            "text_input_per_million": self.text_input_per_million,
            "image_input_per_million": self.image_input_per_million,
            "image_output_per_million": self.image_output_per_million,
        }
        given = [name for name, value in rates.items() if value is not None]
        if self.per_image is not None:
            if given:
                raise ValueError(f"a per_image price takes no token rates (it has {given})")
            if not self.per_image:
                raise ValueError("per_image is empty")
            return self
        missing = [name for name in rates if name not in given]
        if missing:
            raise ValueError(
                f"give either per_image or all three token rates (missing {', '.join(missing)})"
            )
        return self

    @property
    def per_token(self) -> bool:
        return self.per_image is None


class ModelSpec(BaseModel):
    """What one model accepts."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=MAX_NAME_CHARS)
    family: Family
    status: Status = "live"
    shut_down_on: dt.date | None = None
    sizes: tuple[str, ...] = Field(min_length=1)
    free_size: FreeSize | None = None
    qualities: tuple[Annotated[str, Field(min_length=1, max_length=MAX_NAME_CHARS)], ...] = Field(
        min_length=1
    )
    # Strict numbers and flags: "3" for a count is a mistake in the file, not a value to guess.
    max_count: StrictInt = Field(ge=1, le=10)
    max_prompt_chars: StrictInt = Field(ge=1)
    options: frozenset[str] = frozenset()
    output_formats: tuple[str, ...] = ("png",)
    streaming: StrictBool = False
    safety_identifier: StrictBool = False
    # POST /images/edits: whether it edits, how many input images it takes (`image[]`), whether
    # it takes a `mask`, the input formats and largest input file, whether inputs must be
    # square (dall-e-2), and the `input_fidelity` values it takes (none: the field is omitted).
    edits: StrictBool = False
    max_input_images: StrictInt = Field(default=1, ge=1, le=16)
    mask: StrictBool = False
    input_formats: tuple[InputFormat, ...] = ("png",)
    max_input_mb: float = Field(default=4.0, gt=0, le=512)
    square_input: StrictBool = False
    input_fidelities: tuple[Literal["high", "low"], ...] = ()
    default_size: str
    default_quality: str
    # Image output tokens per image by "quality:WxH" (token-priced models estimate from it).
    output_tokens: dict[str, Annotated[StrictInt, Field(ge=0)]] | None = None
    price: Price | None = None

    def __hash__(self) -> int:
        # The price tables are dicts; a model is known by its name.
        return hash(self.name)

    @field_validator("free_size", "price", "output_tokens", mode="before")
    @classmethod
    def _taken_away(cls, value: Any) -> Any:
        # `free_size = false` (or `price = false`) in TOML takes away what a base model has.
        return None if value is False else value

    @model_validator(mode="after")
    def _consistent(self) -> ModelSpec:
        unknown = sorted(self.options - OPTION_VALUES.keys())
        if unknown:
            raise ValueError(f"unknown options {unknown}; known: {sorted(OPTION_VALUES)}")
        formats = OPTION_VALUES["output_format"] or ()
        strange = [name for name in self.output_formats if name not in formats]
        if strange:
            raise ValueError(f"unknown output formats {strange}; known: {list(formats)}")
        for size in self.sizes:
            if size == "auto":
                continue
            dims = parse_size(size)
            if dims is None:
                raise ValueError(f"size {size!r} is neither 'auto' nor WxH")
            if not all(1 <= side <= MAX_SIDE for side in dims):
                raise ValueError(f"size {size!r} must have sides from 1 to {MAX_SIDE} pixels")
        if self.status == "shut-down" and self.shut_down_on is None:
            raise ValueError("a shut-down model needs shut_down_on, the date")
        if not self.accepts_size(self.default_size):
            raise ValueError(f"default_size {self.default_size!r} is not one of its sizes")
        if self.default_quality not in self.qualities:
            raise ValueError(
                f"default_quality {self.default_quality!r} is not one of its qualities"
            )
        self._check_tables()
        return self

    def _check_tables(self) -> None:
        """Every table key is ``quality:WxH``; a price covers every size and quality offered."""
        priced_qualities = [quality for quality in self.qualities if quality != "auto"]
        per_image = self.price.per_image if self.price is not None else None
        tables: dict[str, Mapping[str, object]] = {
            "output_tokens": self.output_tokens or {},
            "price.per_image": per_image or {},
        }
        for field, table in tables.items():
            for key in table:
                quality, _, size = key.partition(":")
                if quality not in priced_qualities or parse_size(size) is None:
                    raise ValueError(
                        f"{field}: {key!r} is not 'quality:WxH' with one of its qualities "
                        f"({', '.join(priced_qualities)})"
                    )
        if self.price is None:
            return
        if self.price.per_image is not None:
            if self.free_size is not None:
                raise ValueError(
                    "price.per_image cannot cover the free sizes it takes: price it per token"
                )
            sizes = [size for size in self.sizes if size != "auto"]
            for quality in priced_qualities:
                for size in sizes:
                    if table_key(quality, size) not in self.price.per_image:
                        raise ValueError(
                            f"price.per_image: no price for {table_key(quality, size)!r}"
                        )
            return
        for quality in priced_qualities:
            key = table_key(quality, "1024x1024")
            if key not in (self.output_tokens or {}):
                raise ValueError(
                    f"output_tokens: a model priced per token needs {key!r} (the count of "
                    "image output tokens a 1024x1024 image takes at that quality)"
                )

    @property
    def is_gpt_image(self) -> bool:
        return self.family == "gpt-image"

    @property
    def is_live(self) -> bool:
        return self.status == "live"

    def describe_status(self) -> str:
        """``live``, or ``shut down on OpenAI on 2026-10-23``."""
        if self.is_live:
            return LIVE
        return SHUT_DOWN_ON.format(day=str(self.shut_down_on))

    def size_problem(self, size: str) -> str | None:
        """Why ``size`` is not accepted, or None when it is."""
        if size in self.sizes:
            return None
        allowed = ", ".join(self.sizes)
        dims = parse_size(size)
        if self.free_size is None:
            return TAKES_SIZES.format(model=self.name, sizes=allowed)
        if dims is None:
            return TAKES_SIZES_OR.format(
                model=self.name, sizes=allowed, free=self.free_size.describe()
            )
        why = self.free_size.problem(*dims)
        return None if why is None else DOES_NOT_FIT.format(size=size, model=self.name, why=why)

    def accepts_size(self, size: str) -> bool:
        return self.size_problem(size) is None


class Catalog(Mapping[str, ModelSpec]):
    """The models known to the engine, by name, in the order they were declared."""

    def __init__(self, models: Mapping[str, ModelSpec]) -> None:
        self._models = dict(models)

    def __getitem__(self, name: str) -> ModelSpec:
        return self._models[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._models)

    def __len__(self) -> int:
        return len(self._models)


def _merge_entries(
    raw: Mapping[str, Any], known: dict[str, dict[str, Any]], source: str
) -> dict[str, dict[str, Any]]:
    """Resolve ``base = "..."`` and same-name overrides into complete field sets.

    A base may be a shipped model or any model of the same file, above or below; a cycle is
    refused.
    """
    models = raw.get("models")
    if not isinstance(models, dict):
        raise CatalogError(f'{source}: expected tables named [models."<name>"]')
    for name, entry in models.items():
        if not isinstance(entry, dict):
            raise CatalogError(f"{source}: models.{name} must be a table")
        base_name = entry.get("base")
        if base_name is not None and not isinstance(base_name, str):
            raise CatalogError(f"{source}: models.{name}: base must be the name of a model")
    merged = dict(known)
    resolving: list[str] = []

    def resolve(name: str) -> dict[str, Any]:
        if name not in models:
            return merged[name]
        if name in resolving:
            cycle = " -> ".join([*resolving[resolving.index(name) :], name])
            raise CatalogError(f"{source}: models.{name}: its bases go round in a cycle ({cycle})")
        resolving.append(name)
        fields = dict(models[name])
        base_name = fields.pop("base", None)
        if base_name is not None:
            if base_name not in models and base_name not in known:
                raise CatalogError(f"{source}: models.{name} has unknown base {base_name!r}")
            if base_name == name:
                start = known[name]
            else:
                # A price belongs to its model: one made from another names its own, or none.
                start = {key: value for key, value in resolve(base_name).items() if key != "price"}
        else:
            start = known.get(name, {})
        resolving.pop()
        return {**start, **fields, "name": name}

    for name in models:
        merged[name] = resolve(name)
    return merged


def _build(fields_by_name: Mapping[str, dict[str, Any]], source: str) -> Catalog:
    specs: dict[str, ModelSpec] = {}
    for name, fields in fields_by_name.items():
        try:
            specs[name] = ModelSpec.model_validate(fields)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            where = f"{where}: " if where else ""
            why = str(first["msg"]).removeprefix("Value error, ")
            raise CatalogError(f"{source}: models.{name}: {where}{why}") from None
    return Catalog(specs)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        # utf-8-sig: an editor's byte-order mark is not a TOML error.
        return tomllib.loads(path.read_bytes().decode("utf-8-sig"))
    except OSError as exc:
        raise CatalogError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise CatalogError(f"{path} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"{path} is not valid TOML: {exc}") from None


def load_catalog(extra: Path | None = None) -> Catalog:
    """The shipped catalog, with the operator's additions and overrides from ``extra``."""
    shipped_text = resources.files(__package__).joinpath("models.toml").read_text("utf-8")
    fields = _merge_entries(tomllib.loads(shipped_text), {}, "models.toml")
    source = "models.toml"
    if extra is not None:
        source = str(extra)
        fields = _merge_entries(_read_toml(extra), fields, source)
    return _build(fields, source)
