"""Reading a streamed answer (``"stream": true``): partial images as they come, then the images.

The stream is Server-Sent Events (:mod:`bot.images.sse`): ``image_generation.partial_image``
events (a preview each, handed to the caller at once and forgotten), then one
``image_generation.completed`` event per image. The stream ends after the last image, at a
``data: [DONE]`` line, or when the connection closes; an ``error`` event, or a data object with
an ``error`` key, is the service's error and is classified like an error answer. Every byte
counts against the response cap, however the events are cut.

A stream holds no processing slot while previews arrive (they are small, and the generation
may take a minute); it takes one when its first image arrives, before that image is decoded.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from .errors import MalformedResponse, ResponseTooLarge
from .processing import run_off_loop_if_large
from .response import (
    LIFT_AT_LEAST,
    ErrorInBody,
    GeneratedImage,
    ImageLimits,
    ParsedBody,
    _decode_b64,
    _error_fields,
    _FallBack,
    _lift_encoded_images,
    identify_image,
)
from .sse import ServerSentEvent, SSEParser

log = logging.getLogger(__name__)

# The most a stream may hold of one event before it takes a processing slot: previews are
# read without one (most are small), but nothing large is.
UNSLOTTED_BYTES = 8 * 1024 * 1024

EVENT_STREAM = "text/event-stream"
PARTIAL_EVENTS = frozenset({"image_generation.partial_image", "image_edit.partial_image"})
COMPLETED_EVENTS = frozenset({"image_generation.completed", "image_edit.completed"})
DONE = b"[DONE]"


@dataclass(frozen=True, slots=True, repr=False)
class PartialImage:
    """A preview of an image still being generated, as sent: still base64, since most previews
    are never shown (a newer one replaces them first) and decoding a 4K one takes milliseconds.
    :meth:`decode` (in a worker thread) gives its bytes, not checked further."""

    index: int  # partial_image_index, from 0
    encoded: str | memoryview
    max_bytes: int
    max_pixels: int  # as for the final images: a preview is never decoded beyond this

    def decode(self) -> bytes | None:
        """The image's bytes, or None where they are not valid base64 or too large."""
        try:
            return _decode_b64(self.encoded, max_bytes=self.max_bytes)
        except MalformedResponse as exc:
            log.warning("a partial image of the stream was dropped: %s", exc)
            return None

    def __repr__(self) -> str:
        return f"PartialImage({self.index}, {len(self.encoded):,} base64 characters)"


OnPartial = Callable[[PartialImage], None]


def is_event_stream(response: aiohttp.ClientResponse) -> bool:
    """Whether the answer is a stream; a gateway may answer a stream request with plain JSON."""
    return response.content_type.lower() == EVENT_STREAM


@dataclass(frozen=True, slots=True)
class _Event:
    document: dict[str, Any]
    encoded: str | memoryview | None  # the b64_json value, lifted out of the JSON where large


class _ParseWhole(Exception):
    """A large event whose image could not be lifted out: it must be parsed whole, which takes
    long enough to be done off the event loop."""


def _load(data: bytes, *, whole: bool = True) -> _Event:
    """The event's JSON object; a large ``b64_json`` is lifted out before ``json.loads`` (which
    would hold the GIL copying it into a str, see :func:`~bot.images.response.parse_body`).
    ``whole``: False where a large event that cannot be lifted must not be parsed here (raises
    :class:`_ParseWhole`)."""
    lifted = _lift_encoded_images(data) if len(data) >= LIFT_AT_LEAST else None
    if lifted is not None:
        try:
            document = json.loads(lifted.body)
            encoded = document.get("b64_json") if isinstance(document, dict) else None
            if isinstance(encoded, str):
                used: set[int] = set()
                value = lifted.resolve(encoded, used)
                if len(used) == len(lifted.values):
                    return _Event(document, value)
        except (ValueError, _FallBack):
            pass
    if not whole and len(data) >= LIFT_AT_LEAST:
        raise _ParseWhole
    document = json.loads(data)
    if not isinstance(document, dict):
        raise MalformedResponse("an event of the image stream is not a JSON object")
    encoded = document.get("b64_json")
    return _Event(document, encoded if isinstance(encoded, str) else None)


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _combine(usages: list[Mapping[str, Any]], key: str, combine: Callable[[list[int]], int]) -> Any:
    """``key`` of every usage combined; a details table field by field."""
    values = [usage.get(key) for usage in usages]
    counts = [count for value in values if (count := _count(value)) is not None]
    if counts:
        return combine(counts)
    tables = [value for value in values if isinstance(value, Mapping)]
    if not tables:
        return None
    fields = dict.fromkeys(name for table in tables for name in table)
    return {name: _combine(tables, name, combine) for name in fields}


def merge_usage(usages: list[Mapping[str, Any]]) -> dict[str, Any] | None:
    """One ``usage`` for the request from each image's completed event (with several images,
    nothing says whether each reports its own or the request's). The prompt is read once: its
    input tokens count once, the most any event reports. Output tokens add up: each image's
    are its own, and adding never settles a request below what it cost."""
    if len(usages) <= 1:
        return dict(usages[0]) if usages else None
    merged: dict[str, Any] = {}
    for key, combine in (
        ("input_tokens", max),
        ("input_tokens_details", max),
        ("output_tokens", sum),
        ("output_tokens_details", sum),
    ):
        value = _combine(usages, key, combine)
        if value is not None:
            merged[key] = value
    inputs, outputs = _count(merged.get("input_tokens")), _count(merged.get("output_tokens"))
    if inputs is not None and outputs is not None:
        merged["total_tokens"] = inputs + outputs
    return merged


class _StreamReader:
    def __init__(
        self,
        *,
        limits: ImageLimits,
        expected: int,
        on_partial: OnPartial | None,
        before_images: Callable[[], Awaitable[None]],
    ) -> None:
        self.limits = limits
        self.expected = expected
        self.on_partial = on_partial
        self.before_images = before_images
        self.holding_slot = False
        self.images: list[GeneratedImage] = []
        self.usages: list[Mapping[str, Any]] = []
        self.extra = 0
        self.partials = 0

    async def handle(self, event: ServerSentEvent, *, at_end: bool) -> bool:
        """Act on one event; True once nothing more is needed from the stream."""
        if event.data.strip() == DONE:
            return True
        try:
            data = event.data
            try:
                loaded = await run_off_loop_if_large(len(data), lambda: _load(data, whole=False))
            except _ParseWhole:  # a large event that is not a plain image event: in a thread
                loaded = await asyncio.to_thread(_load, data)
        except (ValueError, RecursionError):
            if at_end:
                raise MalformedResponse(
                    "the image stream was cut off in the middle of an event"
                ) from None
            raise MalformedResponse("an event of the image stream is not JSON") from None
        document = loaded.document
        kind = document.get("type")
        kind = kind if isinstance(kind, str) else event.event
        if event.event == "error" or kind == "error" or document.get("error"):
            raise ErrorInBody(_error_fields(document))
        if kind in PARTIAL_EVENTS:
            self._partial(document, loaded.encoded)
            return False
        if kind in COMPLETED_EVENTS:
            return await self._completed(document, loaded.encoded)
        log.debug("ignored an image stream event of type %.80r", kind)
        return False

    def _partial(self, document: dict[str, Any], encoded: str | memoryview | None) -> None:
        index = document.get("partial_image_index")
        index = index if isinstance(index, int) and not isinstance(index, bool) else self.partials
        self.partials += 1
        if self.on_partial is None or not encoded:
            return
        # Only a preview: decoded where it is shown; the images are checked when they come.
        self.on_partial(PartialImage(index, encoded, self.limits.max_bytes, self.limits.max_pixels))

    async def hold_slot(self) -> None:
        """Await ``before_images`` (a processing slot), once."""
        if not self.holding_slot:
            self.holding_slot = True
            await self.before_images()

    async def _completed(self, document: dict[str, Any], encoded: str | memoryview | None) -> bool:
        if len(self.images) >= self.expected:
            self.extra += 1
            return True
        if not encoded:
            raise MalformedResponse("a completed event of the image stream carries no image")
        await self.hold_slot()
        limits = self.limits
        self.images.append(
            await run_off_loop_if_large(
                len(encoded),
                lambda: identify_image(
                    _decode_b64(encoded, max_bytes=limits.max_bytes),
                    limits=limits,
                    revised_prompt=None,
                ),
            )
        )
        usage = document.get("usage")
        if isinstance(usage, Mapping):
            self.usages.append(usage)
        # Every image asked for is here: nothing later in the stream is needed (a gateway that
        # leaves the connection open would otherwise hold the request until its time runs out).
        return len(self.images) >= self.expected

    def result(self) -> ParsedBody:
        if not self.images:
            raise MalformedResponse("the image stream ended before the image was complete")
        return ParsedBody(
            images=list(self.images),
            urls={},
            revised_prompts=[None] * len(self.images),
            usage=merge_usage(self.usages),
            extra_items=self.extra,
            previews=self.partials,
        )


async def read_event_stream(
    response: aiohttp.ClientResponse,
    *,
    cap: int,
    limits: ImageLimits,
    expected: int,
    on_partial: OnPartial | None = None,
    before_images: Callable[[], Awaitable[None]],
) -> ParsedBody:
    """Read a streamed answer into the images it carries (at most ``expected``).

    ``on_partial`` is called with each preview; ``before_images`` is awaited once, when the first
    image has arrived and before it is decoded, or sooner, once more than UNSLOTTED_BYTES of an
    event are held. Raises :class:`ErrorInBody` for an error event,
    :class:`ResponseTooLarge` past ``cap`` bytes, :class:`MalformedResponse` for a stream cut
    short before any image, or one that is not a stream of image events.
    """
    reader = _StreamReader(
        limits=limits, expected=expected, on_partial=on_partial, before_images=before_images
    )
    parser = SSEParser()
    received = 0
    try:
        async for chunk, _ in response.content.iter_chunks():
            received += len(chunk)
            if received > cap:
                raise ResponseTooLarge(f"the image stream exceeded the {cap:,}-byte cap")
            for event in parser.feed(chunk):
                if await reader.handle(event, at_end=False):
                    return reader.result()
            if not reader.holding_slot and parser.pending_bytes > UNSLOTTED_BYTES:
                # A large event on its way (an image, or an outsized preview): the rest of it
                # waits in the socket until a slot is free, so that memory stays bounded by the
                # slots, not by the streams in flight.
                await reader.hold_slot()
    except aiohttp.ClientPayloadError:
        # The connection dropped mid-stream. Whole images that came before it are delivered
        # (they were generated, and perhaps billed); with none, the stream is a failure.
        if not reader.images:
            raise MalformedResponse(
                "the image stream was cut off before the image was complete"
            ) from None
        log.warning(
            "the image stream was cut off after %d of %d image(s)", len(reader.images), expected
        )
        return reader.result()
    for event in parser.close():
        if await reader.handle(event, at_end=True):
            break
    return reader.result()
