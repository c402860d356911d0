"""Edits: images as input, checked from their bytes before anything is paid for.

:func:`prepare_edit` turns an :class:`EditRequest` (the generation options, the input images and
perhaps a mask, as bytes) into a :class:`~bot.images.request.PreparedRequest` that the client
sends to ``POST /images/edits`` as a multipart form. Every refusal is an
:class:`~bot.images.errors.UnsupportedOption` whose message is one sentence for the member.

What a file is, is read from its bytes (Pillow), never from its name or declared content type.
Pillow reads only the header to identify a file; completeness is checked from the file's end, so
nothing here decodes pixels. It is still run in a worker thread when the inputs are large.

Phone photos are often more than one JPEG: an Ultra HDR (gain map) photo is a JPEG followed by a
second picture that its MPF segment points at (Pillow calls it MPO), and a motion photo is a
JPEG followed by a video. What is edited is the photo itself, the first picture: its bytes are
taken as they are, up to the end of its last scan, without the MPF segment (it would point at a
picture no longer there), and nothing after it is sent. Nothing is re-encoded: the first
picture is a JPEG, which the GPT image models take (dall-e-2 takes only PNG, and refuses it as it
refuses any JPEG). The size limits apply to the whole file, as downloaded; the decompression-bomb
check to the picture sent.

A JPEG's markers are walked by this module before Pillow reads the header, and at most
:data:`MAX_JPEG_STEPS` of them: the walk keeps positions, not pieces, so a hostile file of
millions of tiny segments is refused at once instead of costing gigabytes and seconds.
"""

from __future__ import annotations

import dataclasses
import io
import re
import warnings
from dataclasses import dataclass
from typing import Any

import aiohttp
from PIL import Image, UnidentifiedImageError

from bot.i18n import Text, _, ngettext

from .catalog import ModelSpec
from .errors import UnsupportedOption
from .request import ImageRequest, InputImage, PreparedRequest, prepare_request
from .response import IMAGE_FORMATS, is_complete

_MEGABYTE = 1024 * 1024
# The mask's own limit in the API's contract ("a valid PNG file, less than 4MB").
MAX_MASK_BYTES = 4 * _MEGABYTE
# Above this many bytes of input, checking runs in a worker thread (see the client).
CHECK_OFF_LOOP_BYTES = 1 * _MEGABYTE
# Fields of a generation that the edits endpoint does not take (ImageEditParams, SDK 3.54).
NOT_FOR_EDITS = ("moderation", "style")
_FORMAT_NAMES = {"png": "PNG", "jpeg": "JPEG", "webp": "WebP", "gif": "GIF"}
# A JPEG marker inside or after a scan's data: 0xFF followed by neither a stuffed zero, a restart
# marker nor another 0xFF (fill).
_MARKER_AFTER_SCAN = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_SOI, _SOS, _EOI, _APP2 = 0xD8, 0xDA, 0xD9, 0xE2
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # markers without a length
# The most markers and fill bytes walked outside a JPEG's scans. A phone photo has a few dozen
# (a progressive one: about 10 scans, each with its tables); a file of 25 MB of two-byte markers
# has 12 million, which Pillow and a walk of pieces would take seconds and gigabytes to read.
MAX_JPEG_STEPS = 4096
_SEARCH_WINDOW = 256 * 1024  # bytes of a scan searched at a time (about 2 ms)


@dataclass(frozen=True, slots=True)
class EditRequest:
    """What the member asked for: the generation options, and the images to start from (the
    first is the one edited; the others are references), with an optional mask."""

    request: ImageRequest
    images: tuple[bytes, ...]
    mask: bytes | None = None
    input_fidelity: str | None = None

    @property
    def model(self) -> str:
        return self.request.model


def input_fields(count: int) -> list[str]:
    """The names of ``count`` input images: ``image``, ``image2``, ``image3``, ..."""
    return ["image", *(f"image{index}" for index in range(2, count + 1))]


# How a sentence names an input, inside it and at its start (languages that need no capital
# letter translate both alike).
INPUT_NAMES = {"image": _("the image"), "mask": _("the mask")}
INPUT_SUBJECTS = {"image": _("The image"), "mask": _("The mask")}
NUMBERED_INPUT = _("image {n}")
NUMBERED_SUBJECT = _("Image {n}")
EITHER = _("{some} or {last}")
MEGABYTES = _("{amount:.1f} MB")
TOO_BIG = _("{input} is {size}; the most accepted is {most}.")
NO_IMAGE = _("An edit needs an image to start from.")
TOO_MANY = ngettext(
    "{model} takes one image to edit; you gave {given}.",
    "{model} takes at most {n} images to edit; you gave {given}.",
)
NO_MASK = _("{model} does not take a mask.")
EMPTY_FILE = _("{input} is an empty file.")
UNREADABLE = _("{input} is not an image the bot can read; use {formats}.")
WRONG_FORMAT = _("{input} is a {format} file; this takes {formats}.")
CUT_OFF = _("{input} is cut off (its file is incomplete).")
SQUARE_ONLY = _("{model} edits square images only; {input} is {size}.")
MASK_NO_ALPHA = _(
    "The mask has no transparency (alpha channel): its transparent areas mark where the image "
    "is edited."
)
MASK_SIZE = _("The mask is {mask} but the image is {image}; they must be the same size.")
CANNOT_EDIT = _("{model} cannot edit images.")
NOT_FOR_EDITS_SENTENCE = _("`{option}` does not apply to edits.")
FIDELITIES = _("{model} takes the input fidelities {fidelities}.")
NO_FIDELITY = _("{model} does not take an input fidelity.")
GIF_AND_MASK = _("GIF output cannot be combined with a mask.")


def describe_input(field: str, *, first: bool = False) -> Text:
    """How a sentence names an input: ``the image``, ``image 2``, ``the mask`` (``first``: as
    the sentence's first words)."""
    if field in ("image", "mask"):
        return (INPUT_SUBJECTS if first else INPUT_NAMES)[field]
    return (NUMBERED_SUBJECT if first else NUMBERED_INPUT).format(n=field.removeprefix("image"))


def _formats(values: tuple[str, ...]) -> str:
    names = [_FORMAT_NAMES.get(value, value) for value in values]
    if len(names) == 1:
        return names[0]
    return EITHER.format(some=", ".join(names[:-1]), last=names[-1])


def _megabytes(count: float) -> Text:
    return MEGABYTES.format(amount=count / _MEGABYTE)


def check_file_size(field: str, size: int, max_bytes: int) -> None:
    """Refuse an input of ``size`` bytes over ``max_bytes`` (also before it is downloaded)."""
    if size > max_bytes:
        raise UnsupportedOption(
            field,
            TOO_BIG.format(
                input=describe_input(field, first=True),
                size=_megabytes(size),
                most=_megabytes(max_bytes),
            ),
        )


def max_input_bytes(spec: ModelSpec, field: str) -> int:
    """The largest file ``spec`` takes for the input ``field`` (the mask has its own limit)."""
    largest = int(spec.max_input_mb * _MEGABYTE)
    return min(MAX_MASK_BYTES, largest) if field == "mask" else largest


def check_counts(spec: ModelSpec, images: int, has_mask: bool) -> None:
    """Refuse more images than ``spec`` takes, or a mask it does not take."""
    if images == 0:
        raise UnsupportedOption("image", NO_IMAGE)
    if images > spec.max_input_images:
        too_many = TOO_MANY.format(model=spec.name, n=spec.max_input_images, given=images)
        raise UnsupportedOption("image", too_many)
    if has_mask and not spec.mask:
        raise UnsupportedOption("mask", NO_MASK.format(model=spec.name))


class _TooManyMarkers(Exception):
    """A JPEG with more markers than any camera writes: refused before it is walked further."""


def _walk(data: bytes, *, whole: bool) -> tuple[int | None, list[tuple[int, int]]]:
    """Where the first picture of the JPEG ``data`` ends (after its end marker; None where it
    does not end), and the MPF segments in it, as (start, end). ``whole`` False: only the
    header is walked, up to the first scan (what Pillow reads), and the end is None.

    Segments are walked by their lengths, so a thumbnail inside the EXIF data (a JPEG of its
    own) is skipped; a scan's data by a search in C. Each marker and fill byte outside a scan is
    a step of Python: more than :data:`MAX_JPEG_STEPS` raises :class:`_TooManyMarkers`, so a
    file of millions of tiny segments costs neither seconds nor memory (the walk keeps positions,
    not pieces)."""
    dropped: list[tuple[int, int]] = []
    if not data.startswith(b"\xff\xd8"):
        return None, dropped
    position = 2
    for _step in range(MAX_JPEG_STEPS):
        if position + 2 > len(data) or data[position] != 0xFF:
            return None, dropped
        marker = data[position + 1]
        if marker == 0xFF:  # fill before a marker
            position += 1
            continue
        if marker == _EOI:
            return position + 2, dropped
        if marker == _SOI:  # the next picture begins: this one never ended
            return None, dropped
        if marker in _STANDALONE:
            position += 2
            continue
        if position + 4 > len(data):
            return None, dropped
        end = position + 2 + int.from_bytes(data[position + 2 : position + 4], "big")
        if end <= position + 3 or end > len(data):
            return None, dropped
        if marker == _APP2 and data[position + 4 : position + 8] == b"MPF\x00":
            dropped.append((position, end))
        if marker == _SOS:  # the scan's data runs to the next marker
            if not whole:
                return None, dropped
            found = _marker_after(data, end)
            if found is None:
                return None, dropped
            end = found
        position = end
    raise _TooManyMarkers


def _marker_after(data: bytes, start: int) -> int | None:
    """Where the first marker at or after ``start`` in a scan's data is; None if none is. The
    search goes a window at a time: one search of 50 MB would hold the interpreter (and so the
    event loop, from a worker thread) for half a second."""
    while start < len(data):
        # A marker is two bytes: each window reaches one byte into the next.
        found = _MARKER_AFTER_SCAN.search(data, start, start + _SEARCH_WINDOW + 1)
        if found is not None:
            return found.start()
        start += _SEARCH_WINDOW
    return None


def first_picture(data: bytes) -> bytes | None:
    """The first picture of the JPEG file ``data``, whole: its segments (but an MPF segment) and
    scans up to its end marker, nothing after it; None where it does not end. Raises
    :class:`_TooManyMarkers` (see :func:`_walk`)."""
    end, dropped = _walk(data, whole=True)
    if end is None:
        return None
    kept: list[bytes] = []
    position = 0
    for start, stop in dropped:
        kept.append(data[position:start])
        position = stop
    kept.append(data[position:end])
    return b"".join(kept)


def _identify(data: bytes) -> tuple[str | None, int, int, bool]:
    """Pillow's format name, the size, and whether it has alpha; (None, 0, 0, False) for what is
    not an image Pillow reads, or whose declared size would make it a decompression bomb."""
    try:
        with warnings.catch_warnings():
            # A huge declared size is refused as not an image, not decoded: turn the warning
            # Pillow gives below its hard limit into the same refusal.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
                    "transparency" in image.info
                )
                return image.format, image.size[0], image.size[1], has_alpha
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning):
        return None, 0, 0, False
    except (OSError, ValueError, SyntaxError, EOFError):  # Pillow's ways to say it is broken
        return None, 0, 0, False


def _first_picture_of(data: bytes, pillow_format: str | None, size: tuple[int, int]) -> bytes:
    """``data`` as it is sent: a JPEG with a second picture (MPO) or with data after its end (a
    motion photo's video) is its first picture alone; b"" where that does not end (cut off)."""
    if pillow_format == "JPEG" and is_complete("jpeg", data):
        return data
    first = first_picture(data) or b""
    # Only the picture Pillow read (and checked for its size) is sent.
    if first and _identify(first)[:3] != ("JPEG", *size):
        return b""
    return first


def read_image(data: bytes, field: str, *, accepted: tuple[str, ...], max_bytes: int) -> InputImage:
    """Identify ``data`` from its bytes, or refuse it in one sentence naming ``field``. A
    JPEG's first picture stands for the file (see the module's docstring)."""
    name = describe_input(field, first=True)
    if not data:
        raise UnsupportedOption(field, EMPTY_FILE.format(input=name))
    check_file_size(field, len(data), max_bytes)
    unreadable = UnsupportedOption(field, UNREADABLE.format(input=name, formats=_formats(accepted)))
    try:
        _walk(data, whole=False)  # Pillow reads a JPEG's header marker by marker: bound it first
    except _TooManyMarkers:
        raise unreadable from None
    pillow_format, width, height, has_alpha = _identify(data)
    kind = "jpeg" if pillow_format == "MPO" else IMAGE_FORMATS.get(pillow_format or "")
    if kind is None:
        raise unreadable
    if kind not in accepted:
        raise UnsupportedOption(
            field,
            WRONG_FORMAT.format(
                input=name, format=_FORMAT_NAMES.get(kind, kind), formats=_formats(accepted)
            ),
        )
    if kind == "jpeg":
        try:
            data = _first_picture_of(data, pillow_format, (width, height))
        except _TooManyMarkers:
            raise unreadable from None
    if not is_complete(kind, data):
        raise UnsupportedOption(field, CUT_OFF.format(input=name))
    return InputImage(data, kind, width, height, has_alpha, field)


def check_inputs(
    edit: EditRequest, spec: ModelSpec
) -> tuple[tuple[InputImage, ...], InputImage | None]:
    """The input images and mask of ``edit``, read and checked against ``spec``."""
    count = len(edit.images)
    check_counts(spec, count, edit.mask is not None)
    inputs = tuple(
        read_image(data, field, accepted=spec.input_formats, max_bytes=max_input_bytes(spec, field))
        for field, data in zip(input_fields(count), edit.images, strict=True)
    )
    if spec.square_input:
        for image in inputs:
            if image.width != image.height:
                raise UnsupportedOption(
                    image.field,
                    SQUARE_ONLY.format(
                        model=spec.name,
                        input=describe_input(image.field),
                        size=f"{image.width}x{image.height}",
                    ),
                )
    if edit.mask is None:
        return inputs, None
    mask = read_image(edit.mask, "mask", accepted=("png",), max_bytes=max_input_bytes(spec, "mask"))
    if not mask.has_alpha:
        raise UnsupportedOption("mask", MASK_NO_ALPHA)
    first = inputs[0]
    if (mask.width, mask.height) != (first.width, first.height):
        raise UnsupportedOption(
            "mask",
            MASK_SIZE.format(
                mask=f"{mask.width}x{mask.height}", image=f"{first.width}x{first.height}"
            ),
        )
    return inputs, mask


def check_edit(
    request: ImageRequest,
    spec: ModelSpec,
    *,
    images: int,
    has_mask: bool,
    input_fidelity: str | None = None,
) -> PreparedRequest:
    """Everything about an edit of ``images`` images (and perhaps a mask) that needs no file:
    the model edits, takes that many and the mask, and the options as for a generation. The
    request prepared with its inputs declared only (:meth:`InputImage.declared`), or
    :class:`UnsupportedOption`: what the member can be refused before anything is downloaded."""
    if not spec.edits:
        raise UnsupportedOption("model", CANNOT_EDIT.format(model=spec.name))
    check_counts(spec, images, has_mask)
    options = request.options()
    for name in NOT_FOR_EDITS:
        if name in options:
            raise UnsupportedOption(name, NOT_FOR_EDITS_SENTENCE.format(option=name))
    if input_fidelity is not None and input_fidelity not in spec.input_fidelities:
        takes = (
            FIDELITIES.format(model=spec.name, fidelities=", ".join(spec.input_fidelities))
            if spec.input_fidelities
            else NO_FIDELITY.format(model=spec.name)
        )
        raise UnsupportedOption("input_fidelity", takes)
    prepared = prepare_request(request, spec)
    if has_mask and prepared.output_format == "gif":
        raise UnsupportedOption("mask", GIF_AND_MASK)
    body = dict(prepared.body)
    if input_fidelity is not None:
        body["input_fidelity"] = input_fidelity
    return dataclasses.replace(
        prepared,
        body=body,
        inputs=tuple(InputImage.declared(field) for field in input_fields(images)),
        mask=InputImage.declared("mask") if has_mask else None,
    )


def prepare_edit(edit: EditRequest, spec: ModelSpec) -> PreparedRequest:
    """Validate ``edit`` against ``spec`` (the options as for a generation, then the inputs from
    their bytes), or raise :class:`UnsupportedOption`. Nothing is sent."""
    declared = check_edit(
        edit.request,
        spec,
        images=len(edit.images),
        has_mask=edit.mask is not None,
        input_fidelity=edit.input_fidelity,
    )
    inputs, mask = check_inputs(edit, spec)
    return dataclasses.replace(declared, inputs=inputs, mask=mask)


def input_bytes(edit: EditRequest) -> int:
    """How many bytes of images ``edit`` carries (to decide where to check them)."""
    return sum(len(data) for data in edit.images) + len(edit.mask or b"")


def form_value(value: Any) -> str:
    """A form field's text: aiohttp's FormData refuses numbers and booleans as they are."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def edit_form(prepared: PreparedRequest) -> aiohttp.FormData:
    """The multipart body of ``POST /images/edits``: the fields of ``prepared.body``, the input
    images (``image`` for one, ``image[]`` for several, as the SDK sends them) and the mask."""
    form = aiohttp.FormData()
    for name, value in prepared.body.items():
        form.add_field(name, form_value(value))
    field_name = "image" if len(prepared.inputs) == 1 else "image[]"
    for image in prepared.inputs:
        form.add_field(
            field_name, image.data, filename=image.filename, content_type=image.content_type
        )
    if prepared.mask is not None:
        mask = prepared.mask
        form.add_field("mask", mask.data, filename=mask.filename, content_type=mask.content_type)
    return form
