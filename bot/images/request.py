"""A generation request, checked against the catalog before anything is paid for."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .catalog import OPTION_VALUES, ModelSpec
from .errors import UnsupportedOption


@dataclass(frozen=True, slots=True)
class ImageRequest:
    """What the user asked for. Unset (None) fields take the model's defaults or are omitted."""

    prompt: str
    model: str
    size: str | None = None
    quality: str | None = None
    count: int = 1
    user: str | None = None
    output_format: str | None = None
    output_compression: int | None = None
    background: str | None = None
    moderation: str | None = None
    style: str | None = None

    def options(self) -> dict[str, Any]:
        """The optional model-specific fields that were set."""
        values = {name: getattr(self, name, None) for name in OPTION_VALUES}
        return {name: value for name, value in values.items() if value is not None}


def _one_of(values: tuple[str, ...]) -> str:
    return ", ".join(values)


def build_body(request: ImageRequest, spec: ModelSpec) -> dict[str, Any]:
    """The JSON body for ``POST /images/generations``, or :class:`UnsupportedOption`.

    Unset fields are omitted rather than sent as ``null`` (the API's schema refuses ``null``).
    """
    prompt = request.prompt.strip()
    if not prompt:
        raise UnsupportedOption("prompt", "The prompt is empty.")
    if len(prompt) > spec.max_prompt_chars:
        raise UnsupportedOption(
            "prompt",
            f"{spec.name} takes prompts of at most {spec.max_prompt_chars:,} characters; "
            f"this one has {len(prompt):,}.",
        )
    if not 1 <= request.count <= spec.max_count:
        raise UnsupportedOption(
            "count",
            f"{spec.name} makes 1 to {spec.max_count} images per request."
            if spec.max_count > 1
            else f"{spec.name} makes one image per request.",
        )
    size = (request.size or spec.default_size).strip().lower()
    problem = spec.size_problem(size)
    if problem is not None:
        raise UnsupportedOption("size", problem + ".")
    quality = request.quality or spec.default_quality
    if quality not in spec.qualities:
        raise UnsupportedOption(
            "quality", f"{spec.name} takes the qualities {_one_of(spec.qualities)}."
        )

    body: dict[str, Any] = {"model": spec.name, "prompt": prompt, "n": request.count}
    body["size"] = size
    body["quality"] = quality
    if not spec.is_gpt_image:
        # DALL-E answers with expiring URLs unless asked; GPT image models refuse the field.
        body["response_format"] = "b64_json"

    options = request.options()
    for name, value in options.items():
        if name not in spec.options:
            takes = _one_of(tuple(sorted(spec.options))) or "none"
            raise UnsupportedOption(
                name, f"{spec.name} does not take `{name}` (its options: {takes})."
            )
        allowed = OPTION_VALUES[name]
        if allowed is not None and value not in allowed:
            raise UnsupportedOption(name, f"`{name}` takes {_one_of(allowed)}.")
        body[name] = value

    output_format = options.get("output_format", "png")
    if "output_compression" in options:
        if not 0 <= options["output_compression"] <= 100:
            raise UnsupportedOption("output_compression", "`output_compression` takes 0 to 100.")
        if output_format not in ("jpeg", "webp"):
            raise UnsupportedOption(
                "output_compression",
                "`output_compression` only applies to the jpeg and webp output formats.",
            )
    if options.get("background") == "transparent" and output_format not in ("png", "webp"):
        raise UnsupportedOption(
            "background", "A transparent background needs the png or webp output format."
        )
    if request.user:
        body["user"] = request.user
    return body
