"""An incremental Server-Sent Events parser for bytes as they arrive.

Hand-written because no maintained client fits: ``aiohttp-sse-client`` (last released 2021) and
``aiosseclient`` read the body line by line through aiohttp's reader, which refuses a line over
its 512 KiB limit, and one ``data:`` line of the Images API holds a whole base64 image of
several megabytes; ``httpx-sse`` needs httpx; ``sse-starlette`` and ``aiohttp-sse`` are servers.

It follows the WHATWG event-stream rules the API's streams need: lines end in CRLF, LF or CR (a
CR at the end of one chunk may be the first half of a CRLF in the next); a blank line dispatches
the event; several ``data:`` lines join with ``\\n``; a line starting with ``:`` is a comment
(keep-alives); one space after the colon is dropped; ``event:`` names the event; unknown fields
are ignored. Data stay bytes (``json.loads`` takes them as they are: a multi-megabyte image is
never decoded to a str first). Pure and synchronous; the caller bounds the bytes it feeds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_LINE_END = re.compile(rb"\r\n|\r|\n")
DEFAULT_EVENT = "message"


@dataclass(frozen=True, slots=True, repr=False)
class ServerSentEvent:
    event: str  # the ``event:`` field, or "message"
    data: bytes

    def __repr__(self) -> str:
        return f"ServerSentEvent({self.event!r}, {len(self.data):,} bytes)"


class SSEParser:
    """Feed it chunks; it returns the events each chunk completed."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._scanned = 0  # self._buffer[:_scanned] holds no line end: not searched again
        self._data: list[bytes] = []
        self._event = ""

    @property
    def pending_bytes(self) -> int:
        """Bytes held for an event not yet complete (its lines so far, and the line in progress)."""
        return len(self._buffer) + sum(len(part) for part in self._data)

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        self._buffer += chunk
        return self._lines(final=False)

    def close(self) -> list[ServerSentEvent]:
        """The stream ended: a last line without its line end counts, and an event that was not
        followed by its blank line is still dispatched (some gateways close right after the
        last ``data:`` line); a cut-off data line then fails where its JSON is read."""
        events = self._lines(final=True)
        if self._buffer:
            self._line(bytes(self._buffer), events)
            self._buffer.clear()
        self._scanned = 0
        self._dispatch(events)
        return events

    def _lines(self, *, final: bool) -> list[ServerSentEvent]:
        events: list[ServerSentEvent] = []
        buffer = self._buffer
        start = 0
        while (match := _LINE_END.search(buffer, max(start, self._scanned))) is not None:
            if match.group() == b"\r" and match.end() == len(buffer) and not final:
                break  # perhaps the first half of a CRLF split across chunks
            self._line(bytes(buffer[start : match.start()]), events)
            start = match.end()
            self._scanned = start
        if start:
            del buffer[:start]  # bytearray drops a prefix without copying the rest
        self._scanned = max(len(buffer) - 1, 0) if buffer.endswith(b"\r") else len(buffer)
        return events

    def _line(self, line: bytes, events: list[ServerSentEvent]) -> None:
        if not line:
            self._dispatch(events)
            return
        if line[:1] == b":":
            return  # a comment: a keep-alive
        name, colon, value = line.partition(b":")
        if colon and value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            self._data.append(value)
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")
        # `id` and `retry` serve reconnection, which a POST's answer never does; others: ignored.

    def _dispatch(self, events: list[ServerSentEvent]) -> None:
        if self._data:
            data = self._data[0] if len(self._data) == 1 else b"\n".join(self._data)
            events.append(ServerSentEvent(self._event or DEFAULT_EVENT, data))
        self._data = []
        self._event = ""
