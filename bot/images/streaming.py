"""Reading a streamed answer (``"stream": true``): partial images as they come, then the images.

The stream is Server-Sent Events (:mod:`bot.images.sse`): ``image_generation.partial_image``
events (a preview each, handed to the caller at once and forgotten), then one
``image_generation.completed`` event per image. The stream ends after the last image, at a
``data: [DONE]`` line, or when the connection closes; an ``error`` event, or a data object with
an ``error`` key, is the service's error and is classified like an error answer. Every byte
counts against the response cap, however the events are cut.

A stream holds no processing slot while previews arrive (the generation may take a minute,
and a slot held meanwhile would do no work); it takes one when its first image has arrived,
before that image is decoded, or once it holds more than :data:`UNSLOTTED_BYTES` of one event.
Until then, what it holds is covered by room (:mod:`bot.images.processing`): the event being
read, past its first :data:`FREE_BYTES`, and each preview until whoever shows it is done with it
(:meth:`PartialImage.release`). Where the room has none to give, a preview (its ``event:`` line
says so) is let go, read past as it comes, keeping nothing; any other event waits, reading no
further (the rest stays in the socket), for room or a slot.
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
from .processing import Grant, Lease, run_off_loop_if_large
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
# read without one (with room), but nothing larger than this is.
UNSLOTTED_BYTES = 8 * 1024 * 1024
# What a stream may hold of one event with no room (keep-alives, progress and error events, small
# previews): a small constant per request, like the socket's buffers.
FREE_BYTES = 64 * 1024

EVENT_STREAM = "text/event-stream"
PARTIAL_EVENTS = frozenset({"image_generation.partial_image", "image_edit.partial_image"})
COMPLETED_EVENTS = frozenset({"image_generation.completed", "image_edit.completed"})
DONE = b"[DONE]"


@dataclass(frozen=True, slots=True, repr=False)
class PartialImage:
    """A preview of an image still being generated, as sent: still base64, since most previews
    are never shown (a newer one replaces them first) and decoding a 4K one takes milliseconds.
    :meth:`decode` (in a worker thread) gives its bytes, not checked further. Whoever keeps it
    calls :meth:`release` once done with it: the room it holds goes back."""

    index: int  # partial_image_index, from 0
    encoded: str | memoryview
    max_bytes: int
    max_pixels: int  # as for the final images: a preview is never decoded beyond this
    grant: Grant | None = None  # the room covering its bytes, where it took any

    def release(self) -> None:
        """Its bytes are no longer kept: the room they took goes back. Safe to call twice."""
        if self.grant is not None:
            self.grant.release()

    def droppable(self, drop: Callable[[], None]) -> None:
        """While it waits to be shown: ``drop`` lets go of it where the room is needed for what
        a stream must read (see :meth:`bot.images.processing.Grant.droppable`)."""
        if self.grant is not None:
            self.grant.droppable(drop)

    def keep(self) -> None:
        """Being shown: no longer droppable."""
        if self.grant is not None:
            self.grant.keep()

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


Waiting = Callable[[Awaitable[None]], Awaitable[None]]


async def wait_plainly(waiting: Awaitable[None]) -> None:
    await waiting


class _StreamReader:
    def __init__(
        self,
        *,
        limits: ImageLimits,
        expected: int,
        on_partial: OnPartial | None,
        lease: Lease | None,
        waiting: Waiting,
        on_images: Callable[[], None] | None = None,
    ) -> None:
        self.limits = limits
        self.expected = expected
        self.on_partial = on_partial
        self.on_images = on_images
        self.lease = lease
        self.waiting = waiting
        # Covers the event being read (none without a lease: nothing bounds it then).
        self.grant = lease.grant() if lease is not None else None
        self.images: list[GeneratedImage] = []
        self.usages: list[Mapping[str, Any]] = []
        self.extra = 0
        self.partials = 0

    async def handle(self, event: ServerSentEvent, grant: Grant | None, *, at_end: bool) -> bool:
        """Act on one event (``grant``: the room its bytes hold, handed on with a preview);
        True once nothing more is needed from the stream."""
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
            self._partial(document, loaded.encoded, grant)
            return False
        if kind in COMPLETED_EVENTS:
            return await self._completed(document, loaded.encoded)
        log.debug("ignored an image stream event of type %.80r", kind)
        return False

    def _partial(
        self, document: dict[str, Any], encoded: str | memoryview | None, grant: Grant | None
    ) -> None:
        index = document.get("partial_image_index")
        index = index if isinstance(index, int) and not isinstance(index, bool) else self.partials
        self.partials += 1
        if self.on_partial is None or not encoded:
            return
        # Only a preview: decoded where it is shown; the images are checked when they come. Its
        # room goes with it, made up to its size where the room allows (the last chunk of the
        # event came after the room was last asked for; past that, it is within FREE_BYTES and
        # a chunk). With a slot, it needs none: it is let go before the slot is.
        kept = grant.split(grant.size) if grant is not None else None
        if kept is not None and not self.holding_slot:
            kept.resize(max(kept.size, len(encoded)))
        limits = self.limits
        self.on_partial(PartialImage(index, encoded, limits.max_bytes, limits.max_pixels, kept))

    @property
    def holding_slot(self) -> bool:
        return self.lease is None or self.lease.held

    async def hold_slot(self) -> None:
        """Take a processing slot (once; without a lease, there is none to take)."""
        if self.lease is not None and not self.lease.held:
            await self.waiting(self.lease.hold())
        self.release()

    async def cover(self, parser: SSEParser) -> None:
        """Room for what is held of the event being read, past its first FREE_BYTES, before
        reading on. An event past UNSLOTTED_BYTES waits for a slot instead; a preview (its
        ``event:`` line says so) the room has no space for is let go, read past as it comes
        (previews are a courtesy: an image must not wait for one); any other event (an image)
        waits for room, or a slot, whichever comes first."""
        if self.holding_slot or self.grant is None or self.lease is None:
            return
        pending = parser.pending_bytes
        if pending <= FREE_BYTES:
            self.grant.resize(0)
            return
        if pending > UNSLOTTED_BYTES:
            # An outsized event (a large image, or preview): the rest of it waits in the socket
            # until a slot is free.
            await self.hold_slot()
            return
        if self.grant.resize(pending):
            return
        if parser.event_in_progress in PARTIAL_EVENTS:
            parser.skip_event()
            self.grant.release()
            log.debug("a preview was let go: no room outside the processing slots")
            return
        await self.waiting(self.lease.cover(self.grant, pending))

    def release(self) -> None:
        if self.grant is not None:
            self.grant.release()

    async def _completed(self, document: dict[str, Any], encoded: str | memoryview | None) -> bool:
        if len(self.images) >= self.expected:
            self.extra += 1
            return True
        if not encoded:
            raise MalformedResponse("a completed event of the image stream carries no image")
        if self.on_images is not None and not self.images:
            # Before the wait for a slot (seconds, in a burst): whoever shows the previews stops
            # now, rather than spend edits and encoding on them while the images are in hand.
            self.on_images()
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

    async def feed(self, events: list[ServerSentEvent], *, at_end: bool) -> bool:
        """Handle the events one chunk completed; True once nothing more is needed."""
        for event in events:
            # The event's bytes leave the event in progress, with the room they held.
            grant = self.grant.split(len(event.data)) if self.grant is not None else None
            try:
                if await self.handle(event, grant, at_end=at_end):
                    return True
            finally:
                if grant is not None:
                    grant.release()  # unless a preview took it on
        return False


async def read_event_stream(
    response: aiohttp.ClientResponse,
    *,
    cap: int,
    limits: ImageLimits,
    expected: int,
    on_partial: OnPartial | None = None,
    lease: Lease | None = None,
    waiting: Waiting = wait_plainly,
    on_images: Callable[[], None] | None = None,
) -> ParsedBody:
    """Read a streamed answer into the images it carries (at most ``expected``).

    ``on_partial`` is called with each preview, ``on_images`` when the first image has arrived
    (before the wait for a slot). With a ``lease``, the stream takes its
    processing slot when the first image has arrived and before it is decoded, or sooner, once
    more than UNSLOTTED_BYTES of an event are held; until then what it holds is covered by the
    lease's room, and it reads no further while there is none. Every wait for a slot or room
    goes through ``waiting`` (the caller's deadline is paused there). Raises
    :class:`ErrorInBody` for an error event, :class:`ResponseTooLarge` past ``cap`` bytes,
    :class:`MalformedResponse` for a stream cut short before any image, or one that is not a
    stream of image events.
    """
    reader = _StreamReader(
        limits=limits,
        expected=expected,
        on_partial=on_partial,
        lease=lease,
        waiting=waiting,
        on_images=on_images,
    )
    parser = SSEParser()
    received = 0
    try:
        try:
            async for chunk, _ in response.content.iter_chunks():
                received += len(chunk)
                if received > cap:
                    raise ResponseTooLarge(f"the image stream exceeded the {cap:,}-byte cap")
                if await reader.feed(parser.feed(chunk), at_end=False):
                    return reader.result()
                # Before reading on: room for what the bot now holds of the next event, or a
                # slot; until then, the rest waits in the socket (bounded by the slots, not by
                # the streams in flight).
                await reader.cover(parser)
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
        await reader.feed(parser.close(), at_end=True)
        return reader.result()
    finally:
        reader.release()
