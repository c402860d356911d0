"""Turning an Images API response body into images, or a typed error. Never anything else.

These functions are pure and synchronous so the client can run them in a worker thread when the
body is large (a 10-image base64 body is tens of megabytes: parsing it on the event loop would
stall every other interaction).
"""

from __future__ import annotations

import binascii
import io
import json
import re
import secrets
import warnings
from dataclasses import dataclass
from typing import Any

import pybase64
from PIL import Image, UnidentifiedImageError

from .errors import MalformedResponse, ResponseTooLarge

IMAGE_FORMATS = {"PNG": "png", "JPEG": "jpeg", "WEBP": "webp", "GIF": "gif"}
# A data URL's head, which some gateways put before the base64 ("data:image/png;base64,").
_DATA_URL = re.compile(rb"^\s*data:[\w.+/-]*(?:;[\w.+-]+=[\w.+-]+)*;base64,", re.IGNORECASE)
# A PNG ends with its IEND chunk (empty, so its checksum is fixed). Checking every chunk's CRC
# instead cost 6 ms an image on the event loop under load, and a cut-off file lacks the end.
_PNG_END = b"IEND\xaeB`\x82"
_SVG_ROOT = re.compile(rb"<svg[\s>]", re.IGNORECASE)
_SVG_LENGTH = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(?:px)?\s*$")

LIFT_AT_LEAST = 64 * 1024  # base64 values shorter than this are left to json
_B64_KEY = b'"b64_json"'
_BLANK = (b" ", b"\t", b"\n", b"\r")


@dataclass(frozen=True, slots=True, repr=False)
class GeneratedImage:
    data: bytes
    format: str  # "png", "jpeg", "webp", "gif" or "svg", from the bytes themselves
    width: int  # for SVG, its declared size, or 0 when it declares none
    height: int
    revised_prompt: str | None = None
    frames: int = 1  # more than one for an animated GIF or WebP

    def __repr__(self) -> str:
        return (
            f"GeneratedImage({self.format}, {self.width}x{self.height}, {len(self.data):,} bytes)"
        )


@dataclass(frozen=True, slots=True)
class ImageLimits:
    """What an image in the answer may be: bytes, and pixels (what the requested size allows,
    with a margin; a 12000x12000 PNG would take a gigabyte to re-encode)."""

    max_bytes: int
    max_pixels: int
    max_frames: int = 16  # the API makes at most 16; each frame is decoded when re-encoding


@dataclass(frozen=True, slots=True)
class ParsedBody:
    """A successful body: images already decoded, plus ``url`` items still to download."""

    images: list[GeneratedImage | None]  # None where the item is a URL to fetch
    urls: dict[int, str]
    revised_prompts: list[str | None]
    usage: dict[str, Any] | None = None
    extra_items: int = 0  # items beyond the number asked for, dropped unread
    previews: int = 0  # partial images a stream carried: each is billed


class ErrorInBody(MalformedResponse):
    """A 2xx answer that carries an error object: the client classifies it like a status error."""

    def __init__(self, info: ErrorBody) -> None:
        super().__init__("a successful response carries an error object")
        self.info = info


def _svg_size(data: bytes) -> tuple[int, int]:
    """The declared width and height of an SVG, from its attributes or viewBox; 0 if none."""
    head = data[:4096].decode("utf-8", "replace")
    start = head.lower().find("<svg")
    tag = head[start : head.find(">", start) + 1] if start >= 0 else ""
    attributes = dict(re.findall(r'([\w:-]+)\s*=\s*["\']([^"\']*)["\']', tag))

    def length(name: str) -> int:
        match = _SVG_LENGTH.match(attributes.get(name, ""))
        return round(float(match.group(1))) if match else 0

    width, height = length("width"), length("height")
    if not (width and height):
        box = attributes.get("viewBox", "").replace(",", " ").split()
        try:
            width, height = round(float(box[2])), round(float(box[3]))
        except (IndexError, ValueError):
            return 0, 0
    return max(width, 0), max(height, 0)


def _looks_like_svg(data: bytes) -> bool:
    head = data[:1024].lstrip(b"\xef\xbb\xbf \t\r\n")
    return head[:1] == b"<" and _SVG_ROOT.search(data[:4096]) is not None


def is_complete(kind: str, data: bytes) -> bool:
    """Whether the file ends where its format says it ends: a truncated image is refused before
    it is posted as a broken picture. Structural checks only, so they cost next to nothing."""
    tail = data.rstrip(b"\x00")
    if kind == "jpeg":
        return tail.endswith(b"\xff\xd9")
    if kind == "gif":
        return tail.endswith(b"\x3b")
    if kind == "webp":
        return len(data) >= 12 and int.from_bytes(data[4:8], "little") + 8 <= len(data)
    if kind == "png":
        return tail.endswith(_PNG_END)
    return True


def identify_image(
    data: bytes, *, limits: ImageLimits, revised_prompt: str | None
) -> GeneratedImage:
    """Check that ``data`` is a whole image we can upload; learn its format and dimensions.

    Pixels are not decoded (Pillow opens lazily, and completeness is read from the file's
    structure), so this is cheap even for large images.
    """
    if not data:
        raise MalformedResponse("an image in the response is empty")
    if len(data) > limits.max_bytes:
        raise ResponseTooLarge(
            f"an image of {len(data):,} bytes exceeds the {limits.max_bytes:,} cap"
        )
    if _looks_like_svg(data):
        width, height = _svg_size(data)
        return GeneratedImage(data, "svg", width, height, revised_prompt)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                kind = IMAGE_FORMATS.get(image.format or "")
                width, height = image.size
                frames = int(getattr(image, "n_frames", 1))
    except Image.DecompressionBombError:
        raise MalformedResponse("an image in the response has far too many pixels") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError):
        # Not the exception's text: Pillow's names a Python object ("<_io.BytesIO at 0x...>").
        raise MalformedResponse("an item of the response is not a readable image") from None
    if kind is None:
        raise MalformedResponse("an item of the response is an image in an unsupported format")
    if frames > limits.max_frames:
        raise MalformedResponse(f"an animated image has {frames} frames, over {limits.max_frames}")
    if width * height > limits.max_pixels:
        raise MalformedResponse(
            f"an image of {width}x{height} is far larger than the size asked for"
        )
    if not is_complete(kind, data):
        raise MalformedResponse(f"a {kind} image in the response is cut short")
    return GeneratedImage(data, kind, width, height, revised_prompt, frames)


def _decode_b64(encoded: str | memoryview, *, max_bytes: int) -> bytes:
    """Base64, strict first (pybase64: SIMD, 30 times the standard library's speed here).

    Decoding holds the GIL throughout, so its speed is what keeps the event loop responsive
    even though it runs in a worker thread: 6 ms per 1.5 MB image with ``binascii``, 0.2 ms here.
    Some gateways wrap the text in lines or send a data URL: those are accepted too (the image
    is still checked afterwards).
    """
    # Base64 inflates by 4/3: refuse before decoding what would be too large anyway.
    if len(encoded) > max_bytes * 4 // 3 + 4 + max_bytes // 19:  # room for line breaks
        raise ResponseTooLarge(f"an encoded image of {len(encoded):,} characters exceeds the cap")
    try:
        return pybase64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        pass
    raw = encoded.encode("ascii", "replace") if isinstance(encoded, str) else bytes(encoded)
    raw = _DATA_URL.sub(b"", raw, count=1)
    raw = raw.translate(None, b" \t\r\n")
    try:
        return pybase64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedResponse("an image in the response is not valid base64") from None


class _FallBack(Exception):
    """The shortcut through a large body does not apply; parse it the plain way."""


@dataclass(frozen=True, slots=True)
class _Lifted:
    body: bytes  # the JSON with each lifted value replaced by its placeholder
    values: list[memoryview]
    marker: str  # placeholders are marker + index; random, so no body can forge one

    def resolve(self, encoded: str, used: set[int]) -> str | memoryview:
        """The lifted text a placeholder stands for (each exactly once), or the value itself."""
        if not encoded.startswith(self.marker):
            return encoded
        number = encoded.removeprefix(self.marker)
        if not number.isdigit() or int(number) >= len(self.values) or int(number) in used:
            raise _FallBack
        used.add(int(number))
        return self.values[int(number)]


def _lift_encoded_images(body: bytes) -> _Lifted | None:
    """Cut each large ``b64_json`` string out of the raw JSON, leaving a short placeholder.

    ``json.loads`` on a body of several megabytes holds the GIL for tens of milliseconds,
    almost all of it copying base64 text into Python strings. Base64 has no quotes or escapes,
    so each value runs from its opening quote to the next quote and can be taken as it is.
    Anything unexpected returns None, and the body is parsed the plain way; :func:`_parse`
    checks that every placeholder landed where an image belongs.
    """
    view = memoryview(body)
    nonce = secrets.token_hex(8)
    pieces: list[bytes] = []
    lifted: list[memoryview] = []
    copied = 0  # body[:copied] is already in pieces
    position = 0
    while (key := body.find(_B64_KEY, position)) >= 0:
        if key and body[key - 1] == 0x5C:  # preceded by a backslash: let json decide
            return None
        cursor = key + len(_B64_KEY)
        while body[cursor : cursor + 1] in _BLANK:
            cursor += 1
        if body[cursor : cursor + 1] != b":":
            position = cursor
            continue
        cursor += 1
        while body[cursor : cursor + 1] in _BLANK:
            cursor += 1
        if body[cursor : cursor + 1] != b'"':
            position = cursor
            continue
        start = cursor + 1
        end = body.find(b'"', start)
        if end < 0:
            return None
        position = end + 1
        if end - start < LIFT_AT_LEAST:
            continue
        if body.find(b"\\", start, end) >= 0:
            return None
        pieces.append(body[copied:start])
        pieces.append(f"\\u0000{nonce}:{len(lifted)}".encode())
        lifted.append(view[start:end])
        copied = end
    if not lifted:
        return None
    pieces.append(body[copied:])
    return _Lifted(b"".join(pieces), lifted, f"\x00{nonce}:")


def parse_body(body: bytes, *, limits: ImageLimits, expected: int) -> ParsedBody:
    """Parse a 2xx body holding at most ``expected`` images (any more are dropped unread).

    Raises :class:`MalformedResponse` for anything that is not images, :class:`ErrorInBody`
    for an error object.
    """
    lifted = _lift_encoded_images(body) if len(body) >= LIFT_AT_LEAST else None
    if lifted is not None:
        try:
            return _parse(lifted.body, lifted, limits, expected)
        except _FallBack:
            pass
    return _parse(body, None, limits, expected)


def _parse(body: bytes, lifted: _Lifted | None, limits: ImageLimits, expected: int) -> ParsedBody:
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        if lifted:
            raise _FallBack from None
        stripped = body.lstrip()[:1]
        kind = "an HTML page" if stripped == b"<" else "something that is not JSON"
        raise MalformedResponse(f"the image service answered with {kind}") from None
    if not isinstance(document, dict):
        raise MalformedResponse("the response is not a JSON object")
    items = document.get("data")
    if document.get("error") and not (isinstance(items, list) and items):
        raise ErrorInBody(_error_fields(document))
    if not isinstance(items, list) or not items:
        if "choices" in document:
            raise MalformedResponse("the gateway answered with a chat completion, not images")
        raise MalformedResponse("the response holds no images")
    extra = max(len(items) - expected, 0)
    if extra and lifted is not None:
        raise _FallBack  # which lifted values the dropped items held is not worth tracking
    items = items[:expected]

    images: list[GeneratedImage | None] = []
    urls: dict[int, str] = {}
    revised: list[str | None] = []
    used: set[int] = set()
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise MalformedResponse(f"item {index} of the response is not an object")
        revised_prompt = item.get("revised_prompt")
        if not isinstance(revised_prompt, str) or not revised_prompt.strip():
            revised_prompt = None
        revised.append(revised_prompt)
        encoded = item.get("b64_json")
        url = item.get("url")
        if isinstance(encoded, str) and encoded:
            source = lifted.resolve(encoded, used) if lifted else encoded
            data = _decode_b64(source, max_bytes=limits.max_bytes)
            images.append(identify_image(data, limits=limits, revised_prompt=revised_prompt))
        elif isinstance(url, str) and url:
            urls[index] = url
            images.append(None)
        else:
            raise MalformedResponse(f"item {index} of the response has neither b64_json nor url")

    if lifted is not None and len(used) != len(lifted.values):
        raise _FallBack  # a lifted value was not an image of `data`: the shortcut misread
    usage = document.get("usage")
    return ParsedBody(
        images=images,
        urls=urls,
        revised_prompts=revised,
        usage=usage if isinstance(usage, dict) else None,
        extra_items=extra,
    )


@dataclass(frozen=True, slots=True)
class ErrorBody:
    """What an error answer says, from whichever of the shapes in use it came in."""

    message: str | None
    type: str | None
    code: str | None
    param: str | None
    is_html: bool = False


def _text(value: object) -> str | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)  # some gateways send numeric codes
    return value if isinstance(value, str) and value.strip() else None


def _fastapi_detail(detail: list[Any]) -> ErrorBody:
    """FastAPI's ``{"detail": [{"loc": [...], "msg": ..., "type": ...}]}``."""
    first = next((item for item in detail if isinstance(item, dict)), {})
    location = first.get("loc")
    param = None
    if isinstance(location, list) and location:
        param = _text(location[-1])
    messages = [_text(item.get("msg")) for item in detail if isinstance(item, dict)]
    text = "; ".join(m for m in messages if m) or None
    if text and param:
        text = f"{param}: {text}"
    return ErrorBody(text, _text(first.get("type")), None, param)


def _error_fields(document: dict[str, Any]) -> ErrorBody:
    error = document.get("error")
    if isinstance(error, str):  # some gateways send {"error": "text"}
        return ErrorBody(error, None, None, None)
    if isinstance(error, dict):
        return ErrorBody(
            _text(error.get("message")),
            _text(error.get("type")),
            _text(error.get("code")),
            _text(error.get("param")),
        )
    detail = document.get("detail")
    if isinstance(detail, list):
        return _fastapi_detail(detail)
    title = _text(document.get("title"))  # RFC 9457 problem details
    detail_text = _text(detail)
    if title or detail_text:
        message = f"{title}: {detail_text}" if title and detail_text else title or detail_text
        return ErrorBody(message, None, None, None)  # its `type` is a URI, not a kind
    return ErrorBody(_text(document.get("message")), None, _text(document.get("code")), None)


def parse_error_body(body: bytes) -> ErrorBody:
    """Read an error answer in OpenAI's shape (``{"error": {...}}``), RFC 9457 problem details
    (``title``, ``detail``), FastAPI's ``{"detail": [...]}`` or ``{"message": ...}``."""
    is_html = body.lstrip()[:1] == b"<"
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return ErrorBody(None, None, None, None, is_html)
    if not isinstance(document, dict):
        return ErrorBody(None, None, None, None)
    return _error_fields(document)
