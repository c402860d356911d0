"""Turning an Images API response body into images, or a typed error. Never anything else.

These functions are pure and synchronous so the client can run them in a worker thread when the
body is large (a 10-image base64 body is tens of megabytes: parsing it on the event loop would
stall every other interaction).
"""

from __future__ import annotations

import binascii
import io
import json
import secrets
import warnings
from dataclasses import dataclass
from typing import Any

import pybase64
from PIL import Image, UnidentifiedImageError

from .errors import MalformedResponse, ResponseTooLarge

IMAGE_FORMATS = {"PNG": "png", "JPEG": "jpeg", "WEBP": "webp", "GIF": "gif"}

LIFT_AT_LEAST = 64 * 1024  # base64 values shorter than this are left to json
_B64_KEY = b'"b64_json"'
_BLANK = (b" ", b"\t", b"\n", b"\r")


@dataclass(frozen=True, slots=True, repr=False)
class GeneratedImage:
    data: bytes
    format: str  # "png", "jpeg", "webp" or "gif", from the bytes themselves
    width: int
    height: int
    revised_prompt: str | None = None

    def __repr__(self) -> str:
        return (
            f"GeneratedImage({self.format}, {self.width}x{self.height}, {len(self.data):,} bytes)"
        )


@dataclass(frozen=True, slots=True)
class ParsedBody:
    """A successful body: images already decoded, plus ``url`` items still to download."""

    images: list[GeneratedImage | None]  # None where the item is a URL to fetch
    urls: dict[int, str]
    revised_prompts: list[str | None]
    usage: dict[str, Any] | None = None
    created: int | None = None


def identify_image(data: bytes, *, max_bytes: int, revised_prompt: str | None) -> GeneratedImage:
    """Check that ``data`` is an image we can upload and learn its format and dimensions.

    Only the header is read (Pillow opens lazily), so this is cheap even for large images.
    """
    if not data:
        raise MalformedResponse("an image in the response is empty")
    if len(data) > max_bytes:
        raise ResponseTooLarge(f"an image of {len(data):,} bytes exceeds the {max_bytes:,} cap")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                kind = IMAGE_FORMATS.get(image.format or "")
                width, height = image.size
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise MalformedResponse(f"an item of the response is not an image ({exc})") from None
    if kind is None:
        raise MalformedResponse(f"an item of the response is an unsupported {image.format} image")
    return GeneratedImage(data, kind, width, height, revised_prompt)


def _decode_b64(encoded: str | memoryview, *, max_bytes: int) -> bytes:
    """Strict base64 (pybase64: SIMD, 30 times the standard library's speed here).

    Decoding holds the GIL throughout, so its speed is what keeps the event loop responsive
    even though it runs in a worker thread: 6 ms per 1.5 MB image with ``binascii``, 0.2 ms here.
    """
    # Base64 inflates by 4/3: refuse before decoding what would be too large anyway.
    if len(encoded) > max_bytes * 4 // 3 + 4:
        raise ResponseTooLarge(f"an encoded image of {len(encoded):,} characters exceeds the cap")
    try:
        return pybase64.b64decode(encoded, validate=True)
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


def parse_body(body: bytes, *, max_image_bytes: int) -> ParsedBody:
    """Parse a 2xx body. Raises :class:`MalformedResponse` for anything that is not images."""
    lifted = _lift_encoded_images(body) if len(body) >= LIFT_AT_LEAST else None
    if lifted is not None:
        try:
            return _parse(lifted.body, lifted, max_image_bytes)
        except _FallBack:
            pass
    return _parse(body, None, max_image_bytes)


def _parse(body: bytes, lifted: _Lifted | None, max_image_bytes: int) -> ParsedBody:
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
    if document.get("error"):
        raise MalformedResponse("a successful response carries an error object")
    items = document.get("data")
    if not isinstance(items, list) or not items:
        if "choices" in document:
            raise MalformedResponse("the gateway answered with a chat completion, not images")
        raise MalformedResponse("the response holds no images")

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
            data = _decode_b64(source, max_bytes=max_image_bytes)
            images.append(
                identify_image(data, max_bytes=max_image_bytes, revised_prompt=revised_prompt)
            )
        elif isinstance(url, str) and url:
            urls[index] = url
            images.append(None)
        else:
            raise MalformedResponse(f"item {index} of the response has neither b64_json nor url")

    if lifted is not None and len(used) != len(lifted.values):
        raise _FallBack  # a lifted value was not an image of `data`: the shortcut misread
    usage = document.get("usage")
    created = document.get("created")
    return ParsedBody(
        images=images,
        urls=urls,
        revised_prompts=revised,
        usage=usage if isinstance(usage, dict) else None,
        created=created if isinstance(created, int) and not isinstance(created, bool) else None,
    )


@dataclass(frozen=True, slots=True)
class ErrorBody:
    message: str | None
    type: str | None
    code: str | None
    param: str | None
    is_html: bool


def parse_error_body(body: bytes) -> ErrorBody:
    """Read ``{"error": {...}}`` where there is one; tolerate anything else."""
    is_html = body.lstrip()[:1] == b"<"
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return ErrorBody(None, None, None, None, is_html)
    error = document.get("error") if isinstance(document, dict) else None
    if isinstance(error, str):  # some gateways send {"error": "text"}
        return ErrorBody(error, None, None, None, False)
    if not isinstance(error, dict):
        message = document.get("message") if isinstance(document, dict) else None
        return ErrorBody(message if isinstance(message, str) else None, None, None, None, False)

    def text(key: str) -> str | None:
        value = error.get(key)
        return value if isinstance(value, str) and value else None

    return ErrorBody(text("message"), text("type"), text("code"), text("param"), False)
