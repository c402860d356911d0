"""Turning an Images API response body into images, or a typed error. Never anything else.

These functions are pure and synchronous so the client can run them in a worker thread when the
body is large (a 10-image base64 body is tens of megabytes: parsing it on the event loop would
stall every other interaction).
"""

from __future__ import annotations

import binascii
import io
import json
import warnings
from base64 import b64decode
from dataclasses import dataclass, field
from typing import Any

from PIL import Image, UnidentifiedImageError

from .errors import MalformedResponse, ResponseTooLarge

IMAGE_FORMATS = {"PNG": "png", "JPEG": "jpeg", "WEBP": "webp", "GIF": "gif"}


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
    extra: dict[str, Any] = field(default_factory=dict)


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


def _decode_b64(text: str, *, max_bytes: int) -> bytes:
    # Base64 inflates by 4/3: refuse before decoding what would be too large anyway.
    if len(text) > max_bytes * 4 // 3 + 4:
        raise ResponseTooLarge(f"an encoded image of {len(text):,} characters exceeds the cap")
    try:
        return b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedResponse("an image in the response is not valid base64") from None


def parse_body(body: bytes, *, max_image_bytes: int) -> ParsedBody:
    """Parse a 2xx body. Raises :class:`MalformedResponse` for anything that is not images."""
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
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
            data = _decode_b64(encoded, max_bytes=max_image_bytes)
            images.append(
                identify_image(data, max_bytes=max_image_bytes, revised_prompt=revised_prompt)
            )
        elif isinstance(url, str) and url:
            urls[index] = url
            images.append(None)
        else:
            raise MalformedResponse(f"item {index} of the response has neither b64_json nor url")

    usage = document.get("usage")
    created = document.get("created")
    extra = {
        key: document[key]
        for key in ("background", "output_format", "size", "quality")
        if isinstance(document.get(key), str)
    }
    return ParsedBody(
        images=images,
        urls=urls,
        revised_prompts=revised,
        usage=usage if isinstance(usage, dict) else None,
        created=created if isinstance(created, int) and not isinstance(created, bool) else None,
        extra=extra,
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
