"""The model catalog: which model takes which sizes, qualities, counts, prompts and options.

The catalog is data (``models.toml`` beside this file, plus an operator's file of the same shape);
adding a model never needs a code change.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator, Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

Family = Literal["gpt-image", "dall-e"]

# Every optional request field the engine knows, with the values it takes (None: any in range).
OPTION_VALUES: Mapping[str, tuple[str, ...] | None] = {
    "output_format": ("png", "jpeg", "webp"),
    "output_compression": None,
    "background": ("transparent", "opaque", "auto"),
    "moderation": ("low", "auto"),
    "style": ("vivid", "natural"),
    "stream": None,
}

_SIZE = re.compile(r"^(\d{1,5})x(\d{1,5})$")


class CatalogError(ValueError):
    """The catalog file is not valid; the message names the model and the field."""


def parse_size(size: str) -> tuple[int, int] | None:
    """``"1536x1024"`` -> ``(1536, 1024)``; anything else -> None."""
    match = _SIZE.match(size.strip().lower())
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2))


class FreeSize(BaseModel):
    """Rules for models that accept any ``WxH`` (gpt-image-2)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    multiple_of: int = Field(default=1, ge=1)
    max_edge: int = Field(ge=1)
    max_pixels: int = Field(ge=1)
    max_aspect_ratio: float = Field(default=3.0, ge=1.0)

    def problem(self, width: int, height: int) -> str | None:
        """Why ``width x height`` breaks the rules, or None when it is fine."""
        if min(width, height) < self.multiple_of:
            return f"each side must be at least {self.multiple_of} pixels"
        if width % self.multiple_of or height % self.multiple_of:
            return f"both sides must be multiples of {self.multiple_of}"
        if max(width, height) > self.max_edge:
            return f"no side may exceed {self.max_edge} pixels"
        if width * height > self.max_pixels:
            return f"at most {self.max_pixels:,} pixels in all"
        if max(width, height) / min(width, height) > self.max_aspect_ratio:
            return f"the aspect ratio must be within 1:{self.max_aspect_ratio:g}"
        return None

    def describe(self) -> str:
        return (
            f"any WxH with sides multiples of {self.multiple_of}, up to {self.max_edge} pixels "
            f"a side and {self.max_pixels:,} in all, aspect within 1:{self.max_aspect_ratio:g}"
        )


class ModelSpec(BaseModel):
    """What one model accepts."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    family: Family
    sizes: tuple[str, ...] = Field(min_length=1)
    free_size: FreeSize | None = None
    qualities: tuple[str, ...] = Field(min_length=1)
    max_count: int = Field(ge=1, le=10)
    max_prompt_chars: int = Field(ge=1)
    options: frozenset[str] = frozenset()
    default_size: str
    default_quality: str

    @model_validator(mode="after")
    def _consistent(self) -> ModelSpec:
        unknown = sorted(self.options - OPTION_VALUES.keys())
        if unknown:
            raise ValueError(f"unknown options {unknown}; known: {sorted(OPTION_VALUES)}")
        for size in self.sizes:
            if size != "auto" and parse_size(size) is None:
                raise ValueError(f"size {size!r} is neither 'auto' nor WxH")
        if not self.accepts_size(self.default_size):
            raise ValueError(f"default_size {self.default_size!r} is not one of its sizes")
        if self.default_quality not in self.qualities:
            raise ValueError(
                f"default_quality {self.default_quality!r} is not one of its qualities"
            )
        return self

    @property
    def is_gpt_image(self) -> bool:
        return self.family == "gpt-image"

    def size_problem(self, size: str) -> str | None:
        """Why ``size`` is not accepted, or None when it is."""
        if size in self.sizes:
            return None
        allowed = ", ".join(self.sizes)
        dims = parse_size(size)
        if self.free_size is None:
            return f"{self.name} takes the sizes {allowed}"
        if dims is None:
            return f"{self.name} takes {allowed}, or {self.free_size.describe()}"
        why = self.free_size.problem(*dims)
        return None if why is None else f"{size} does not fit {self.name}: {why}"

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
    """Resolve ``base = "..."`` and same-name overrides into complete field sets."""
    models = raw.get("models")
    if not isinstance(models, dict):
        raise CatalogError(f'{source}: expected tables named [models."<name>"]')
    merged = dict(known)
    for name, entry in models.items():
        if not isinstance(entry, dict):
            raise CatalogError(f"{source}: models.{name} must be a table")
        fields = dict(entry)
        base_name = fields.pop("base", None)
        if base_name is not None:
            if base_name not in merged:
                raise CatalogError(f"{source}: models.{name} has unknown base {base_name!r}")
            start = merged[base_name]
        else:
            start = merged.get(name, {})
        merged[name] = {**start, **fields, "name": name}
    return merged


def _build(fields_by_name: Mapping[str, dict[str, Any]], source: str) -> Catalog:
    specs: dict[str, ModelSpec] = {}
    for name, fields in fields_by_name.items():
        try:
            specs[name] = ModelSpec.model_validate(fields)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "entry"
            raise CatalogError(f"{source}: models.{name}: {where}: {first['msg']}") from None
    return Catalog(specs)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except OSError as exc:
        raise CatalogError(f"cannot read {path}: {exc.strerror}") from None
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
