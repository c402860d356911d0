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
never decoded to a str first). Pure and synchronous; the caller bounds the bytes it feeds, and
may let the event in progress go (:meth:`SSEParser.skip_event`): the rest of it is then read
past as it comes, keeping nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_EVENT = "message"
_HEAD = 16  # bytes of a line read to learn its field: the fields that matter are 4-5 letters


@dataclass(frozen=True, slots=True, repr=False)
class ServerSentEvent:
    event: str  # the ``event:`` field, or "message"
    data: bytes

    def __repr__(self) -> str:
        return f"ServerSentEvent({self.event!r}, {len(self.data):,} bytes)"


def _head(parts: list[bytes]) -> bytes:
    head = b""
    for part in parts:
        head += part[: _HEAD - len(head)]
        if len(head) >= _HEAD:
            break
    return head


def _without_prefix(parts: list[bytes], size: int) -> bytes:
    """The parts joined, less their first ``size`` bytes: the one copy a line's value costs."""
    index = 0
    while index < len(parts) and size >= len(parts[index]):
        size -= len(parts[index])
        index += 1
    rest = parts[index:]
    if not rest:
        return b""
    if size:
        rest[0] = rest[0][size:]
    return rest[0] if len(rest) == 1 else b"".join(rest)


class SSEParser:
    """Feed it chunks; it returns the events each chunk completed.

    Each chunk is searched for line ends once, with ``bytes.find`` (memchr): a regular
    expression of the three line ends, or a buffer grown chunk by chunk, held the event loop
    for hundreds of milliseconds on a 20 MB line. The pieces of a line in progress are kept as
    they came and joined once, without the field name, when the line ends.
    """

    def __init__(self) -> None:
        self._parts: list[bytes] = []  # the line in progress, as it came
        self._after_cr = False  # the last chunk ended in CR: a LF first in the next is its pair
        self._data: list[bytes] = []
        self._event = ""
        self._skipping = False  # the event in progress is let go: only its line ends matter
        self.skipped = 0  # events let go, since the start

    @property
    def pending_bytes(self) -> int:
        """Bytes held for an event not yet complete (its lines so far, and the line in progress)."""
        return sum(len(part) for part in self._parts) + sum(len(part) for part in self._data)

    @property
    def event_in_progress(self) -> str:
        """The ``event:`` name of the event being read, where its ``event:`` line came first
        (as the OpenAI API sends it), else ""."""
        return self._event

    def skip_event(self) -> None:
        """Let the event in progress go: what is held of it now, and the rest as it comes (its
        lines are still read for their ends, keeping only their first bytes); it is never
        dispatched."""
        if not self._skipping:
            self.skipped += 1
        self._skipping = True
        self._data = []
        self._parts = [_head(self._parts)] if self._parts else []

    def _add(self, chunk: bytes, start: int, end: int) -> None:
        """Keep ``chunk[start:end]``, a piece of the line in progress (while skipping, only as
        much of the line as shows its field)."""
        if self._skipping:
            end = min(end, start + max(_HEAD - sum(len(part) for part in self._parts), 0))
            if end <= start:
                return
        self._parts.append(chunk if start == 0 and end == len(chunk) else chunk[start:end])

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        events: list[ServerSentEvent] = []
        if not chunk:
            return events
        position = 1 if self._after_cr and chunk[:1] == b"\n" else 0
        self._after_cr = False
        size = len(chunk)
        lf = cr = -2  # the next LF and CR at or after `position`; -1: none; -2: not searched
        while position < size:
            if -1 < lf < position or lf == -2:
                lf = chunk.find(b"\n", position)
            if -1 < cr < position or cr == -2:
                cr = chunk.find(b"\r", position)
            if lf < 0 and cr < 0:
                break
            end = min(at for at in (lf, cr) if at >= 0)
            self._add(chunk, position, end)
            self._line(events)
            position = end + 1
            if end == cr:
                if end + 1 == size:
                    self._after_cr = True
                elif chunk[end + 1 : end + 2] == b"\n":
                    position += 1
        if position < size:
            self._add(chunk, position, size)
        return events

    def close(self) -> list[ServerSentEvent]:
        """The stream ended: a last line without its line end counts, and an event that was not
        followed by its blank line is still dispatched (some gateways close right after the
        last ``data:`` line); a cut-off data line then fails where its JSON is read."""
        events: list[ServerSentEvent] = []
        if self._parts:
            self._line(events)
        self._after_cr = False
        self._dispatch(events)
        return events

    def _line(self, events: list[ServerSentEvent]) -> None:
        parts, self._parts = self._parts, []
        head = _head(parts)
        if self._skipping:
            if not head:  # the end of the event let go
                self._skipping = False
                self._data = []
                self._event = ""
            return
        if not head:
            self._dispatch(events)
            return
        if head[:1] == b":":
            return  # a comment: a keep-alive
        colon = head.find(b":")
        if colon < 0:
            whole = len(head) < _HEAD
            name, offset = (head, len(head)) if whole else (b"", 0)
        else:
            name = head[:colon]
            offset = colon + 1 + (head[colon + 1 : colon + 2] == b" ")
        if name == b"data":
            self._data.append(_without_prefix(parts, offset))
        elif name == b"event":
            self._event = _without_prefix(parts, offset).decode("utf-8", "replace")
        # `id` and `retry` serve reconnection, which a POST's answer never does; others: ignored.

    def _dispatch(self, events: list[ServerSentEvent]) -> None:
        if self._data:
            data = self._data[0] if len(self._data) == 1 else b"\n".join(self._data)
            events.append(ServerSentEvent(self._event or DEFAULT_EVENT, data))
        self._data = []
        self._event = ""
