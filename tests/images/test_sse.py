"""The Server-Sent Events parser, table-driven: every stream cut into chunks every which way."""

from __future__ import annotations

import pytest

from bot.images.sse import ServerSentEvent, SSEParser

Events = list[tuple[str, bytes]]

CASES: list[tuple[str, bytes, Events]] = [
    ("one event", b"event: a\ndata: 1\n\n", [("a", b"1")]),
    ("no event name", b"data: 1\n\n", [("message", b"1")]),
    ("CRLF line ends", b"event: a\r\ndata: 1\r\n\r\n", [("a", b"1")]),
    ("CR line ends", b"event: a\rdata: 1\r\r", [("a", b"1")]),
    ("mixed line ends", b"data: 1\r\n\ndata: 2\r\r\n", [("message", b"1"), ("message", b"2")]),
    ("multi-line data", b"data: a\ndata: b\ndata:\n\n", [("message", b"a\nb\n")]),
    ("no space after the colon", b"data:x\n\n", [("message", b"x")]),
    ("only one space dropped", b"data:  x\n\n", [("message", b" x")]),
    ("a comment is skipped", b": keep-alive\n\ndata: 1\n\n", [("message", b"1")]),
    ("a comment inside an event", b"data: 1\n: ping\ndata: 2\n\n", [("message", b"1\n2")]),
    ("unknown fields", b"id: 7\nretry: 10\nfoo: bar\ndata: 1\n\n", [("message", b"1")]),
    ("a field without a colon", b"data\n\n", [("message", b"")]),
    ("an event without data is not dispatched", b"event: a\n\ndata: 1\n\n", [("message", b"1")]),
    ("blank lines between events", b"\n\n\ndata: 1\n\n\n\n", [("message", b"1")]),
    ("name resets", b"event: a\ndata: 1\n\ndata: 2\n\n", [("a", b"1"), ("message", b"2")]),
    (
        "the stream ends without the last blank line",
        b"data: 1\n\ndata: 2\n",
        [("message", b"1"), ("message", b"2")],
    ),
    ("cut mid-line", b"data: 1\n\ndata: {\"a", [("message", b"1"), ("message", b'{"a')]),
    ("a colon in the value", b"data: {\"a\": 1}\n\n", [("message", b'{"a": 1}')]),
    ("[DONE] is data like any other", b"data: [DONE]\n\n", [("message", b"[DONE]")]),
]  # fmt: skip


def parse(stream: bytes, size: int) -> Events:
    parser = SSEParser()
    events: list[ServerSentEvent] = []
    for start in range(0, len(stream), size):
        events += parser.feed(stream[start : start + size])
    events += parser.close()
    return [(event.event, event.data) for event in events]


@pytest.mark.parametrize(
    ("stream", "expected"), [case[1:] for case in CASES], ids=[c[0] for c in CASES]
)
@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 1 << 20])
def test_every_chunking_gives_the_same_events(stream: bytes, expected: Events, chunk: int) -> None:
    assert parse(stream, chunk) == expected


@pytest.mark.parametrize("line_end", [b"\n", b"\r\n", b"\r"])
def test_a_data_line_of_several_megabytes_in_small_chunks(line_end: bytes) -> None:
    """aiohttp's line reader refuses lines over 512 KiB; one base64 image is several MB."""
    value = b"A" * (6 * 1024 * 1024)
    stream = b"event: image_generation.completed" + line_end + b"data: " + value + line_end * 2
    parser = SSEParser()
    events = []
    for start in range(0, len(stream), 65536):
        events += parser.feed(stream[start : start + 65536])
        # Nothing is held beyond the event in progress.
        assert parser.pending_bytes <= start + 65536
    events += parser.close()
    assert [(e.event, len(e.data)) for e in events] == [("image_generation.completed", len(value))]
    assert events[0].data == value


def test_a_cr_at_the_end_of_a_chunk_waits_for_the_next() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: 1\r") == []
    assert parser.feed(b"\n") == []  # the LF completes the CRLF: not a second, blank line
    assert [e.data for e in parser.feed(b"\r\n")] == [b"1"]


@pytest.mark.parametrize("line_end", [b"\n", b"\r\n", b"\r"])
@pytest.mark.parametrize("chunk", [1, 7, 65536])
def test_an_event_let_go_is_read_past_keeping_nothing_and_the_next_comes_whole(
    line_end: bytes, chunk: int
) -> None:
    """A preview there is no room for: what is held of it goes, the rest of it is read past as
    it comes (its lines still end where they end), and the event after it is whole."""
    preview = b"A" * (200 * 1024 if chunk > 1 else 2048)
    stream = (
        b"event: image_generation.partial_image" + line_end + b"data: " + preview + line_end
        + b"data: more" + line_end * 2
        + b"event: image_generation.completed" + line_end + b"data: {}" + line_end * 2
    )  # fmt: skip
    parser = SSEParser()
    events: list[ServerSentEvent] = []
    start = 0
    while parser.event_in_progress != "image_generation.partial_image" or not parser.pending_bytes:
        events += parser.feed(stream[start : start + chunk])
        start += chunk
    parser.skip_event()
    assert parser.pending_bytes <= 16 and parser.skipped == 1
    preview_ends = stream.index(line_end * 2)
    while start < len(stream):
        events += parser.feed(stream[start : start + chunk])
        start += chunk
        if start <= preview_ends:
            assert parser.pending_bytes <= 16  # nothing kept of the event let go
    events += parser.close()
    assert [(event.event, event.data) for event in events] == [
        ("image_generation.completed", b"{}")
    ]
