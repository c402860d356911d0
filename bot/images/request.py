"""A generation request, checked against the catalog before anything is paid for.

:func:`prepare_request` validates once and returns a :class:`PreparedRequest`: the model's spec,
the values resolved from its defaults, and the JSON body. The client sends that as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bot.i18n import _, ngettext

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


# What a member is told when a request does not fit the model (placeholders in backticks are
# the API's own option names, left as they are).
EMPTY_PROMPT = _("The prompt is empty.")
PROMPT_TOO_LONG = _("{model} takes prompts of at most {most} characters; this one has {length}.")
NO_SUCH_OPTION = _("{model} does not take `{option}` (its options: {options}).")
NO_OPTIONS = _("none")
OPTION_TAKES = _("`{option}` takes {values} on {model}.")
COMPRESSION_RANGE = _("`output_compression` takes 0 to 100.")
COMPRESSION_FORMATS = _("`output_compression` only applies to the jpeg and webp output formats.")
TRANSPARENT_FORMATS = _("A transparent background needs the png or webp output format.")
SVG_ONE = _("SVG output makes one image per request.")
GIF_ONLY = _("`{option}` only applies to the gif output format.")
FRAMES_RANGE = _("An animated GIF has {least} to {most} frames.")
FRAME_MS_RANGE = _("A GIF frame lasts {least} to {most} milliseconds.")
COUNT_RANGE = ngettext(
    "{model} makes one image per request.", "{model} makes 1 to {n} images per request."
)
PROBLEM = _("{problem}.")
QUALITIES = _("{model} takes the qualities {qualities}.")
PARTIAL_RANGE = _("`partial_images` takes 0 to {most}.")


def _one_of(values: tuple[str, ...]) -> str:
    return ", ".join(values)


def _check_prompt(prompt: str, spec: ModelSpec) -> None:
    if not prompt:
        raise UnsupportedOption("prompt", EMPTY_PROMPT)
    if len(prompt) > spec.max_prompt_chars:
        raise UnsupportedOption(
            "prompt",
            PROMPT_TOO_LONG.format(model=spec.name, most=spec.max_prompt_chars, length=len(prompt)),
        )


def _check_options(request: ImageRequest, spec: ModelSpec) -> dict[str, Any]:
    options = request.options()
    for name, value in options.items():
        if name not in spec.options:
            takes = _one_of(tuple(sorted(spec.options))) or NO_OPTIONS
            raise UnsupportedOption(
                name, NO_SUCH_OPTION.format(model=spec.name, option=name, options=takes)
            )
        allowed = spec.output_formats if name == "output_format" else OPTION_VALUES[name]
        if allowed is not None and value not in allowed:
            raise UnsupportedOption(
                name, OPTION_TAKES.format(option=name, values=_one_of(allowed), model=spec.name)
            )
    return options


def _check_combinations(request: ImageRequest, options: dict[str, Any]) -> None:
    output_format = options.get("output_format", "png")
    if "output_compression" in options:
        if not 0 <= options["output_compression"] <= 100:
            raise UnsupportedOption("output_compression", COMPRESSION_RANGE)
        if output_format not in ("jpeg", "webp"):
            raise UnsupportedOption("output_compression", COMPRESSION_FORMATS)
    if options.get("background") == "transparent" and output_format not in ("png", "webp"):
        raise UnsupportedOption("background", TRANSPARENT_FORMATS)
    if output_format == "svg" and request.count != 1:
        raise UnsupportedOption("count", SVG_ONE)
    gif_fields = {
        "frame_count": request.frame_count,
        "frame_duration_ms": request.frame_duration_ms,
    }
    for name, value in gif_fields.items():
        if value is not None and output_format != "gif":
            raise UnsupportedOption(name, GIF_ONLY.format(option=name))
    if request.frame_count is not None and not MIN_FRAMES <= request.frame_count <= MAX_FRAMES:
        raise UnsupportedOption(
            "frame_count", FRAMES_RANGE.format(least=MIN_FRAMES, most=MAX_FRAMES)
        )
    duration = request.frame_duration_ms
    if duration is not None and not MIN_FRAME_MS <= duration <= MAX_FRAME_MS:
        raise UnsupportedOption(
            "frame_duration_ms",
            FRAME_MS_RANGE.format(least=MIN_FRAME_MS, most=MAX_FRAME_MS),
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
            COUNT_RANGE.format(model=spec.name, n=spec.max_count),
        )
    size = (request.size or spec.default_size).strip().lower()
    problem = spec.size_problem(size)
    if problem is not None:
        raise UnsupportedOption("size", PROBLEM.format(problem=problem))
    quality = request.quality or spec.default_quality
    if quality not in spec.qualities:
        raise UnsupportedOption(
            "quality", QUALITIES.format(model=spec.name, qualities=_one_of(spec.qualities))
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
        raise UnsupportedOption("partial_images", PARTIAL_RANGE.format(most=MAX_PARTIAL_IMAGES))
    if not spec.streaming or options.get("output_format", "png") in UNSTREAMED_FORMATS:
        return 0
    return request.partial_images


def build_body(request: ImageRequest, spec: ModelSpec) -> dict[str, Any]:
    """The JSON body for ``POST /images/generations``, or :class:`UnsupportedOption`."""
    return prepare_request(request, spec).body
