"""A generation request, checked against the catalog before anything is paid for.

:func:`prepare_request` validates once and returns a :class:`PreparedRequest`: the model's spec,
the values resolved from its defaults, and the JSON body. The client sends that as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .catalog import OPTION_VALUES, ModelSpec, parse_size
from .errors import UnsupportedOption

# GIF output: the API's bounds (frames 2-16; the delay is rounded to 10 ms and capped).
MIN_FRAMES, MAX_FRAMES = 2, 16
MIN_FRAME_MS, MAX_FRAME_MS = 10, 655_350
MAX_PARTIAL_IMAGES = 3  # the API's bound on `partial_images`
# An image may have this many times the pixels asked for before it is refused as an answer to
# some other question (gateways round sizes; none returns several times the area).
PIXEL_MARGIN = 2.0
# Output formats the API never streams (nor makes partial images of).
UNSTREAMED_FORMATS = frozenset({"gif", "svg"})


@dataclass(frozen=True, slots=True)
class ImageRequest:
    """What the member asked for. Unset (None) fields take the model's defaults or are omitted."""

    prompt: str
    model: str
    size: str | None = None
    quality: str | None = None
    count: int = 1
    user: str | None = None  # the member's pseudonym: sent as `user` and `safety_identifier`
    output_format: str | None = None
    output_compression: int | None = None
    background: str | None = None
    moderation: str | None = None
    complexity: str | None = None
    style: str | None = None
    frame_count: int | None = None
    frame_duration_ms: int | None = None
    # Previews while the image is made (0: none). Not the member's choice but the bot's (its
    # configuration, perhaps the server's); asked for only where the model streams.
    partial_images: int = 0

    def options(self) -> dict[str, Any]:
        """The optional model-specific fields that were set."""
        values = {name: getattr(self, name, None) for name in OPTION_VALUES}
        return {name: value for name, value in values.items() if value is not None}


# An input image is read by edits.py; it lives here, with the prepared request that carries it.
_EXTENSIONS = {"png": "png", "jpeg": "jpg", "webp": "webp"}


@dataclass(frozen=True, slots=True, repr=False)
class InputImage:
    """An image sent to the edits endpoint, as read from its bytes."""

    data: bytes
    format: str  # "png", "jpeg" or "webp"
    width: int
    height: int
    has_alpha: bool
    field: str  # the option it came from: "image", "image2", ..., "mask"

    def __repr__(self) -> str:
        if not self.data:
            return f"InputImage({self.field}: not downloaded yet)"
        return f"InputImage({self.field}: {self.format}, {self.width}x{self.height})"

    @classmethod
    def declared(cls, field: str) -> InputImage:
        """An input not downloaded yet: its field only, for what needs no file (the checks of
        the options, the estimate and the budgets count the inputs, not their bytes)."""
        return cls(b"", "", 0, 0, False, field)

    @property
    def filename(self) -> str:
        return f"{self.field}.{_EXTENSIONS.get(self.format, self.format)}"

    @property
    def content_type(self) -> str:
        return f"image/{self.format}"


@dataclass(frozen=True, slots=True)
class PreparedRequest:
    """A request that passed validation: what will be sent, and what it resolved to."""

    spec: ModelSpec
    prompt: str
    size: str
    quality: str
    count: int
    options: dict[str, Any]  # the optional fields that were set, as sent (output_format, ...)
    body: dict[str, Any]
    # An edit (POST /images/edits) has its input images, checked, and perhaps a mask; the body
    # then holds the form's other fields.
    inputs: tuple[InputImage, ...] = ()
    mask: InputImage | None = None
    partial_images: int = 0  # previews asked for: the request streams when there are any

    @property
    def streams(self) -> bool:
        return self.partial_images > 0

    @property
    def model(self) -> str:
        return self.spec.name

    @property
    def is_edit(self) -> bool:
        return bool(self.inputs)

    @property
    def kind(self) -> str:
        """``generate`` or ``edit``: what the usage ledger records."""
        return "edit" if self.is_edit else "generate"

    @property
    def output_format(self) -> str:
        return str(self.options.get("output_format", "png"))

    @property
    def max_pixels(self) -> int:
        """The most pixels an image in the answer may have: the size asked for ("auto": the
        largest the model makes), with :data:`PIXEL_MARGIN`."""
        dims = parse_size(self.size)
        if dims is not None:
            pixels = dims[0] * dims[1]
        else:
            sizes = [parse_size(size) for size in self.spec.sizes]
            pixels = max((w * h for w, h in filter(None, sizes)), default=1024 * 1024)
            if self.spec.free_size is not None:
                pixels = max(pixels, self.spec.free_size.max_pixels)
        return int(pixels * PIXEL_MARGIN)


def _one_of(values: tuple[str, ...]) -> str:
    return ", ".join(values)


def _check_prompt(prompt: str, spec: ModelSpec) -> None:
    if not prompt:
        raise UnsupportedOption("prompt", "The prompt is empty.")
    if len(prompt) > spec.max_prompt_chars:
        raise UnsupportedOption(
            "prompt",
            f"{spec.name} takes prompts of at most {spec.max_prompt_chars:,} characters; "
            f"this one has {len(prompt):,}.",
        )


def _check_options(request: ImageRequest, spec: ModelSpec) -> dict[str, Any]:
    options = request.options()
    for name, value in options.items():
        if name not in spec.options:
            takes = _one_of(tuple(sorted(spec.options))) or "none"
            raise UnsupportedOption(
                name, f"{spec.name} does not take `{name}` (its options: {takes})."
            )
        allowed = spec.output_formats if name == "output_format" else OPTION_VALUES[name]
        if allowed is not None and value not in allowed:
            raise UnsupportedOption(name, f"`{name}` takes {_one_of(allowed)} on {spec.name}.")
    return options


def _check_combinations(request: ImageRequest, options: dict[str, Any]) -> None:
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
    if output_format == "svg" and request.count != 1:
        raise UnsupportedOption("count", "SVG output makes one image per request.")
    gif_fields = {
        "frame_count": request.frame_count,
        "frame_duration_ms": request.frame_duration_ms,
    }
    for name, value in gif_fields.items():
        if value is not None and output_format != "gif":
            raise UnsupportedOption(name, f"`{name}` only applies to the gif output format.")
    if request.frame_count is not None and not MIN_FRAMES <= request.frame_count <= MAX_FRAMES:
        raise UnsupportedOption(
            "frame_count", f"An animated GIF has {MIN_FRAMES} to {MAX_FRAMES} frames."
        )
    duration = request.frame_duration_ms
    if duration is not None and not MIN_FRAME_MS <= duration <= MAX_FRAME_MS:
        raise UnsupportedOption(
            "frame_duration_ms",
            f"A GIF frame lasts {MIN_FRAME_MS:,} to {MAX_FRAME_MS:,} milliseconds.",
        )


def prepare_request(request: ImageRequest, spec: ModelSpec) -> PreparedRequest:
    """Validate ``request`` against ``spec``, or raise :class:`UnsupportedOption`.

    Unset fields are omitted rather than sent as ``null`` (the API's schema refuses ``null``).
    """
    prompt = request.prompt.strip()
    _check_prompt(prompt, spec)
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
    options = _check_options(request, spec)
    _check_combinations(request, options)

    body: dict[str, Any] = {"model": spec.name, "prompt": prompt, "n": request.count}
    body["size"] = size
    body["quality"] = quality
    if not spec.is_gpt_image:
        # DALL-E answers with expiring URLs unless asked; GPT image models refuse the field.
        body["response_format"] = "b64_json"
    for name in ("frame_count", "frame_duration_ms"):
        if getattr(request, name) is not None:
            options[name] = getattr(request, name)
    body.update(options)
    partial_images = _partial_images(request, spec, options)
    if partial_images:
        body["stream"] = True
        body["partial_images"] = partial_images
    if request.user:
        # `user` is what older gateways know; `safety_identifier` replaces it where it exists.
        body["user"] = request.user
        if spec.safety_identifier:
            body["safety_identifier"] = request.user
    return PreparedRequest(
        spec=spec,
        prompt=prompt,
        size=size,
        quality=quality,
        count=request.count,
        options=options,
        body=body,
        partial_images=partial_images,
    )


def _partial_images(request: ImageRequest, spec: ModelSpec, options: dict[str, Any]) -> int:
    """How many previews to ask for: none where the model or the output format does not stream."""
    if not 0 <= request.partial_images <= MAX_PARTIAL_IMAGES:
        raise UnsupportedOption(
            "partial_images", f"`partial_images` takes 0 to {MAX_PARTIAL_IMAGES}."
        )
    if not spec.streaming or options.get("output_format", "png") in UNSTREAMED_FORMATS:
        return 0
    return request.partial_images


def build_body(request: ImageRequest, spec: ModelSpec) -> dict[str, Any]:
    """The JSON body for ``POST /images/generations``, or :class:`UnsupportedOption`."""
    return prepare_request(request, spec).body
